-- Merchant webhook endpoints (issue 15): the merchant's own systems receive order.created, order.updated,
-- order.refunded and checkout.abandoned from the same outbox as the agents' order webhooks, signed the Standard
-- Webhooks way.
create table merchant_endpoint (
    endpoint_id text primary key,
    url text not null,
    -- The `whsec_…` signing secret, sealed (src/secrets).
    secret text not null,
    event_types text[] not null check (cardinality(event_types) > 0),
    enabled boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- An event with an endpoint goes to that merchant endpoint; without one, to the agent that sold the order.
alter table webhook_event add column endpoint_id text references merchant_endpoint (endpoint_id);
-- Delivery order is kept per stream: the order for an agent's events, the endpoint and order (or, for
-- checkout.abandoned, the session) for a merchant endpoint's, so a merchant endpoint that is down never holds up
-- the agent's events, nor another endpoint's.
alter table webhook_event add column stream text;
update webhook_event set stream = order_id;
alter table webhook_event alter column stream set not null;
drop index webhook_event_undelivered_idx;
create index webhook_event_undelivered_idx on webhook_event (stream, sequence)
    where status in ('pending', 'delivering');
