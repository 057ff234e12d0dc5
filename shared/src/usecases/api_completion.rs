//! Starting a call of the OpenAI-compatible chat completions endpoint: the call's request is
//! stored and an `api_completion` job enqueued. The conversation is kept as a chat session
//! only when the caller opts in.

use super::chat::fallback_title;
use crate::error::StoreError;
use crate::ids::{ApiCompletionId, ApiKeyId, ChatSessionId, JobId, MessageId, UserId};
use crate::jobs::ApiCompletion;
use crate::llm::Role;
use crate::store::api_completions::{self, CompletionRequest, NewApiCompletion};
use crate::store::chat::{self, MessageRole, MessageStatus, NewMessage};
use crate::store::jobs;
use crate::store::llm_configs::LlmConfig;
use crate::usecases::quota::{self, DefaultBudgets, QuotaError};
use sqlx::AnyConnection;

/// Where a call's conversation is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionPick {
    /// Nowhere: only the call's record and its job.
    None,
    /// A new chat session, holding the call's user and assistant messages and the answer.
    New,
    /// This session of the caller's, which gets the call's last user message and the answer.
    Existing(ChatSessionId),
}

/// A call to start.
#[derive(Debug)]
pub struct StartCompletion<'a> {
    pub user: UserId,
    pub api_key: Option<ApiKeyId>,
    pub config: &'a LlmConfig,
    pub request: &'a CompletionRequest,
    pub session: SessionPick,
    /// The token budgets of users without their own.
    pub budgets: DefaultBudgets,
}

/// What starting wrote.
#[derive(Debug, Clone)]
pub struct Started {
    pub job: JobId,
    pub completion: ApiCompletionId,
    pub session_id: Option<ChatSessionId>,
    pub message_id: Option<MessageId>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no such session")]
    SessionNotFound,
    #[error(transparent)]
    Quota(QuotaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the call (and, when opted in, its chat messages) and its job in `tx`; the caller
/// commits, then wakes the interactive queue.
pub async fn start(tx: &mut AnyConnection, call: StartCompletion<'_>) -> Result<Started, StartError> {
    quota::check(&mut *tx, call.user, call.config.id, call.budgets).await.map_err(|e| match e {
        QuotaError::Store(e) => StartError::Store(e),
        e => StartError::Quota(e),
    })?;
    let turns: Vec<_> = call.request.messages.iter().filter(|m| m.role != Role::System).collect();
    let (session_id, message_id) = match call.session {
        SessionPick::None => (None, None),
        pick => {
            let (session, kept) = match pick {
                SessionPick::Existing(id) => {
                    let session =
                        chat::get_session(&mut *tx, id, call.user).await?.ok_or(StartError::SessionNotFound)?;
                    if session.config_id != Some(call.config.id) {
                        chat::set_session_config(&mut *tx, session.id, call.config.id).await?;
                    }
                    // The session holds the earlier turns: only the new question joins them.
                    (session, turns.iter().rev().find(|m| m.role == Role::User).into_iter().copied().collect())
                }
                _ => {
                    let first = turns.iter().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
                    let session =
                        chat::create_session(&mut *tx, call.user, Some(call.config.id), &fallback_title(first)).await?;
                    (session, turns.clone())
                }
            };
            let message = |role, content, status, model| NewMessage {
                id: MessageId::new(),
                session_id: session.id,
                user: call.user,
                role,
                content,
                status,
                model,
                job: None,
            };
            let mut messages: Vec<NewMessage> = kept
                .iter()
                .map(|turn| {
                    let role = if turn.role == Role::Assistant { MessageRole::Assistant } else { MessageRole::User };
                    message(role, &turn.content, MessageStatus::Complete, None)
                })
                .collect();
            let reply = message(MessageRole::Assistant, "", MessageStatus::Pending, Some(&call.config.model));
            let reply_id = reply.id;
            messages.push(reply);
            chat::insert_messages(&mut *tx, &messages).await?;
            chat::touch_session(&mut *tx, session.id).await?;
            (Some(session.id), Some(reply_id))
        }
    };
    let new = NewApiCompletion {
        user: call.user,
        api_key: call.api_key,
        config: call.config.id,
        request: call.request,
        message_id,
    };
    let completion = api_completions::insert(&mut *tx, new).await?;
    let job =
        jobs::enqueue(&mut *tx, Some(call.user), &ApiCompletion { completion_id: completion, message_id }).await?;
    if let Some(reply) = message_id {
        chat::set_message_job(&mut *tx, reply, job).await?;
    }
    Ok(Started { job, completion, session_id, message_id })
}
