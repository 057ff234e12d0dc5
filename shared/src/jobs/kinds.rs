//! The payload of each job kind (ids only: handlers re-read the rows) and its policy.

use super::{JobEnd, JobKind, JobSpec, JobStatus, QueueName};
use crate::error::StoreError;
use crate::ids::{ApiCompletionId, ChatSessionId, MessageId};
use crate::store::chat::{self, MessageStatus};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which email a `send_email` job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    VerifyEmail,
    PasswordReset,
    PasswordChanged,
    /// Someone tried to register with the address (enumeration-safe registration).
    RegistrationAttempt,
    /// A TOTP factor was confirmed.
    MfaEnabled,
    /// The user turned their TOTP factor off.
    MfaDisabled,
    /// An admin removed the user's TOTP factor.
    MfaRemovedByAdmin,
    RecoveryCodesRegenerated,
    /// A recovery code signed the user in.
    RecoveryCodeUsed,
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

    /// An upload that will never be processed (out of attempts, or cancelled) is removed.
    async fn on_end(&self, end: JobEnd<'_>) -> Result<(), StoreError> {
        if let Err(e) = end.media.delete(&self.upload_key).await {
            // Only an orphaned file is left; the job still ends.
            tracing::warn!(error = %e, "removing the upload of an avatar job that ended failed");
        }
        Ok(())
    }
}

/// `llm_completion`: fills in a pending assistant message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmCompletion {
    /// Stored as the id's text, as when it was a plain string, so queued payloads still parse.
    pub message_id: MessageId,
    /// The message's session, so the worker reads both at once; absent from payloads
    /// written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<ChatSessionId>,
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
    async fn on_end(&self, end: JobEnd<'_>) -> Result<(), StoreError> {
        let message_status =
            if end.status == JobStatus::Cancelled { MessageStatus::Cancelled } else { MessageStatus::Failed };
        chat::close_open_reply(end.conn, self.message_id, message_status, end.error).await
    }
}

/// `api_completion`: answers one call of the OpenAI-compatible chat completions endpoint, with
/// the retries, timeout and queue of a chat reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiCompletion {
    pub completion_id: ApiCompletionId,
    /// The chat reply it also fills, when the call opted into a chat session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
}

impl JobSpec for ApiCompletion {
    const KIND: JobKind = JobKind::ApiCompletion;
    const QUEUE: QueueName = LlmCompletion::QUEUE;
    const MAX_ATTEMPTS: u32 = LlmCompletion::MAX_ATTEMPTS;
    const TIMEOUT: Duration = LlmCompletion::TIMEOUT;
    const BASE_BACKOFF: Duration = LlmCompletion::BASE_BACKOFF;
    const MAX_BACKOFF: Duration = LlmCompletion::MAX_BACKOFF;

    /// A chat reply it was filling is closed as a chat reply's job would close it.
    async fn on_end(&self, end: JobEnd<'_>) -> Result<(), StoreError> {
        match self.message_id {
            Some(message_id) => LlmCompletion { message_id, session_id: None }.on_end(end).await,
            None => Ok(()),
        }
    }
}

/// `generate_title`: titles a session from its first exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateTitle {
    /// Stored as the id's text, like [`LlmCompletion::message_id`].
    pub session_id: ChatSessionId,
}

impl JobSpec for GenerateTitle {
    const KIND: JobKind = JobKind::GenerateTitle;
    const QUEUE: QueueName = QueueName::Interactive;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);
    const BASE_BACKOFF: Duration = Duration::from_secs(2);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
}

/// `export`: writes an export's file on the bulk queue, so it never delays chat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportData {
    pub export_id: crate::ids::ExportId,
}

impl JobSpec for ExportData {
    const KIND: JobKind = JobKind::Export;
    const QUEUE: QueueName = QueueName::Bulk;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(1800);
    const BASE_BACKOFF: Duration = Duration::from_secs(5);
    const MAX_BACKOFF: Duration = Duration::from_secs(120);
}

/// `scheduled`: one tick of a schedule's periodic work (see [`crate::schedules`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scheduled {
    pub schedule: crate::schedules::Schedule,
    /// The tick's start (Unix ms).
    pub tick: i64,
}

impl JobSpec for Scheduled {
    const KIND: JobKind = JobKind::Scheduled;
    const QUEUE: QueueName = QueueName::Bulk;
    const MAX_ATTEMPTS: u32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(600);
    const BASE_BACKOFF: Duration = Duration::from_secs(5);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
}

/// `noop`: optionally sleeps, and fails its first `fail_times` attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Noop {
    /// At most 600,000 (ten minutes).
    #[serde(default, deserialize_with = "crate::domain::numbers::integer")]
    #[schema(minimum = 0, maximum = 600000)]
    pub sleep_ms: u64,
    /// At most 1,000.
    #[serde(default, deserialize_with = "crate::domain::numbers::integer")]
    #[schema(minimum = 0, maximum = 1000)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_payloads_keep_their_string_ids() {
        let (message, session) = (MessageId::new(), ChatSessionId::new());
        let completion = serde_json::to_value(LlmCompletion { message_id: message, session_id: None }).unwrap();
        assert_eq!(completion, json!({"message_id": message.to_string()}));
        let title = serde_json::to_value(GenerateTitle { session_id: session }).unwrap();
        assert_eq!(title, json!({"session_id": session.to_string()}));
        // A payload queued before the ids were typed.
        let queued: LlmCompletion = serde_json::from_value(json!({"message_id": message.to_string()})).unwrap();
        assert_eq!(queued.message_id, message);
        assert_eq!(queued.session_id, None);
        let named = LlmCompletion { message_id: message, session_id: Some(session) };
        let named = serde_json::to_value(named).unwrap();
        assert_eq!(named, json!({"message_id": message.to_string(), "session_id": session.to_string()}));
    }

    #[test]
    fn a_chat_payload_whose_id_is_not_an_id_does_not_parse() {
        assert!(serde_json::from_value::<LlmCompletion>(json!({"message_id": "m-1"})).is_err());
    }
}
