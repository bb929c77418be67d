-- The simulator keeps refunds like a PSP does: per charge, never more than was charged, once per idempotency key.
alter table simulator_charge add column refunded_amount bigint not null default 0;

create table simulator_refund (
    idempotency_key text primary key,
    refund_id text not null unique,
    charge_id text not null,
    amount bigint not null check (amount > 0),
    created_at timestamptz not null default now()
);
