//! One attempt of a claimed job: run the kind's handler under its timeout, stop it on a
//! cancel or a lost lease, and record the outcome (success, a retry with backoff, or an
//! end) in one transaction with its event. The claim already started the attempt.

use crate::WorkerContext;
use crate::jobs::{self, Outcome};
use crate::running::Signal;
use apalis::prelude::{BoxDynError, Data};
use futures::FutureExt;
use parley_shared::domain::mask_emails;
use parley_shared::jobs::lifecycle;
use parley_shared::jobs::{JobStatus, backoff_delay};
use parley_shared::llm::UserFacing;
use parley_shared::metrics::{self, JobOutcome};
use parley_shared::store::jobs::{self as job_store, Job};
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// A job a worker claimed, with the signals of its attempt.
#[derive(Debug)]
pub struct Claimed {
    pub job: Job,
    pub signal: watch::Receiver<Signal>,
}

/// How long a cancelled handler gets to wrap up before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// The longest wait a provider's `Retry-After` can impose before the next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The apalis handler. An `Err` means no outcome could be recorded (the database was
/// unreachable): the job stays `running` under a lease nobody renews, and runs again once
/// it expires.
pub async fn handle(claimed: Claimed, ctx: Data<WorkerContext>) -> Result<(), BoxDynError> {
    let Claimed { job, signal } = claimed;
    let span = tracing::info_span!("job", job.id = %job.id, job.kind = job.kind.as_str(), attempt = job.attempts,
        request.id = job.request_id.as_deref());
    let (id, attempt) = (job.id, job.attempts);
    // A panic past the handler's own guard (in recording the outcome) ends this attempt,
    // never the queue's worker and the other attempts it runs.
    let result = AssertUnwindSafe(run(&ctx, job, signal).instrument(span.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("recording the job's outcome panicked")));
    // Not reached when the shutdown grace ran out and the attempt was dropped: the entry
    // stays, and the worker set hands the job back.
    ctx.running.release(id, attempt);
    result.map_err(|e| {
        span.in_scope(|| tracing::error!(error = format!("{e:#}"), "job outcome could not be recorded"));
        e.into()
    })
}

/// What stopped an attempt.
enum Ended {
    Done(Outcome),
    TimedOut,
    /// The lease was lost (another worker took over); record nothing.
    Lost,
}

async fn run(ctx: &WorkerContext, job: Job, mut signal: watch::Receiver<Signal>) -> anyhow::Result<()> {
    let policy = job.kind.policy();
    let started = std::time::Instant::now();
    let waited_ms = parley_shared::time::now_ms() - job.run_after.millis();
    metrics::job_started(job.kind, Duration::from_millis(u64::try_from(waited_ms).unwrap_or(0)));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    // A panicking handler fails its attempt rather than the worker.
    let work = AssertUnwindSafe(jobs::execute(ctx, &job, cancel_rx)).catch_unwind().map(|r| {
        r.unwrap_or_else(|_| Outcome::Retry { error: anyhow::anyhow!("the job handler panicked"), after: None })
    });
    let mut work = Box::pin(tokio::time::timeout(policy.timeout, work));
    let ended = tokio::select! {
        result = &mut work => result.map_or(Ended::TimedOut, Ended::Done),
        stop = async { signal.wait_for(|s| *s != Signal::Run).await.map_or(Signal::Lost, |s| *s) } => match stop {
            Signal::Cancel => {
                // Let the handler stop its own way (an LLM reply keeps its partial text).
                let _ = cancel_tx.send(true);
                match tokio::time::timeout(CANCEL_GRACE, &mut work).await {
                    // It finished its work meanwhile (an email went out): that is the outcome.
                    Ok(Ok(Outcome::Succeeded(result))) => Ended::Done(Outcome::Succeeded(result)),
                    _ => Ended::Done(Outcome::Cancelled),
                }
            }
            _ => Ended::Lost,
        },
    };
    // An attempt cut off (timed out, cancelled past its grace, lost) stops here, and its
    // event stream is settled before its final event is written.
    drop(work);
    if !matches!(ended, Ended::Done(Outcome::Succeeded(_))) {
        ctx.events.flush().await;
    }
    let ran = started.elapsed();
    let duration_ms = ran.as_millis() as u64;
    let env = ctx.job_env();
    match ended {
        Ended::Done(Outcome::Succeeded(result)) => {
            if lifecycle::succeed(&env, &job, &result).await? {
                metrics::job_ended(job.kind, JobOutcome::Succeeded, Some(ran));
                tracing::info!(duration_ms, "job succeeded");
            }
        }
        Ended::Done(Outcome::Failed(error)) => {
            fail(ctx, &job, &format!("{error:#}"), ran).await?;
            record_detail(ctx, &job, &error).await;
        }
        Ended::Done(Outcome::Retry { error, after }) => {
            retry_or_fail(ctx, &job, &format!("{error:#}"), after, ran).await?;
            record_detail(ctx, &job, &error).await;
        }
        Ended::TimedOut => {
            let error = format!("timed out after {} s", policy.timeout.as_secs());
            retry_or_fail(ctx, &job, &error, None, ran).await?;
        }
        Ended::Done(Outcome::Cancelled) => {
            if lifecycle::end(&env, &job, JobStatus::Cancelled, None).await? {
                metrics::job_ended(job.kind, JobOutcome::Cancelled, Some(ran));
                tracing::info!(duration_ms, "job cancelled");
            }
        }
        Ended::Lost => tracing::warn!("lease lost; another worker owns the job now"),
    }
    Ok(())
}

async fn retry_or_fail(
    ctx: &WorkerContext,
    job: &Job,
    error: &str,
    retry_after: Option<Duration>,
    ran: Duration,
) -> anyhow::Result<()> {
    if job.attempts >= job.max_attempts {
        return fail(ctx, job, &format!("{error} (after {} attempts)", job.attempts), ran).await;
    }
    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
    let delay = backoff_delay(&job.kind.policy(), attempt).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    if lifecycle::retry(&ctx.job_env(), job, error, delay).await? == Some(JobStatus::Retrying) {
        metrics::job_ended(job.kind, JobOutcome::Retried, Some(ran));
        let retry_in_ms = delay.as_millis() as u64;
        tracing::warn!(error = %mask_emails(error), retry_in_ms, "job attempt failed; will retry");
        // Wake the queue when the retry falls due rather than at the next poll after it.
        let (queue, name) = (ctx.queue.clone(), job.kind.policy().queue);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.wake(name);
        });
    }
    Ok(())
}

/// Keeps the full (redacted) text of a provider failure for admins: the job's owner was told
/// only the class of failure. Best effort: the outcome itself is already recorded.
async fn record_detail(ctx: &WorkerContext, job: &Job, error: &anyhow::Error) {
    let Some(failure) = error.downcast_ref::<UserFacing>() else { return };
    let detail = failure.detail();
    tracing::warn!(error = %mask_emails(&detail), "provider call failed");
    if let Err(e) = job_store::set_error_detail(&ctx.db.writer, job.id, job.attempts, &detail).await {
        tracing::warn!(error = %e, "recording a job's error detail");
    }
}

async fn fail(ctx: &WorkerContext, job: &Job, error: &str, ran: Duration) -> anyhow::Result<()> {
    if lifecycle::end(&ctx.job_env(), job, JobStatus::Failed, Some(error)).await? {
        metrics::job_ended(job.kind, JobOutcome::Failed, Some(ran));
        tracing::warn!(error = %mask_emails(error), "job failed");
    }
    Ok(())
}
