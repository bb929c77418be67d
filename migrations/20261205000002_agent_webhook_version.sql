-- The ACP version an agent's order webhooks are rendered in, when the agent (or the merchant for it) chose one;
-- otherwise an order's webhooks use the version of the complete call that created it.
create table agent_webhook_version (
    agent_id text primary key,
    api_version text not null,
    updated_at timestamptz not null default now()
);
