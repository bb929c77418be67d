-- Idempotency records (ACP §6). The primary key is the arbiter between concurrent requests and processes: one
-- row per (agent, method, path, key). A row is `in_flight` while its request runs, holding a lease; it becomes
-- `finished` with the stored response in the same transaction as the business write. 5xx responses are never
-- stored: their row is deleted so a retry runs fresh.
create table idempotency_record (
    agent_id text not null,
    method text not null,
    path text not null,
    idempotency_key text not null,
    -- SHA-256 of the RFC 8785 canonical form of the request body.
    fingerprint bytea not null,
    state text not null check (state in ('in_flight', 'finished')),
    -- Who holds the in-flight record (a random id per claim); finishing requires still being the holder.
    holder uuid not null,
    -- Until when the in-flight holder owns the record; after it, a retry may take over (its process died).
    lease_until timestamptz not null,
    -- Where a complete call got to: 'started', then 'payment_attempted' once the PSP may have been charged.
    recovery_point text not null default 'started',
    psp_idempotency_key text,
    response_status smallint,
    response_headers jsonb,
    response_body bytea,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    primary key (agent_id, method, path, idempotency_key)
);
create index idempotency_record_expiry_idx on idempotency_record (expires_at);
