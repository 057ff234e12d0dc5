//! `noop`: sleeps if asked (a cancel cuts the sleep short), fails its first `fail_times`
//! attempts (fatally if `fatal`).

use super::{CancelSignal, JobError, payload};
use crate::WorkerContext;
use parley_shared::jobs::Noop;
use parley_shared::store::jobs::Job;
use serde_json::json;
use std::time::Duration;

pub async fn run(_ctx: &WorkerContext, job: &Job, mut cancel: CancelSignal) -> Result<serde_json::Value, JobError> {
    let p: Noop = payload(job)?;
    if p.sleep_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(p.sleep_ms)) => {}
            _ = cancel.changed() => return Ok(json!({"cancelled": true})),
        }
    }
    if job.attempts <= i64::from(p.fail_times) {
        let error = anyhow::anyhow!("planned failure on attempt {}", job.attempts);
        return Err(if p.fatal { JobError::Fatal(error) } else { error.into() });
    }
    Ok(json!({"attempt": job.attempts}))
}
