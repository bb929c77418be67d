-- Issue 14: the large values written on every checkout request (a session's state, a stored idempotent answer, an
-- order, a webhook payload) pass PostgreSQL's 2 kB TOAST threshold and were compressed with pglz, which costs the
-- database far more CPU than lz4 for a similar ratio. New values use lz4; existing ones stay readable as they are.
alter table checkout_session alter column state set compression lz4;
alter table idempotency_record alter column response_body set compression lz4;
alter table merchant_order alter column data set compression lz4;
alter table webhook_event alter column payload set compression lz4;
