//! One attempt of a job: claim the row, keep its lease, watch for cancellation, enforce the
//! kind's timeout, then record the outcome (success, a retry with backoff, or failure) and
//! emit the matching events.

use crate::WorkerContext;
use crate::jobs::{self, JobError};
use apalis::prelude::{BoxDynError, Data};
use parley_shared::domain::mask_emails;
use parley_shared::events::emit;
use parley_shared::ids::JobId;
use parley_shared::jobs::lifecycle::announce_end;
use parley_shared::jobs::{JobKind, JobStatus, backoff_delay};
use parley_shared::queue::JobMessage;
use parley_shared::store::jobs as store;
use parley_shared::store::jobs::Job;
use parley_shared::time::now_ms;
use serde_json::json;
use std::time::Duration;
use tracing::Instrument;

/// How often a running job renews its lease and looks for a cancel request.
const CANCEL_CHECK: Duration = Duration::from_millis(400);

/// How long a cancelled handler gets to wrap up before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// The apalis handler. An `Err` means no outcome could be recorded (say, the database was
/// unreachable); apalis then delivers the message again.
pub async fn handle(msg: JobMessage, ctx: Data<WorkerContext>) -> Result<(), BoxDynError> {
    let Ok(id) = msg.job_id.parse::<JobId>() else {
        tracing::error!(job.id = %msg.job_id, "queue message with a malformed job id; dropped");
        return Ok(());
    };
    let span =
        tracing::info_span!("job", job.id = %id, job.kind = tracing::field::Empty, attempt = tracing::field::Empty);
    run(&ctx, id).instrument(span).await.map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "job outcome could not be recorded");
        e.into()
    })
}

enum Outcome {
    Done(Result<serde_json::Value, JobError>),
    TimedOut,
    Cancelled,
    /// The lease was lost (another worker took over); record nothing.
    Lost,
}

async fn run(ctx: &WorkerContext, id: JobId) -> anyhow::Result<()> {
    let lease_ms = i64::try_from(ctx.config.job_lease_secs * 1000).unwrap_or(i64::MAX);
    let Some(job) = store::start(&ctx.db.pool, id, lease_ms).await? else {
        if store::return_undue(&ctx.db.pool, id).await? {
            tracing::debug!("delivered before it was due; back to the outbox");
        } else {
            tracing::debug!("not runnable: finished, cancelled, or running elsewhere");
        }
        return Ok(());
    };
    let span = tracing::Span::current();
    span.record("job.kind", job.kind.as_str());
    span.record("attempt", job.attempts);
    let Some(kind) = job.kind() else {
        fail(ctx, &job, "unknown job kind").await?;
        return Ok(());
    };
    ctx.running.lock().expect("running lock").insert((id, job.attempts));
    let result = attempt(ctx, &job, kind, lease_ms).await;
    // Not reached when the shutdown grace ran out and the attempt was dropped: the entry
    // stays, and `run` hands the job back.
    ctx.running.lock().expect("running lock").remove(&(id, job.attempts));
    result
}

