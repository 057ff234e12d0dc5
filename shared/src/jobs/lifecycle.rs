//! The end of a job, wherever it is decided (the runner, the lease sweep, a cancel of a
//! waiting job): the final event for watchers, and the job kind's domain rows closed.

use super::{JobKind, JobStatus, LlmCompletion};
use crate::Db;
use crate::events::{EventBus, emit};
use crate::store::chat;
use crate::store::jobs::Job;
use serde_json::json;

/// Emits the final event of `job`, which ended with `status` (not `succeeded`: that one
/// carries a result and is emitted by the runner), and closes what the job left open.
pub async fn announce_end(
    db: &Db,
    bus: &EventBus,
    job: &Job,
    status: JobStatus,
    error: Option<&str>,
) -> anyhow::Result<()> {
    close_domain_rows(db, job, status, error).await?;
    match status {
        JobStatus::Cancelled => emit(db, bus, job.id, "status", json!({"status": "cancelled"})).await?,
        _ => emit(db, bus, job.id, "error", json!({"status": status.as_str(), "error": error})).await?,
    };
    Ok(())
}

/// A reply whose generation ended without finishing is marked failed or cancelled, keeping
/// whatever text it had.
async fn close_domain_rows(db: &Db, job: &Job, status: JobStatus, error: Option<&str>) -> anyhow::Result<()> {
    if job.kind() == Some(JobKind::LlmCompletion)
        && let Ok(p) = serde_json::from_str::<LlmCompletion>(&job.payload)
    {
        let message_status = if status == JobStatus::Cancelled { "cancelled" } else { "failed" };
        chat::close_open_reply(&db.pool, &p.message_id, message_status, error).await?;
    }
    Ok(())
}
