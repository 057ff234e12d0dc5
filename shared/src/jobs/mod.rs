//! Job kinds as types, in the manner of the Rust registry's `BackgroundJob`: each kind is a
//! payload struct (ids only) implementing [`JobSpec`], which declares its name, queue,
//! attempts, backoff and timeout, and what must be closed when the job ends without
//! succeeding. [`crate::store::jobs::enqueue`] takes the typed payload, so a kind cannot be
//! paired with the wrong payload. The worker crate adds each kind's `run`.

mod backoff;
mod kinds;
pub mod lifecycle;

pub use backoff::backoff_delay;
pub use kinds::*;

use crate::error::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use std::future::Future;
use std::time::Duration;

/// A kind of job: its payload type and how it is run.
pub trait JobSpec: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind's name, stored in the job row.
    const KIND: JobKind;
    /// Interactive work never waits behind bulk work: each queue has its own workers.
    const QUEUE: QueueName;
    /// Attempts before the job fails for good.
    const MAX_ATTEMPTS: u32;
    /// Longest run of one attempt.
    const TIMEOUT: Duration;
    /// First retry delay; doubles each attempt, with jitter, up to `MAX_BACKOFF`.
    const BASE_BACKOFF: Duration;
    const MAX_BACKOFF: Duration;

    fn policy() -> JobPolicy {
        JobPolicy {
            queue: Self::QUEUE,
            max_attempts: Self::MAX_ATTEMPTS,
            timeout: Self::TIMEOUT,
            base_backoff: Self::BASE_BACKOFF,
            max_backoff: Self::MAX_BACKOFF,
        }
    }

    /// Closes what the job left open when it ends `failed` or `cancelled` (a reply row, an
    /// uploaded file), wherever that is decided: the worker, a cancel of a waiting job, the
    /// claim of a job whose worker died. Runs in the transaction that ends the job.
    fn on_end(&self, end: JobEnd<'_>) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = end;
        async { Ok(()) }
    }
}

/// What [`JobSpec::on_end`] gets: the transaction ending the job, the media store, and how
/// the job ended.
pub struct JobEnd<'a> {
    pub conn: &'a mut AnyConnection,
    pub media: &'a dyn crate::media::MediaStore,
    pub status: JobStatus,
    pub error: Option<&'a str>,
}

/// Every kind of job Parley runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    SendEmail,
    ProcessAvatar,
    /// Streams an assistant reply from the session's LLM.
    LlmCompletion,
    /// Names a chat session after its first exchange.
    GenerateTitle,
    /// Streams the answer of one call of the OpenAI-compatible chat completions endpoint.
    ApiCompletion,
    /// Does nothing (or sleeps/fails as its payload says): for benchmarks and operations checks.
    Noop,
    /// Writes an export file (personal data, or an admin's users, usage or activity list).
    Export,
    /// A tick of a schedule's periodic work (pruning).
    Scheduled,
}

/// Calls `$body` with `$t` bound to the payload type of `$kind`.
#[macro_export]
#[doc(hidden)]
macro_rules! with_job_type {
    ($kind:expr, $t:ident => $body:expr) => {
        match $kind {
            $crate::jobs::JobKind::SendEmail => {
                type $t = $crate::jobs::SendEmail;
                $body
            }
            $crate::jobs::JobKind::ProcessAvatar => {
                type $t = $crate::jobs::ProcessAvatar;
                $body
            }
            $crate::jobs::JobKind::LlmCompletion => {
                type $t = $crate::jobs::LlmCompletion;
                $body
            }
            $crate::jobs::JobKind::GenerateTitle => {
                type $t = $crate::jobs::GenerateTitle;
                $body
            }
            $crate::jobs::JobKind::Noop => {
                type $t = $crate::jobs::Noop;
                $body
            }
            $crate::jobs::JobKind::ApiCompletion => {
                type $t = $crate::jobs::ApiCompletion;
                $body
            }
            $crate::jobs::JobKind::Export => {
                type $t = $crate::jobs::ExportData;
                $body
            }
            $crate::jobs::JobKind::Scheduled => {
                type $t = $crate::jobs::Scheduled;
                $body
            }
        }
    };
}

impl JobKind {
    pub const ALL: [JobKind; 8] = [
        JobKind::SendEmail,
        JobKind::ProcessAvatar,
        JobKind::LlmCompletion,
        JobKind::GenerateTitle,
        JobKind::Noop,
        JobKind::ApiCompletion,
        JobKind::Export,
        JobKind::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SendEmail => "send_email",
            JobKind::ProcessAvatar => "process_avatar",
            JobKind::LlmCompletion => "llm_completion",
            JobKind::GenerateTitle => "generate_title",
            JobKind::Noop => "noop",
            JobKind::ApiCompletion => "api_completion",
            JobKind::Export => "export",
            JobKind::Scheduled => "scheduled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The policy the kind's [`JobSpec`] declares.
    pub fn policy(self) -> JobPolicy {
        with_job_type!(self, T => T::policy())
    }
}

/// A stored value the code does not know: an error, never mapped to another value.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl TryFrom<String> for JobKind {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownValue { what: "job kind", value })
    }
}

/// Queues, so interactive work is never stuck behind bulk work: each has its own workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    Interactive,
    Default,
    Bulk,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Interactive, QueueName::Default, QueueName::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Interactive => "interactive",
            QueueName::Default => "default",
            QueueName::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == s)
    }

    /// Position in [`QueueName::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl TryFrom<String> for QueueName {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownValue { what: "queue", value })
    }
}

/// How a kind is run (what its [`JobSpec`] declares).
#[derive(Debug, Clone, Copy)]
pub struct JobPolicy {
    pub queue: QueueName,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

/// Client-visible job status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl TryFrom<String> for JobStatus {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownValue { what: "job status", value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_status_round_trips_through_its_stored_name() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::try_from(kind.as_str().to_owned()).unwrap(), kind);
        }
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::try_from(status.as_str().to_owned()).unwrap(), status);
        }
    }

    #[test]
    fn an_unknown_stored_kind_or_status_is_an_error() {
        assert!(JobKind::try_from("send_mail".to_owned()).is_err());
        assert!(JobStatus::try_from("done".to_owned()).is_err());
    }

    #[test]
    fn interactive_kinds_never_share_a_queue_with_bulk_work() {
        assert_eq!(JobKind::LlmCompletion.policy().queue, QueueName::Interactive);
        assert_eq!(JobKind::GenerateTitle.policy().queue, QueueName::Interactive);
        assert_eq!(JobKind::ApiCompletion.policy().queue, QueueName::Interactive);
        assert_eq!(JobKind::SendEmail.policy().queue, QueueName::Default);
    }
}
