-- Payment attempts: one durable row per complete attempt, written in the transaction that moves the session to
-- `complete_in_progress`, before the PSP is called. Every later fact about the payment (the PSP's payment id, the
-- outcome) is written to it, and every resolver (the request itself, a retry, the reconciler, a Stripe event)
-- works from it. See `src/checkout/attempt.rs` for the states and the argument.
create table payment_attempt (
    payment_attempt_id text primary key,
    checkout_session_id text not null references checkout_session (checkout_session_id),
    attempt_number integer not null check (attempt_number >= 1),
    -- The key the PSP sees on every request that may charge for this attempt (retries and replays reuse it).
    psp_idempotency_key text not null unique,
    -- SHA-256 over the token and the 3-D Secure data of the request that started the attempt: a later request
    -- with the same fingerprint can replay the exact PSP request; the token itself is never stored.
    request_fingerprint bytea not null,
    amount bigint not null check (amount >= 0),
    currency text not null,
    -- The ACP version of the request that started the attempt (stored answers render in it).
    api_version text not null,
    -- The order id promised to the PSP's metadata before the order exists.
    order_reference text not null,
    -- Units reserved for this attempt, [[variant_id, quantity], ...], released exactly if it does not charge.
    reservation jsonb not null default '[]',
    psp_payment_id text,
    state text not null check (state in
        ('started', 'succeeded', 'declined', 'failed', 'indeterminate', 'requires_action', 'canceled')),
    -- Decline code, PSP error code or the reason a resolver gave.
    outcome_detail text,
    -- Who is working on the attempt now, and until when (renewed by a heartbeat while the PSP call runs).
    runner uuid,
    lease_until timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    resolved_at timestamptz,
    unique (checkout_session_id, attempt_number)
);
create index payment_attempt_open_idx on payment_attempt (updated_at)
    where state in ('started', 'indeterminate', 'requires_action');
create index payment_attempt_psp_payment_idx on payment_attempt (psp_payment_id);

-- Idempotency records remember which payment attempt their request started or resumed, and the ACP version
-- they were made in, so whoever resolves the attempt can store each record's answer.
alter table idempotency_record add column payment_attempt_id text;
alter table idempotency_record add column api_version text;
create index idempotency_record_attempt_idx on idempotency_record (payment_attempt_id)
    where payment_attempt_id is not null;

-- Stock: on hand (`stock_quantity`, what the merchant's sync sets) and reserved (held by sessions being paid for)
-- are kept apart, so a sync never wipes a reservation and a release never creates units. On hand may go below
-- zero when a sync lowered it under units already sold: that is an oversell the merchant must see, not hide.
alter table variant add column stock_reserved integer not null default 0 check (stock_reserved >= 0);
alter table variant drop constraint if exists variant_stock_quantity_check;

-- Stripe events received at POST /stripe/webhooks, recorded once per event id.
create table stripe_event (
    event_id text primary key,
    event_type text not null,
    received_at timestamptz not null default now(),
    outcome text not null
);

-- The simulator follows the same model as Stripe: its charges carry the attempt id (Stripe's metadata), by which
-- a resolver looks them up.
alter table simulator_charge add column payment_attempt_id text;
create index simulator_charge_attempt_idx on simulator_charge (payment_attempt_id);