/// Runs the attempt and records its outcome.
async fn attempt(ctx: &WorkerContext, job: &Job, kind: JobKind, lease_ms: i64) -> anyhow::Result<()> {
    let (id, policy) = (job.id, kind.policy());
    emit(&ctx.db, &ctx.bus, id, "status", json!({"status": "running", "attempt": job.attempts})).await?;
    let started = std::time::Instant::now();

    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let work = tokio::time::timeout(policy.timeout, jobs::execute(ctx, kind, job, cancel_rx));
    tokio::pin!(work);
    let outcome = tokio::select! {
        result = &mut work => match result {
            Ok(done) => Outcome::Done(done),
            Err(_) => Outcome::TimedOut,
        },
        watched = watch_lease(ctx, id, job.attempts, lease_ms) => {
            if matches!(watched, Outcome::Cancelled) {
                // Let the handler stop its own way (an LLM reply keeps its partial text).
                let _ = cancel_tx.send(true);
                match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
                    // It finished its work meanwhile (an email went out): that is the outcome.
                    Ok(Ok(Ok(result))) if !jobs::stopped_for_cancel(&result) => Outcome::Done(Ok(result)),
                    _ => Outcome::Cancelled,
                }
            } else {
                watched
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Done(Ok(result)) => {
            if store::finish(&ctx.db.pool, id, job.attempts, JobStatus::Succeeded, Some(&result), None).await? {
                emit(&ctx.db, &ctx.bus, id, "done", json!({"status": "succeeded", "result": result})).await?;
                tracing::info!(duration_ms, "job succeeded");
            }
        }
        Outcome::Done(Err(JobError::Fatal(e))) => fail(ctx, job, &format!("{e:#}")).await?,
        Outcome::Done(Err(JobError::Retryable { error, retry_after })) => {
            retry_or_fail(ctx, job, &format!("{error:#}"), retry_after).await?;
        }
        Outcome::TimedOut => {
            let error = format!("timed out after {} s", policy.timeout.as_secs());
            retry_or_fail(ctx, job, &error, None).await?;
        }
        Outcome::Cancelled => {
            if store::finish(&ctx.db.pool, id, job.attempts, JobStatus::Cancelled, None, Some("cancelled")).await? {
                announce_end(&ctx.db, &ctx.bus, job, JobStatus::Cancelled, None).await?;
                tracing::info!(duration_ms, "job cancelled");
            }
        }
        Outcome::Lost => tracing::warn!("lease lost; another worker owns the job now"),
    }
    Ok(())
}

/// Renews the lease until the job is cancelled or the lease is lost (another attempt owns
/// the job, or no renewal got through for a whole lease); never returns otherwise.
async fn watch_lease(ctx: &WorkerContext, id: JobId, attempt: i64, lease_ms: i64) -> Outcome {
    let mut renewed = std::time::Instant::now();
    let lease = Duration::from_millis(u64::try_from(lease_ms).unwrap_or(u64::MAX));
    loop {
        tokio::time::sleep(CANCEL_CHECK).await;
        match store::renew_lease(&ctx.db.pool, id, attempt, lease_ms).await {
            Ok(Some(true)) => return Outcome::Cancelled,
            Ok(Some(false)) => renewed = std::time::Instant::now(),
            Ok(None) => return Outcome::Lost,
            Err(e) if renewed.elapsed() >= lease => {
                tracing::warn!(error = %e, "the lease could not be renewed in time; giving the job up");
                return Outcome::Lost;
            }
            Err(e) => tracing::warn!(error = %e, "renewing a job lease failed"),
        }
    }
}

/// The longest wait a provider's `Retry-After` can impose before the next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

async fn retry_or_fail(
    ctx: &WorkerContext,
    job: &Job,
    error: &str,
    retry_after: Option<Duration>,
) -> anyhow::Result<()> {
    let Some(kind) = job.kind() else { return fail(ctx, job, error).await };
    if job.attempts >= job.max_attempts {
        return fail(ctx, job, &format!("{error} (after {} attempts)", job.attempts)).await;
    }
    let policy = kind.policy();
    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
    let delay = backoff_delay(&policy, attempt).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    let run_after = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    match store::retry_later(&ctx.db.pool, job.id, job.attempts, error, run_after).await? {
        Some(JobStatus::Retrying) => {
            let retry_in_ms = delay.as_millis() as u64;
            let data =
                json!({"status": "retrying", "attempt": job.attempts, "error": error, "retry_in_ms": retry_in_ms});
            emit(&ctx.db, &ctx.bus, job.id, "status", data).await?;
            tracing::warn!(error = %mask_emails(error), retry_in_ms, "job attempt failed; will retry");
        }
        // A cancel arrived while the attempt was failing.
        Some(JobStatus::Cancelled) => announce_end(&ctx.db, &ctx.bus, job, JobStatus::Cancelled, None).await?,
        _ => {}
    }
    Ok(())
}

async fn fail(ctx: &WorkerContext, job: &Job, error: &str) -> anyhow::Result<()> {
    if store::finish(&ctx.db.pool, job.id, job.attempts, JobStatus::Failed, None, Some(error)).await? {
        announce_end(&ctx.db, &ctx.bus, job, JobStatus::Failed, Some(error)).await?;
        tracing::warn!(error = %mask_emails(error), "job failed");
    }
    Ok(())
}
