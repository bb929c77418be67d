-- Per-agent rate limits (issue 12): one agent key may carry a whole platform's buyers, so its bucket can be larger
-- than the default (ACP_RATE_LIMIT_AGENT_PER_SEC / _BURST). Any agent id, the environment's `agent_default` included.
create table agent_rate_limit (
    agent_id text primary key,
    per_sec bigint not null check (per_sec > 0 and per_sec <= 4294967295),
    burst bigint not null check (burst > 0 and burst <= 4294967295),
    updated_at timestamptz not null default now()
);
