//! Job kinds: payloads (ids only) and, next to each kind, its retry policy, timeout and
//! queue. The `jobs` table row is what clients see; the queue only carries job ids.

mod backoff;
pub mod lifecycle;

pub use backoff::backoff_delay;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Every kind of job Parley runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    SendEmail,
    ProcessAvatar,
    /// Streams an assistant reply from the session's LLM.
    LlmCompletion,
    /// Names a chat session after its first exchange.
    GenerateTitle,
    /// Does nothing (or sleeps/fails as its payload says): for benchmarks and operations checks.
    Noop,
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
}

/// How a kind is run.
#[derive(Debug, Clone, Copy)]
pub struct JobPolicy {
    pub queue: QueueName,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// First retry delay; doubles each attempt, with jitter, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SendEmail => "send_email",
            JobKind::ProcessAvatar => "process_avatar",
            JobKind::LlmCompletion => "llm_completion",
            JobKind::GenerateTitle => "generate_title",
            JobKind::Noop => "noop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [JobKind::SendEmail, JobKind::ProcessAvatar, JobKind::LlmCompletion, JobKind::GenerateTitle, JobKind::Noop]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    pub fn policy(self) -> JobPolicy {
        match self {
            JobKind::SendEmail => JobPolicy {
                queue: QueueName::Default,
                max_attempts: 8,
                timeout: Duration::from_secs(60),
                base_backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(600),
            },
            JobKind::ProcessAvatar => JobPolicy {
                queue: QueueName::Default,
                max_attempts: 3,
                timeout: Duration::from_secs(60),
                base_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(30),
            },
            JobKind::LlmCompletion => JobPolicy {
                queue: QueueName::Interactive,
                max_attempts: 4,
                timeout: Duration::from_secs(600),
                base_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
            },
            JobKind::GenerateTitle => JobPolicy {
                queue: QueueName::Interactive,
                max_attempts: 3,
                timeout: Duration::from_secs(60),
                base_backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(30),
            },
            JobKind::Noop => JobPolicy {
                queue: QueueName::Default,
                max_attempts: 5,
                timeout: Duration::from_secs(120),
                base_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
            },
        }
    }
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

/// Which email a `send_email` job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    VerifyEmail,
    PasswordReset,
    PasswordChanged,
}

/// `send_email`: the job makes any token itself, so no secret sits in the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEmail {
    pub user_id: crate::ids::UserId,
    pub email: EmailKind,
}

/// `process_avatar`: an uploaded file waiting under `upload_key` in the media store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessAvatar {
    pub user_id: crate::ids::UserId,
    pub upload_key: String,
}

/// `llm_completion`: fills in a pending assistant message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmCompletion {
    pub message_id: String,
}

/// `generate_title`: titles a session from its first exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateTitle {
    pub session_id: String,
}

/// `noop`: optionally sleeps, and fails its first `fail_times` attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Noop {
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub fail_times: u32,
    /// Fail with an error that retrying cannot fix.
    #[serde(default)]
    pub fatal: bool,
}
