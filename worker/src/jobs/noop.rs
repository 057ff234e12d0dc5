//! `noop`: sleeps if asked (saying so in a `progress` event first; a cancel cuts the sleep
//! short), fails its first `fail_times` attempts (fatally if `fatal`).

use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use parley_shared::jobs::Noop;
use parley_shared::store::job_events::EventType;
use parley_shared::store::jobs::Job;
use serde_json::json;
use std::time::Duration;

impl RunJob for Noop {
    async fn run(self, ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> Outcome {
        noop(self, ctx, job, cancel).await.into()
    }
}

async fn noop(p: Noop, ctx: &WorkerContext, job: &Job, mut cancel: CancelSignal) -> Result<Outcome, JobError> {
    if p.sleep_ms > 0 {
        let mut events = ctx.open_stream(job.id).await?;
        events.emit(EventType::Progress, json!({"sleeping_ms": p.sleep_ms}))?;
        events.close().await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(p.sleep_ms)) => {}
            _ = cancel.changed() => return Ok(Outcome::Cancelled),
        }
    }
    if job.attempts <= i64::from(p.fail_times) {
        let error = anyhow::anyhow!("planned failure on attempt {}", job.attempts);
        return Err(if p.fatal { JobError::Fatal(error) } else { error.into() });
    }
    Ok(Outcome::Succeeded(json!({"attempt": job.attempts})))
}
