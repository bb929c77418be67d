-- Funnel events, agent channels and channel costs (issue 13): the merchant measures agent checkout as a sales
-- channel. Events are written in the transaction of the change they describe; see src/analytics/.

-- The channel an agent's sessions are attributed to (PUT /admin/agents/{id}/channel). No row: the agent id itself.
-- A table of its own, not a column of `agent`, because the environment agent has no `agent` row.
create table agent_channel (
    agent_id text primary key,
    channel_id text not null check (channel_id <> ''),
    updated_at timestamptz not null default now()
);

create table funnel_event (
    -- Cursor order of the events export.
    funnel_event_id bigserial primary key,
    occurred_at timestamptz not null,
    checkout_session_id text not null,
    kind text not null check (kind in ('session_created', 'ready_for_payment', 'authentication_required',
                                       'payment_declined', 'completed', 'canceled', 'expired')),
    agent_id text not null,
    channel_id text not null,
    source text not null default 'chat_to_checkout',
    -- Salted SHA-256 (hex) of the lowercased, trimmed buyer email; null while the email is unknown.
    buyer_hash text,
    -- The session's currency (lowercase ISO 4217); `amount` (minor units) only on `completed`.
    currency text not null,
    amount bigint,
    -- Decline code (payment_declined) or intent-trace reason code (canceled).
    reason text,
    attrs jsonb not null default '{}'
);
-- Once-per-session kinds: a repeated write (a replay, a second path to the same state) is a no-op.
create unique index funnel_event_once_idx on funnel_event (checkout_session_id, kind)
    where kind in ('session_created', 'ready_for_payment', 'completed', 'canceled', 'expired');
create index funnel_event_session_idx on funnel_event (checkout_session_id);
-- The cohort: sessions created in a period.
create index funnel_event_created_idx on funnel_event (occurred_at) where kind = 'session_created';
-- The export's time window.
create index funnel_event_occurred_idx on funnel_event (occurred_at);
-- New versus returning buyers: a buyer's earlier completed orders.
create index funnel_event_buyer_idx on funnel_event (buyer_hash, occurred_at)
    where kind = 'completed' and buyer_hash is not null;

-- What the merchant paid for a channel over a period (POST /admin/analytics/costs), in minor units.
create table channel_cost (
    channel_cost_id bigserial primary key,
    channel_id text not null,
    period_start timestamptz not null,
    period_end timestamptz not null check (period_end > period_start),
    amount bigint not null check (amount >= 0),
    currency text not null,
    created_at timestamptz not null default now()
);
create index channel_cost_period_idx on channel_cost (period_start, period_end);
