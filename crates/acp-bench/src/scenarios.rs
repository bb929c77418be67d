//! The load: closed-loop full flows with N agents, GET-only reads, and an open-loop run whose requests are
//! scheduled at fixed times (latency counted from the scheduled time, so a slow server cannot hide its queue:
//! no coordinated omission).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::{
    agent::{Agent, Endpoint, Unexpected},
    stats::{Samples, Summary},
};

/// Sessions kept for the GET-only scenario: plenty to spread reads over.
const MAX_SESSIONS_KEPT: usize = 100_000;

/// What one task (or a whole scenario, once merged) saw.
#[derive(Default)]
pub struct Tally {
    latencies: [Samples; 5],
    pub errors: u64,
    pub flows: u64,
    /// Completed orders and the moment their complete response was received (the webhook lag starts there).
    pub orders: Vec<(String, Instant)>,
    pub sessions: Vec<String>,
    /// The measurement window (after the warm-up): answers outside it are left out of the rates and latencies
    /// (a wrong one is still an error). None: no window (the open loop, whose every scheduled flow counts).
    window: Option<Window>,
}

/// From the end of the warm-up to the end of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    /// A window of `duration` after `warmup` from now.
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }
}

impl Tally {
    fn within(window: Option<Window>) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    fn in_window(&self, at: Instant) -> bool {
        self.window.is_none_or(|w| w.start <= at && at <= w.end)
    }

    /// Whether the scenario is over at `at`: no further step starts then.
    fn ended(&self, at: Instant) -> bool {
        self.window.is_some_and(|w| at >= w.end)
    }

    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in self.latencies.iter_mut().zip(other.latencies) {
            mine.extend(theirs);
        }
        self.errors += other.errors;
        self.flows += other.flows;
        self.orders.extend(other.orders);
        let room = MAX_SESSIONS_KEPT.saturating_sub(self.sessions.len());
        self.sessions.extend(other.sessions.into_iter().take(room));
    }

    /// Records one step: its latency from `start` (the send time, or the scheduled time in the open loop) when it
    /// answered as expected inside the window; otherwise, when wrong, an error, counted and logged.
    fn record<T>(
        &mut self,
        errors: &ErrorLog,
        endpoint: Endpoint,
        start: Instant,
        result: Result<T, Unexpected>,
    ) -> Option<T> {
        match result {
            Ok(value) => {
                let now = Instant::now();
                if self.in_window(now) {
                    self.latencies[endpoint.index()].push(now.saturating_duration_since(start));
                }
                Some(value)
            }
            Err(e) => {
                self.errors += 1;
                errors.note(e);
                None
            }
        }
    }

    pub fn requests(&self, endpoint: Endpoint) -> usize {
        self.latencies[endpoint.index()].len()
    }

    pub fn summaries(&self, wall: Duration) -> BTreeMap<Endpoint, Summary> {
        Endpoint::ALL
            .iter()
            .filter(|e| self.requests(**e) > 0)
            .map(|e| (*e, self.latencies[e.index()].summary(wall)))
            .collect()
    }

    /// Every update (address and option) as one figure, as the table reports it.
    pub fn updates_summary(&self, wall: Duration) -> Summary {
        let mut both = self.latencies[Endpoint::UpdateAddress.index()].clone();
        both.extend(self.latencies[Endpoint::UpdateOption.index()].clone());
        both.summary(wall)
    }
}

/// Unexpected responses: all counted, the first few kept (and printed as they happen).
pub struct ErrorLog {
    limit: usize,
    seen: AtomicUsize,
    first: Mutex<Vec<Unexpected>>,
}

