//! The reconciler: settles payment attempts nobody is running any more, so an agent that never retries still
//! gets its order (and its `order_create` webhook) or its stock back.
//!
//! One pass ([`Checkout::reconcile_once`], also `acp-merchant reconcile`):
//! - every open attempt whose runner's lease ended and that is `indeterminate`, or `started` and untouched for
//!   `ACP_RECONCILE_AFTER_MS`, is taken over and settled by asking the PSP (charged → the order, exactly as
//!   complete would; proven not charged → released and reopened with a message; still unknown → later);
//! - every payment still waiting for 3-D Secure on a session that ended is canceled at the PSP.
//!
//! Each resolution is logged with the session and attempt ids. The serve process runs a pass every
//! `ACP_RECONCILE_INTERVAL_MS`.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    attempt,
    service::{Checkout, CheckoutError, load_any},
    settle::{Resolution, Settled, Writer},
};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Attempts closed (charged, declined, waiting for 3-D Secure, or proven not charged).
    pub settled: u64,
    /// Attempts asked about whose outcome is still unknown.
    pub still_open: u64,
    /// Waiting payments of ended sessions canceled at the PSP.
    pub retired: u64,
}

/// How many attempts one pass looks at.
const BATCH: i64 = 100;

impl Checkout {
    pub async fn reconcile_once(&self, pool: &PgPool) -> Result<ReconcileReport, CheckoutError> {
        let mut report = ReconcileReport::default();
        for id in attempt::due_for_reconciliation(pool, self.payments.reconcile_after, BATCH).await? {
            match self.reconcile_attempt(pool, &id).await {
                Ok(Some(true)) => report.settled += 1,
                Ok(Some(false)) => report.still_open += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(payment_attempt_id = %id, error = %e, "reconciler could not settle an attempt")
                }
            }
        }
        for id in attempt::live_on_ended_sessions(pool, BATCH).await? {
            let Some(waiting) = attempt::load(&mut *pool.acquire().await?, &id).await? else {
                continue;
            };
            match self.retire(pool, &waiting).await {
                Ok(()) => {
                    report.retired += 1;
                    tracing::info!(
                        checkout_session_id = %waiting.checkout_session_id,
                        payment_attempt_id = %id,
                        "reconciler canceled a payment waiting for 3-D Secure on an ended session"
                    );
                }
                Err(e) => tracing::warn!(payment_attempt_id = %id, error = %e, "could not cancel a waiting payment"),
            }
        }
        Ok(report)
    }

    /// Takes one attempt over and settles it: `None` when somebody else holds it, else whether it closed.
    async fn reconcile_attempt(&self, pool: &PgPool, id: &str) -> Result<Option<bool>, CheckoutError> {
        let runner = Uuid::new_v4();
        let mut tx = pool.begin().await?;
        let Some(session_id) = attempt::load(&mut tx, id).await?.map(|a| a.checkout_session_id) else {
            return Ok(None);
        };
        // Lock order: the session, then the attempt (as every writer does).
        load_any(&mut tx, &session_id).await?;
        let Some(found) = attempt::load_for_update(&mut tx, id).await? else {
            return Ok(None);
        };
        if !found.state.is_open()
            || found.lease_live
            || !attempt::take_over(&mut tx, id, runner, self.payments.lease).await?
        {
            return Ok(None);
        }
        tx.commit().await?;
        let heartbeat = self.keep_alive(pool, id, runner);
        let resolution = self.ask(&found).await;
        drop(heartbeat);
        let settled = self.settle(pool, id, Writer::Runner(runner), &resolution, None).await?;
        let (outcome, label) = match &resolution {
            Resolution::Charged { .. } => ("charged: order created", "charged"),
            Resolution::Declined { .. } => ("declined: session reopened", "declined"),
            Resolution::RequiresAction { .. } => ("waiting for 3-D Secure", "requires_action"),
            Resolution::NoCharge { .. } => ("not charged: stock released, session reopened", "no_charge"),
            Resolution::Unknown { .. } => ("still unknown: asked again later", "unknown"),
        };
        crate::observability::metrics::record_reconciler_resolution(label);
        tracing::info!(
            checkout_session_id = %session_id,
            payment_attempt_id = %id,
            outcome,
            "reconciler resolved a payment attempt"
        );
        Ok(match settled {
            Settled::Closed(_) => Some(true),
            Settled::StillOpen => Some(false),
            Settled::Fenced => None,
        })
    }
}

/// Runs a pass every `every` until `stop` fires.
pub async fn run(checkout: Arc<Checkout>, pool: PgPool, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match checkout.reconcile_once(&pool).await {
            Ok(report) if report == ReconcileReport::default() => {}
            Ok(report) => tracing::info!(
                settled = report.settled,
                still_open = report.still_open,
                retired = report.retired,
                "reconciler pass"
            ),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    }
}
