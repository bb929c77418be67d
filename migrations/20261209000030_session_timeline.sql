-- The support view's session timeline (issue 15) is built on the funnel events: each update of a session is an
-- event too (`session_updated`), and create and update events keep, in `attrs`, the status and the messages the
-- agent was shown.
alter table funnel_event drop constraint funnel_event_kind_check;
alter table funnel_event add constraint funnel_event_kind_check
    check (kind in ('session_created', 'session_updated', 'ready_for_payment', 'authentication_required',
                    'payment_declined', 'completed', 'canceled', 'expired'));
