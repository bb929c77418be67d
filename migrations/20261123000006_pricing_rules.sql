-- The merchant's pricing rules as one validated bundle (tax settings, tax rules, shipping methods, promotions).
-- `version` increases on every change; each server process compares it with its cached snapshot before pricing,
-- so a change made through any process applies everywhere on the next request.
create table pricing_rules (
    singleton boolean primary key default true check (singleton),
    rules jsonb not null,
    version bigint not null default 1,
    updated_at timestamptz not null default now()
);
