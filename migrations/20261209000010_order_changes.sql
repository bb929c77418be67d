-- The order feed for polling integrations (issue 15, GET /admin/orders/changes): one row per order version, with
-- a position handed out in commit order.
--
-- A position is taken by a deferred trigger, so at the changing transaction's commit, under one transaction-level
-- advisory lock that is held until the commit is visible (PostgreSQL releases locks after it marks the
-- transaction committed). So position n + 1 cannot exist before position n is visible: a reader walking
-- positions never passes a transaction still open and never skips a row committed late. The price: commits
-- that change orders are serialized from that trigger to the end of their commit (one WAL flush each).

create sequence order_change_position;

create table order_change (
    position bigint primary key,
    order_id text not null references merchant_order (order_id),
    -- 1 for the order's creation, then one more per committed change.
    version integer not null,
    status text not null,
    -- The order as that version left it (the merchant_order.data document).
    data json compression lz4 not null,
    changed_at timestamptz not null default now(),
    unique (order_id, version)
);

create function record_order_change() returns trigger language plpgsql as $$
begin
    -- The feed's lock: see the top of this file. The key is this feature's own constant.
    perform pg_advisory_xact_lock(7152015001);
    insert into order_change (position, order_id, version, status, data)
    values (nextval('order_change_position'), new.order_id,
            coalesce((select max(version) from order_change where order_id = new.order_id), 0) + 1,
            new.status, new.data);
    return null;
end
$$;

create constraint trigger merchant_order_created after insert on merchant_order
    deferrable initially deferred for each row execute function record_order_change();
-- Every update is a version: the order service only saves an order it changed.
create constraint trigger merchant_order_changed after update on merchant_order
    deferrable initially deferred for each row execute function record_order_change();

-- Orders placed before this migration: their current state as version 1, in the order they were placed.
insert into order_change (position, order_id, version, status, data, changed_at)
select nextval('order_change_position'), order_id, 1, status, data, updated_at
from (select * from merchant_order order by created_at, order_id) o;
