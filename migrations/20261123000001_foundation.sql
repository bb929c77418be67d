-- Foundation: a heartbeat of the schema itself. Business tables arrive with the lifecycle issue.
-- `service_instance` records each process that ran migrations, which operators use to see who touched the schema.
create table service_instance (
    service_instance_id uuid primary key,
    started_at timestamptz not null default now(),
    version text not null
);
