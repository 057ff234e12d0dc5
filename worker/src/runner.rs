//! One attempt of a job: claim the row, keep its lease, watch for cancellation, enforce the
//! kind's timeout, then record the outcome (success, a retry with backoff, or failure) and
//! emit the matching events.

use crate::WorkerContext;
use crate::jobs::{self, JobError};
use apalis::prelude::{BoxDynError, Data};
use parley_shared::events::emit;
use parley_shared::ids::JobId;
use parley_shared::jobs::{JobStatus, backoff_delay};
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
        tracing::debug!("not runnable: finished, cancelled, or running elsewhere");
        return Ok(());
    };
    let span = tracing::Span::current();
    span.record("job.kind", job.kind.as_str());
    span.record("attempt", job.attempts);
    let Some(kind) = job.kind() else {
        store::finish(&ctx.db.pool, id, JobStatus::Failed, None, Some("unknown job kind")).await?;
        return Ok(());
    };
    let policy = kind.policy();
    emit(&ctx.db, &ctx.bus, id, "status", json!({"status": "running", "attempt": job.attempts})).await?;
    let started = std::time::Instant::now();

    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let work = tokio::time::timeout(policy.timeout, jobs::execute(ctx, kind, &job, cancel_rx));
    tokio::pin!(work);
    let outcome = tokio::select! {
        result = &mut work => match result {
            Ok(done) => Outcome::Done(done),
            Err(_) => Outcome::TimedOut,
        },
        watched = watch_lease(ctx, id, lease_ms) => {
            if matches!(watched, Outcome::Cancelled) {
                // Let the handler stop its own way (an LLM reply keeps its partial text).
                let _ = cancel_tx.send(true);
                let _ = tokio::time::timeout(CANCEL_GRACE, &mut work).await;
            }
            watched
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Outcome::Done(Ok(result)) => {
            if store::finish(&ctx.db.pool, id, JobStatus::Succeeded, Some(&result), None).await? {
                emit(&ctx.db, &ctx.bus, id, "done", json!({"status": "succeeded", "result": result})).await?;
                tracing::info!(duration_ms, "job succeeded");
            }
        }
        Outcome::Done(Err(JobError::Fatal(e))) => fail(ctx, &job, &format!("{e:#}")).await?,
        Outcome::Done(Err(JobError::Retryable { error, retry_after })) => {
            retry_or_fail(ctx, &job, &format!("{error:#}"), retry_after).await?;
        }
        Outcome::TimedOut => {
            let error = format!("timed out after {} s", policy.timeout.as_secs());
            retry_or_fail(ctx, &job, &error, None).await?;
        }
        Outcome::Cancelled => {
            if store::finish(&ctx.db.pool, id, JobStatus::Cancelled, None, Some("cancelled")).await? {
                emit(&ctx.db, &ctx.bus, id, "status", json!({"status": "cancelled"})).await?;
                tracing::info!(duration_ms, "job cancelled");
            }
        }
        Outcome::Lost => tracing::warn!("lease lost; another worker owns the job now"),
    }
    Ok(())
}

/// Renews the lease until the job is cancelled or the lease is lost; never returns otherwise.
async fn watch_lease(ctx: &WorkerContext, id: JobId, lease_ms: i64) -> Outcome {
    loop {
        tokio::time::sleep(CANCEL_CHECK).await;
        match store::renew_lease(&ctx.db.pool, id, lease_ms).await {
            Ok(Some(true)) => return Outcome::Cancelled,
            Ok(Some(false)) => {}
            Ok(None) => return Outcome::Lost,
            Err(e) => tracing::warn!(error = %e, "renewing a job lease failed"),
        }
    }
}

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
    let delay = backoff_delay(&policy, attempt).max(retry_after.unwrap_or_default());
    let run_after = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    if store::retry_later(&ctx.db.pool, job.id, error, run_after).await? {
        let data = json!({"status": "retrying", "attempt": job.attempts, "error": error, "retry_in_ms": delay.as_millis() as u64});
        emit(&ctx.db, &ctx.bus, job.id, "status", data).await?;
        tracing::warn!(error, retry_in_ms = delay.as_millis() as u64, "job attempt failed; will retry");
    }
    Ok(())
}

async fn fail(ctx: &WorkerContext, job: &Job, error: &str) -> anyhow::Result<()> {
    if store::finish(&ctx.db.pool, job.id, JobStatus::Failed, None, Some(error)).await? {
        emit(&ctx.db, &ctx.bus, job.id, "error", json!({"status": "failed", "error": error})).await?;
        tracing::warn!(error, "job failed");
    }
    Ok(())
}
