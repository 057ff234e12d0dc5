//! Job handlers, one file per kind, all registered in [`execute`].

pub mod generate_title;
pub mod llm_completion;
mod noop;
pub mod process_avatar;
pub mod send_email;

use crate::WorkerContext;
use parley_shared::jobs::JobKind;
use parley_shared::store::jobs::Job;
use std::time::Duration;

/// Why an attempt failed, and whether another attempt can help.
#[derive(Debug)]
pub enum JobError {
    /// A transient problem (network, a 5xx, a timeout): retried with backoff, waiting at
    /// least `retry_after` when the other side said so.
    Retryable { error: anyhow::Error, retry_after: Option<Duration> },
    /// Retrying cannot help (bad input, a deleted row, a refused key).
    Fatal(anyhow::Error),
}

impl JobError {
    pub fn fatal(msg: impl std::fmt::Display) -> Self {
        JobError::Fatal(anyhow::anyhow!("{msg}"))
    }
}

impl From<parley_shared::StoreError> for JobError {
    fn from(error: parley_shared::StoreError) -> Self {
        JobError::Retryable { error: error.into(), retry_after: None }
    }
}

impl From<anyhow::Error> for JobError {
    fn from(error: anyhow::Error) -> Self {
        JobError::Retryable { error, retry_after: None }
    }
}

/// Parses a job's payload; a payload that does not parse cannot succeed on retry.
pub fn payload<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T, JobError> {
    serde_json::from_str(&job.payload).map_err(|e| JobError::fatal(format!("malformed payload: {e}")))
}

/// Turns `true` when the job is cancelled; handlers that can stop cleanly watch it, and
/// answer `{"cancelled": true}` when they stopped for it.
pub type CancelSignal = tokio::sync::watch::Receiver<bool>;

/// Whether a handler's result says it stopped for a cancel.
pub fn stopped_for_cancel(result: &serde_json::Value) -> bool {
    result.get("cancelled") == Some(&serde_json::Value::Bool(true))
}

/// Runs one attempt of `job`, by kind.
pub async fn execute(
    ctx: &WorkerContext,
    kind: JobKind,
    job: &Job,
    cancel: CancelSignal,
) -> Result<serde_json::Value, JobError> {
    match kind {
        JobKind::LlmCompletion => llm_completion::run(ctx, job, cancel).await,
        JobKind::GenerateTitle => generate_title::run(ctx, job).await,
        JobKind::Noop => noop::run(ctx, job, cancel).await,
        JobKind::SendEmail => send_email::run(ctx, job).await,
        JobKind::ProcessAvatar => process_avatar::run(ctx, job).await,
    }
}
