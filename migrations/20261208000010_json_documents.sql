-- Issue 14: the documents written and read whole on every checkout request (a session's state, an order, a webhook
-- payload) become `json`. PostgreSQL parses `jsonb` into its binary form on every write and prints it back to text
-- on every read, which the benchmark's profile put among the database's largest costs; nothing queries inside
-- these columns, and `json` keeps the text as sent (validated, not rebuilt). lz4 compression stays.
alter table checkout_session alter column state type json using state::json;
alter table merchant_order alter column data type json using data::json;
alter table webhook_event alter column payload type json using payload::json;
alter table checkout_session alter column state set compression lz4;
alter table merchant_order alter column data set compression lz4;
alter table webhook_event alter column payload set compression lz4;
