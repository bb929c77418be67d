-- Request signatures per agent (issue 12): whether the agent's checkout requests must be signed, with which
-- algorithm and key, and what the signature covers. The environment agent (`agent_default`) is configured through
-- ACP_AGENT_SIGNATURE_* instead and has no row here.
-- `hmac_secret` is written and read only through `signatures::store::{seal_signing_secret, open_signing_secret}`.
create table agent_request_signature (
    agent_id text primary key references agent (agent_id) on delete cascade,
    mode text not null check (mode in ('off', 'optional', 'required')),
    algorithm text check (algorithm in ('ed25519', 'es256', 'hmac-sha256')),
    covers text not null default 'body' check (covers in ('body', 'method_path_body')),
    public_key text,
    hmac_secret text,
    updated_at timestamptz not null default now(),
    check (mode = 'off' or algorithm is not null),
    check (algorithm is distinct from 'hmac-sha256' or hmac_secret is not null),
    check (algorithm not in ('ed25519', 'es256') or public_key is not null)
);