impl ErrorLog {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: AtomicUsize::new(0),
            first: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, e: Unexpected) {
        if self.seen.fetch_add(1, Ordering::Relaxed) < self.limit {
            eprintln!("unexpected response: {e}");
            self.first.lock().unwrap_or_else(PoisonError::into_inner).push(e);
        }
    }

    pub fn first(&self) -> Vec<Unexpected> {
        self.first.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// When each step of a flow is due: now (closed loop), or at `base + gap × step` (open loop).
#[derive(Clone, Copy)]
enum Pace {
    Closed,
    Scheduled { base: Instant, gap: Duration },
}

impl Pace {
    /// Waits until step `k` is due and returns the instant its latency counts from.
    async fn start(self, k: u32) -> Instant {
        match self {
            Pace::Closed => Instant::now(),
            Pace::Scheduled { base, gap } => {
                let due = base + gap * k;
                tokio::time::sleep_until(due.into()).await;
                due
            }
        }
    }
}

/// One full flow: create → update address → update fulfillment option → complete. Stops at the first
/// unexpected response, and before a step due after the window: the window measures a steady state, not the
/// drain of the flows under way at its end.
async fn flow(agent: &Agent, variant: &str, pace: Pace, tally: &mut Tally, errors: &ErrorLog) {
    let start = pace.start(0).await;
    let Some(id) = tally.record(errors, Endpoint::Create, start, agent.create(variant).await) else {
        return;
    };
    if tally.sessions.len() < MAX_SESSIONS_KEPT {
        tally.sessions.push(id.clone());
    }
    let start = pace.start(1).await;
    if tally.ended(start) {
        return;
    }
    if tally
        .record(errors, Endpoint::UpdateAddress, start, agent.update_address(&id).await)
        .is_none()
    {
        return;
    }
    let start = pace.start(2).await;
    if tally.ended(start) {
        return;
    }
    if tally
        .record(
            errors,
            Endpoint::UpdateOption,
            start,
            agent.update_option(&id, variant).await,
        )
        .is_none()
    {
        return;
    }
    let start = pace.start(3).await;
    if tally.ended(start) {
        return;
    }
    if let Some(order) = tally.record(errors, Endpoint::Complete, start, agent.complete(&id).await) {
        let done = Instant::now();
        // Every completed order is a webhook to wait for; only those inside the window count as flows.
        tally.orders.push((order, done));
        if tally.in_window(done) {
            tally.flows += 1;
        }
    }
}

/// `agents` agents each running full flows back to back through the warm-up and the window. Returns the tally
/// (answers inside the window only) and the window's length, which the rates are taken over.
pub async fn closed_loop(
    agent: &Agent,
    agents: usize,
    window: Window,
    variants: &Arc<Vec<String>>,
    errors: &Arc<ErrorLog>,
) -> (Tally, Duration) {
    let deadline = window.end;
    let mut tasks = JoinSet::new();
    for a in 0..agents {
        let (agent, variants, errors) = (agent.clone(), variants.clone(), errors.clone());
        tasks.spawn(async move {
            let mut tally = Tally::within(Some(window));
            let mut n = a;
            while Instant::now() < deadline {
                flow(&agent, &variants[n % variants.len()], Pace::Closed, &mut tally, &errors).await;
                n += agents;
            }
            tally
        });
    }
    (join(tasks).await, window.end - window.start)
}

/// `agents` agents each reading existing sessions back to back through the warm-up and the window.
pub async fn get_only(
    agent: &Agent,
    agents: usize,
    window: Window,
    sessions: &Arc<Vec<String>>,
    errors: &Arc<ErrorLog>,
) -> (Tally, Duration) {
    let deadline = window.end;
    let mut tasks = JoinSet::new();
    for a in 0..agents {
        let (agent, sessions, errors) = (agent.clone(), sessions.clone(), errors.clone());
        tasks.spawn(async move {
            let mut tally = Tally::within(Some(window));
            let mut n = a;
            while Instant::now() < deadline && !sessions.is_empty() {
                let start = Instant::now();
                let result = agent.get(&sessions[n % sessions.len()]).await;
                tally.record(&errors, Endpoint::Get, start, result);
                n += agents;
            }
            tally
        });
    }
    (join(tasks).await, window.end - window.start)
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpenLoopPlan {
    pub flows_per_sec: f64,
    pub step_gap_ms: f64,
    pub scheduled_flows: usize,
    /// Flows due while `max_in_flight` were still under way: not sent, counted as errors.
    pub refused_over_in_flight_limit: u64,
}

/// Flows started at fixed times, `rate` per second for `duration`; the steps of a flow are due `gap` apart (a
/// step whose predecessor answered late is sent at once, its latency still counted from when it was due). Every
/// scheduled flow runs to its end; rates are taken over `duration`.
pub async fn open_loop(
    agent: &Agent,
    rate: f64,
    duration: Duration,
    gap: Duration,
    max_in_flight: usize,
    variants: &Arc<Vec<String>>,
    errors: &Arc<ErrorLog>,
) -> (Tally, Duration, OpenLoopPlan) {
    let scheduled = (rate * duration.as_secs_f64()).floor() as usize;
    let origin = Instant::now() + Duration::from_millis(50);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut total = Tally::default();
    let mut refused = 0;
    let mut tasks = JoinSet::new();
    for i in 0..scheduled {
        let base = origin + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(base.into()).await;
        while let Some(done) = tasks.try_join_next() {
            total.merge(done.unwrap_or_default());
        }
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            refused += 1;
            total.errors += 1;
            errors.note(Unexpected {
                endpoint: Endpoint::Create,
                status: None,
                detail: format!("open loop: {max_in_flight} flows already in flight; this one was not sent"),
            });
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (agent, variants, errors, in_flight) = (agent.clone(), variants.clone(), errors.clone(), in_flight.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let pace = Pace::Scheduled { base, gap };
            flow(&agent, &variants[i % variants.len()], pace, &mut tally, &errors).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            tally
        });
    }
    total.merge(join(tasks).await);
    let plan = OpenLoopPlan {
        flows_per_sec: rate,
        step_gap_ms: gap.as_secs_f64() * 1000.0,
        scheduled_flows: scheduled,
        refused_over_in_flight_limit: refused,
    };
    (total, duration, plan)
}

/// Merges every task's tally; a task that panicked contributes nothing (its flows are simply not counted).
async fn join(mut tasks: JoinSet<Tally>) -> Tally {
    let mut total = Tally::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(tally) => total.merge(tally),
            Err(e) => eprintln!("a load task failed: {e}"),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong() -> Result<(), Unexpected> {
        Err(Unexpected {
            endpoint: Endpoint::Get,
            status: Some(500),
            detail: "boom".to_owned(),
        })
    }

    #[test]
    fn answers_outside_the_window_are_left_out_of_the_rates_but_wrong_ones_still_count() {
        let errors = ErrorLog::new(1);
        let start = Instant::now();
        let ended = Window {
            start: start - Duration::from_secs(1),
            end: start - Duration::from_millis(1),
        };
        let mut closed = Tally::within(Some(ended));
        assert_eq!(closed.record(&errors, Endpoint::Get, start, Ok(7)), Some(7));
        assert_eq!(closed.requests(Endpoint::Get), 0, "answered after the window");
        assert!(closed.ended(start));
        let mut warming = Tally::within(Some(Window::after(Duration::from_secs(60), Duration::from_secs(1))));
        warming.record(&errors, Endpoint::Get, start, Ok(()));
        assert_eq!(warming.requests(Endpoint::Get), 0, "answered during the warm-up");
        assert!(!warming.ended(Instant::now()));
        assert_eq!(closed.record(&errors, Endpoint::Get, start, wrong()), None);
        assert_eq!(closed.errors, 1);

        let mut open = Tally::within(None);
        open.record(&errors, Endpoint::Get, start, Ok(()));
        open.record(&errors, Endpoint::Get, start, wrong());
        assert_eq!(open.requests(Endpoint::Get), 1);
        assert_eq!(open.errors, 1);
        assert_eq!(errors.first().len(), 1, "only the first error is kept");
    }

    #[tokio::test]
    async fn scheduled_steps_wait_until_due_and_count_from_then() {
        let base = Instant::now();
        let pace = Pace::Scheduled {
            base,
            gap: Duration::from_millis(5),
        };
        let due = base + Duration::from_millis(10);
        assert_eq!(pace.start(2).await, due, "latency counts from the due time");
        assert!(Instant::now() >= due, "the step was not sent early");
        // A step already late is sent at once, still counted from when it was due.
        let late = Pace::Scheduled {
            base: base - Duration::from_secs(1),
            gap: Duration::ZERO,
        };
        assert_eq!(late.start(0).await, base - Duration::from_secs(1));
    }
}
