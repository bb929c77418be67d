-- The variant's merchant category (the first feed category), for category-targeted promotions.
alter table variant add column category text;
