//! Calls of the OpenAI-compatible chat completions endpoint: the request an `api_completion`
//! job runs (the answer is the job's result).

use super::Exec;
use crate::error::StoreError;
use crate::ids::{ApiCompletionId, ApiKeyId, LlmConfigId, MessageId, UserId};
use crate::llm::ChatMessage;
use crate::time::{Timestamp, now_ms};
use serde::{Deserialize, Serialize};

const COLUMNS: &str =
    "id, user_id, api_key_id, config_id, request, message_id, prompt_tokens, completion_tokens, created_at, updated_at";

/// What the model is asked, as the endpoint parsed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Vec<String>,
}

/// A stored call. An id that does not parse fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiCompletion {
    #[sqlx(try_from = "String")]
    pub id: ApiCompletionId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub api_key_id: Option<ApiKeyId>,
    /// `None` once the config is deleted.
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub config_id: Option<LlmConfigId>,
    /// A [`CompletionRequest`] in JSON.
    pub request: String,
    /// The chat reply this call also fills, when it opted into a chat session.
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub message_id: Option<MessageId>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ApiCompletion {
    pub fn request(&self) -> Result<CompletionRequest, StoreError> {
        serde_json::from_str(&self.request)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("malformed completion request: {e}")))
    }
}

/// What a call writes.
#[derive(Debug)]
pub struct NewApiCompletion<'a> {
    pub user: UserId,
    pub api_key: Option<ApiKeyId>,
    pub config: LlmConfigId,
    pub request: &'a CompletionRequest,
    pub message_id: Option<MessageId>,
}

pub async fn insert<'e, E: Exec<'e>>(ex: E, new: NewApiCompletion<'_>) -> Result<ApiCompletionId, StoreError> {
    let id = ApiCompletionId::new();
    let request = serde_json::to_string(new.request).map_err(anyhow::Error::from)?;
    sqlx::query(
        "insert into api_completions (id, user_id, api_key_id, config_id, request, message_id, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id.to_string())
    .bind(new.user.to_string())
    .bind(new.api_key.map(|k| k.to_string()))
    .bind(new.config.to_string())
    .bind(request)
    .bind(new.message_id.map(|m| m.to_string()))
    .bind(now_ms())
    .execute(ex)
    .await
    .map_err(StoreError::from)?;
    Ok(id)
}

pub async fn get<'e, E: Exec<'e>>(ex: E, id: ApiCompletionId) -> Result<Option<ApiCompletion>, StoreError> {
    let sql = format!("select {COLUMNS} from api_completions where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

/// Records the tokens a finished call used.
pub async fn set_usage<'e, E: Exec<'e>>(
    ex: E,
    id: ApiCompletionId,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query("update api_completions set prompt_tokens = $2, completion_tokens = $3, updated_at = $4 where id = $1")
        .bind(id.to_string())
        .bind(prompt_tokens)
        .bind(completion_tokens)
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}
