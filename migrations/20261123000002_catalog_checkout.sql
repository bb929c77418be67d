-- Catalog, agents, checkout sessions, orders and the payment simulator's ledger.

-- Catalog: one row per feed Product (kept verbatim for export) and one per purchasable variant.
create table product (
    product_id text primary key,
    feed jsonb not null,
    updated_at timestamptz not null default now()
);

create table variant (
    variant_id text primary key,
    product_id text not null references product (product_id) on delete cascade,
    title text not null,
    description text,
    url text,
    image_url text,
    -- Minor units; null when the feed carries no price (such a variant cannot be bought).
    price_amount bigint check (price_amount >= 0),
    -- Lowercase ISO 4217 (checkout style); the feed's uppercase form is restored on export.
    currency text,
    available boolean not null default true,
    availability_status text,
    -- Merchant-only attributes (admin API / attributes file). A null stock means "not tracked".
    stock_quantity integer check (stock_quantity >= 0),
    max_quantity_per_order integer check (max_quantity_per_order >= 1),
    tax_category text not null default 'standard',
    weight_grams integer not null default 0 check (weight_grams >= 0),
    requires_shipping boolean not null default true,
    disclosures jsonb not null default '[]',
    updated_at timestamptz not null default now()
);
create index variant_product_idx on variant (product_id);

-- Agents besides the one configured through the environment. Keys are stored as SHA-256 digests only.
create table agent (
    agent_id text primary key,
    name text not null,
    api_key_sha256 bytea not null unique,
    webhook_url text,
    webhook_secret text,
    created_at timestamptz not null default now(),
    disabled_at timestamptz
);

-- A checkout session: its canonical state as JSON (inputs and the last authoritative computation), with the
-- columns queries filter on kept beside it.
create table checkout_session (
    checkout_session_id text primary key,
    agent_id text not null,
    api_version text not null,
    status text not null,
    currency text not null,
    state jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    expires_at timestamptz not null
);
create index checkout_session_agent_idx on checkout_session (agent_id, created_at);
create index checkout_session_expiry_idx on checkout_session (expires_at)
    where status not in ('completed', 'canceled', 'expired');

create table merchant_order (
    order_id text primary key,
    checkout_session_id text not null unique references checkout_session (checkout_session_id),
    agent_id text not null,
    status text not null,
    currency text not null,
    total_amount bigint not null,
    psp_charge_id text,
    data jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- The simulator PSP's own ledger. It behaves like an external PSP that outlives merchant crashes: a charge is
-- recorded durably under the PSP idempotency key, and a repeated key returns the recorded charge.
create table simulator_charge (
    psp_idempotency_key text primary key,
    charge_id text not null unique,
    checkout_session_id text not null,
    amount bigint not null,
    currency text not null,
    -- Which test token was used (test tokens carry no secret; real tokens never reach this table).
    token_kind text not null,
    status text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index simulator_charge_session_idx on simulator_charge (checkout_session_id);
