//! The payload of each job kind (ids only: handlers re-read the rows) and its policy.

use super::{JobKind, JobSpec, JobStatus, QueueName};
use crate::error::StoreError;
use crate::store::chat;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use std::time::Duration;

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

impl JobSpec for SendEmail {
    const KIND: JobKind = JobKind::SendEmail;
    const QUEUE: QueueName = QueueName::Default;
    const MAX_ATTEMPTS: u32 = 8;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const BASE_BACKOFF: Duration = Duration::from_secs(2);
    const MAX_BACKOFF: Duration = Duration::from_secs(600);
}

/// `process_avatar`: an uploaded file waiting under `upload_key` in the media store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessAvatar {
    pub user_id: crate::ids::UserId,
    pub upload_key: String,
}

impl JobSpec for ProcessAvatar {
    const KIND: JobKind = JobKind::ProcessAvatar;
    const QUEUE: QueueName = QueueName::Default;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const BASE_BACKOFF: Duration = Duration::from_secs(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
}

/// `llm_completion`: fills in a pending assistant message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmCompletion {
    pub message_id: String,
}

impl JobSpec for LlmCompletion {
    const KIND: JobKind = JobKind::LlmCompletion;
    const QUEUE: QueueName = QueueName::Interactive;
    const MAX_ATTEMPTS: u32 = 4;
    const TIMEOUT: Duration = Duration::from_secs(600);
    const BASE_BACKOFF: Duration = Duration::from_secs(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);

    /// A reply whose generation ended without finishing is marked failed or cancelled,
    /// keeping whatever text it had.
    async fn on_end(&self, conn: &mut AnyConnection, status: JobStatus, error: Option<&str>) -> Result<(), StoreError> {
        let message_status = if status == JobStatus::Cancelled { "cancelled" } else { "failed" };
        chat::close_open_reply(conn, &self.message_id, message_status, error).await
    }
}

/// `generate_title`: titles a session from its first exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateTitle {
    pub session_id: String,
}

impl JobSpec for GenerateTitle {
    const KIND: JobKind = JobKind::GenerateTitle;
    const QUEUE: QueueName = QueueName::Interactive;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const BASE_BACKOFF: Duration = Duration::from_secs(2);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
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

impl JobSpec for Noop {
    const KIND: JobKind = JobKind::Noop;
    const QUEUE: QueueName = QueueName::Default;
    const MAX_ATTEMPTS: u32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(120);
    const BASE_BACKOFF: Duration = Duration::from_millis(200);
    const MAX_BACKOFF: Duration = Duration::from_secs(10);
}
