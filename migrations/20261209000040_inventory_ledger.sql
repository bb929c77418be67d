-- The inventory ledger (issue 15): every change of a variant's on-hand or reserved units, with its reason, written
-- by a trigger in the transaction that makes it, so the ledger cannot miss a change nor record one that rolled
-- back. For a tracked variant, its on-hand deltas add up to `stock_quantity` and its reserved deltas to
-- `stock_reserved`.
--
-- The reason comes from the transaction-local setting `acp.stock_reason`, which the statement changing the stock
-- sets (src/checkout/stock.rs); a change that sets none is a catalog sync (import, attributes).
create table inventory_movement (
    movement_id bigserial primary key,
    variant_id text not null,
    on_hand_delta integer not null,
    reserved_delta integer not null,
    reason text not null
        check (reason in ('sale', 'reserve', 'release', 'cancel', 'return', 'sync', 'manual')),
    occurred_at timestamptz not null default clock_timestamp()
);
create index inventory_movement_variant_idx on inventory_movement (variant_id, movement_id);

create function record_inventory_movement() returns trigger language plpgsql as $$
declare
    before_on_hand integer := case when tg_op = 'INSERT' then 0 else coalesce(old.stock_quantity, 0) end;
    before_reserved integer := case when tg_op = 'INSERT' then 0 else old.stock_reserved end;
    on_hand_delta integer := coalesce(new.stock_quantity, 0) - before_on_hand;
    reserved_delta integer := new.stock_reserved - before_reserved;
begin
    if on_hand_delta <> 0 or reserved_delta <> 0 then
        insert into inventory_movement (variant_id, on_hand_delta, reserved_delta, reason)
        values (new.variant_id, on_hand_delta, reserved_delta,
                coalesce(nullif(current_setting('acp.stock_reason', true), ''), 'sync'));
    end if;
    return null;
end
$$;

create trigger variant_stock_inserted after insert on variant
    for each row execute function record_inventory_movement();
create trigger variant_stock_moved after update of stock_quantity, stock_reserved on variant
    for each row execute function record_inventory_movement();

-- Stock from before the ledger: one sync movement per variant holding any.
insert into inventory_movement (variant_id, on_hand_delta, reserved_delta, reason)
select variant_id, coalesce(stock_quantity, 0), stock_reserved, 'sync' from variant
where coalesce(stock_quantity, 0) <> 0 or stock_reserved <> 0
order by variant_id;
