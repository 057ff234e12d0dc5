//! Job handlers, one file per kind. Each kind's payload type (declared with its policy in
//! `parley_shared::jobs`) implements [`RunJob`] here; [`execute`] is the one place where
//! kinds are registered.

pub mod api_completion;
pub mod export;
pub mod generate_title;
pub mod llm_completion;
mod noop;
pub mod process_avatar;
pub mod scheduled;
pub mod send_email;

use crate::WorkerContext;
use parley_shared::jobs::{JobKind, JobSpec};
use parley_shared::store::jobs::Job;
use std::future::Future;
use std::time::Duration;

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done; the value is the job's result.
    Succeeded(serde_json::Value),
    /// Stopped for a cancel request (what was done so far is kept by the handler).
    Cancelled,
    /// A transient problem (network, a 5xx, a timeout): another attempt after the kind's
    /// backoff, and at least `after` when the other side said so (`Retry-After`).
    Retry { error: anyhow::Error, after: Option<Duration> },
    /// Retrying cannot help (bad input, a deleted row, a refused key).
    Failed(anyhow::Error),
}

/// A kind's work: `run` gets the parsed payload and answers an [`Outcome`].
pub trait RunJob: JobSpec {
    fn run(self, ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> impl Future<Output = Outcome> + Send;
}

/// The error type handlers use with `?`; it converts into an [`Outcome`].
#[derive(Debug)]
pub enum JobError {
    /// See [`Outcome::Retry`].
    Retryable { error: anyhow::Error, retry_after: Option<Duration> },
    /// See [`Outcome::Failed`].
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

impl From<JobError> for Outcome {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Retryable { error, retry_after } => Outcome::Retry { error, after: retry_after },
            JobError::Fatal(error) => Outcome::Failed(error),
        }
    }
}

impl From<Result<serde_json::Value, JobError>> for Outcome {
    fn from(result: Result<serde_json::Value, JobError>) -> Self {
        result.map_or_else(Outcome::from, Outcome::Succeeded)
    }
}

impl From<Result<Outcome, JobError>> for Outcome {
    fn from(result: Result<Outcome, JobError>) -> Self {
        result.unwrap_or_else(Outcome::from)
    }
}

/// Turns `true` when the job is cancelled; handlers that can stop cleanly watch it and
/// answer [`Outcome::Cancelled`] when they stopped for it.
pub type CancelSignal = tokio::sync::watch::Receiver<bool>;

/// Runs one attempt of `job`: parses its payload as its kind's type and runs it.
pub async fn execute(ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> Outcome {
    match job.kind {
        JobKind::LlmCompletion => run_as::<parley_shared::jobs::LlmCompletion>(ctx, job, cancel).await,
        JobKind::GenerateTitle => run_as::<parley_shared::jobs::GenerateTitle>(ctx, job, cancel).await,
        JobKind::Noop => run_as::<parley_shared::jobs::Noop>(ctx, job, cancel).await,
        JobKind::SendEmail => run_as::<parley_shared::jobs::SendEmail>(ctx, job, cancel).await,
        JobKind::ProcessAvatar => run_as::<parley_shared::jobs::ProcessAvatar>(ctx, job, cancel).await,
        JobKind::ApiCompletion => run_as::<parley_shared::jobs::ApiCompletion>(ctx, job, cancel).await,
        JobKind::Export => run_as::<parley_shared::jobs::ExportData>(ctx, job, cancel).await,
        JobKind::Scheduled => run_as::<parley_shared::jobs::Scheduled>(ctx, job, cancel).await,
    }
}

async fn run_as<J: RunJob>(ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> Outcome {
    match job.payload::<J>() {
        // A payload that does not parse cannot succeed on retry.
        Err(e) => Outcome::Failed(e.into()),
        Ok(payload) => payload.run(ctx, job, cancel).await,
    }
}
