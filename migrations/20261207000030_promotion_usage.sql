-- Issue 14 (round trips): per-promotion redemption counters, so a complete locks and reads only the counter rows
-- of the limited promotions its cart can use (`select … for update`, in id order) instead of taking an advisory
-- lock on every limited promotion of the rules and counting `promotion_redemption` rows.
--
-- Invariant: when a promotion has a row here, `used` is the number of its `promotion_redemption` rows. The
-- transactions that insert or delete redemptions adjust the existing counters in the same statement; a row is
-- created (from the real count) when a promotion first appears with a usage limit in the stored rules, by the
-- trigger below, or by the complete that first needs it.
create table promotion_usage (
    promotion_id text primary key,
    used bigint not null default 0 check (used >= 0)
);

-- Counters for the limited promotions of the stored rules, from what is already redeemed.
create function promotion_usage_ensure(rules jsonb) returns void language sql as $$
    insert into promotion_usage (promotion_id, used)
    select p ->> 'id', (select count(*) from promotion_redemption r where r.promotion_id = p ->> 'id')
    from jsonb_array_elements(coalesce(rules -> 'promotions', '[]'::jsonb)) as p
    where p ->> 'id' is not null
      and (jsonb_typeof(p -> 'max_redemptions') = 'number' or jsonb_typeof(p -> 'max_per_buyer') = 'number')
    order by 1
    on conflict (promotion_id) do nothing
$$;

select promotion_usage_ensure(rules) from pricing_rules;

-- Every change of the rules creates the new counters and tells each server process (LISTEN acp_pricing_rules) to
-- reload its cached bundle; the payload is the new version.
create function pricing_rules_changed() returns trigger language plpgsql as $$
begin
    perform promotion_usage_ensure(new.rules);
    perform pg_notify('acp_pricing_rules', new.version::text);
    return null;
end
$$;

create trigger pricing_rules_changed after insert or update on pricing_rules
    for each row execute function pricing_rules_changed();
