-- Order webhooks: a transactional outbox. An event row is written in the same transaction as the order change it
-- describes; delivery workers claim due rows with FOR UPDATE SKIP LOCKED (several processes may run) and never
-- deliver an order's event while an earlier event of the same order is still pending.
create table webhook_event (
    event_id uuid primary key,
    -- Per-order delivery order: lower sequence first.
    sequence bigserial not null unique,
    order_id text not null,
    agent_id text not null,
    event_type text not null,
    -- The exact JSON body to send (rendered for the session's ACP version when the event was written).
    payload jsonb not null,
    status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
    attempts integer not null default 0,
    client_error_attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error text,
    created_at timestamptz not null default now(),
    delivered_at timestamptz
);
create index webhook_event_due_idx on webhook_event (next_attempt_at) where status = 'pending';
create index webhook_event_order_idx on webhook_event (order_id, sequence);

create table webhook_attempt (
    webhook_attempt_id bigserial primary key,
    event_id uuid not null references webhook_event (event_id) on delete cascade,
    attempted_at timestamptz not null default now(),
    url text not null,
    response_status integer,
    error text,
    duration_ms integer not null
);
create index webhook_attempt_event_idx on webhook_attempt (event_id, attempted_at);

-- Signing secrets set through the admin API (rotation); they win over the agent row and the environment.
create table agent_webhook_secret (
    agent_id text primary key,
    secret text not null,
    rotated_at timestamptz not null default now()
);
