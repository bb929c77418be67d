-- Webhook delivery in leased batches (issue 14): a worker claims due events in one short statement, marking them
-- `delivering` with a lease (`holder`, `lease_until`), delivers them outside any transaction, and records each
-- outcome only while it still holds the lease. A lease that ends (the worker died) makes the event due again.
alter table webhook_event drop constraint webhook_event_status_check;
alter table webhook_event add constraint webhook_event_status_check
    check (status in ('pending', 'delivering', 'delivered', 'dead'));
alter table webhook_event add column holder uuid, add column lease_until timestamptz;
alter table webhook_event add constraint webhook_event_lease_check
    check ((status = 'delivering') = (holder is not null and lease_until is not null));

-- The claim scans undelivered events in sequence order (delivered ones, the bulk of the table, are not in it); it
-- replaces the index of pending events by due time.
drop index webhook_event_due_idx;
create index webhook_event_claim_idx on webhook_event (sequence) where status in ('pending', 'delivering');
-- Per-order ordering: "is an earlier event of this order still undelivered?" reads only undelivered events.
create index webhook_event_undelivered_idx on webhook_event (order_id, sequence)
    where status in ('pending', 'delivering');
