-- Promotion redemptions, written in the transaction that reserves stock for a complete (and removed again when
-- the payment fails), so usage limits hold under concurrent completes.
create table promotion_redemption (
    promotion_id text not null,
    checkout_session_id text not null,
    buyer_email text,
    created_at timestamptz not null default now(),
    primary key (promotion_id, checkout_session_id)
);
create index promotion_redemption_buyer_idx on promotion_redemption (promotion_id, lower(buyer_email));
