-- Webhook delivery in leased batches (issue 14): a worker claims due events in one short statement, marking them
-- `delivering` with a lease (`holder`, `lease_until`), delivers them outside any transaction, and records each
-- outcome only while it still holds the lease. A lease that ends (the worker died) makes the event due again.
alter table webhook_event drop constraint webhook_event_status_check;
alter table webhook_event add constraint webhook_event_status_check
    check (status in ('pending', 'delivering', 'delivered', 'dead'));
alter table webhook_event add column holder uuid, add column lease_until timestamptz;
alter table webhook_event add constraint webhook_event_lease_check
    check ((status = 'delivering') = (holder is not null and lease_until is not null));

-- The due query: pending events by due time, and claims whose lease has ended.
create index webhook_event_lease_idx on webhook_event (lease_until) where status = 'delivering';
-- Per-order ordering: "is an earlier event of this order still undelivered?" reads only undelivered events.
create index webhook_event_undelivered_idx on webhook_event (order_id, sequence)
    where status in ('pending', 'delivering');
-- The metrics gauge and the dashboard count undelivered events (pending or being delivered).
create index webhook_event_backlog_idx on webhook_event (created_at) where status in ('pending', 'delivering');
