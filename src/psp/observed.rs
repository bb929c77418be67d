//! Every PSP call is timed, counted by outcome and wrapped in a `psp.<operation>` span (a child of the request
//! or worker span that made it). Span fields are the PSP's name and the operation: never tokens or amounts.

use std::{future::Future, time::Instant};

use tracing::Instrument;

use super::{ChargeOutcome, PspError};
use crate::observability::metrics;

/// Runs `call`, then records its latency and `outcome(result)` under `psp` / `operation`.
pub async fn observe<T, F>(
    psp: &'static str,
    operation: &'static str,
    outcome: fn(&Result<T, PspError>) -> &'static str,
    call: F,
) -> Result<T, PspError>
where
    F: Future<Output = Result<T, PspError>>,
{
    let span = tracing::info_span!(
        "psp.call",
        otel.name = %format_args!("psp.{operation}"),
        otel.kind = "client",
        psp,
        operation,
        request_id = crate::observability::current_request_id(),
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let label = outcome(&result);
    span.record("outcome", label);
    metrics::record_psp(psp, operation, label, started.elapsed());
    result
}

/// What a charge proved: paid, declined, waiting for 3-D Secure, unknown, or a failure to ask.
pub fn charge_outcome(result: &Result<ChargeOutcome, PspError>) -> &'static str {
    match result {
        Ok(ChargeOutcome::Succeeded { .. }) => "succeeded",
        Ok(ChargeOutcome::Declined { .. }) => "declined",
        Ok(ChargeOutcome::RequiresAuthentication { .. }) => "requires_action",
        Err(e) => error_outcome(e),
    }
}

/// Operations other than a charge: the PSP answered, the answer is unknown, or the call failed.
pub fn answer_outcome<T>(result: &Result<T, PspError>) -> &'static str {
    match result {
        Ok(_) => "succeeded",
        Err(e) => error_outcome(e),
    }
}

fn error_outcome(e: &PspError) -> &'static str {
    match e {
        PspError::Ambiguous { .. } => "ambiguous",
        PspError::Rejected { .. } | PspError::NotSent(_) | PspError::Storage(_) => "error",
    }
}
