//! The OpenAI-compatible endpoints, so OpenAI's SDKs and tools can use Parley as their
//! endpoint: `GET /v1/models` and `POST /v1/chat/completions` (streamed or not).
//!
//! A completion is a durable `api_completion` job like a chat reply (retries, cancellation,
//! `/api/jobs/` with its events): the response carries its id in `X-Parley-Job-Id`, so a
//! client that lost the connection can fetch the answer from the job or resume its events.
//! Requests authenticate with a personal API key; errors come in OpenAI's shape.

use crate::idempotency::IdempotencyKey;
use crate::state::AppState;
use crate::v1::answer::{ChatCompletion, ChunkMeta, stream_response, whole_response};
use crate::v1::request::parse_request;
use crate::v1::{ApiKeyAuth, OpenAiError, OpenAiErrorEnvelope, request};
use async_openai::types::chat::CreateChatCompletionRequest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::auth::api_keys::Scope;
use parley_shared::ids::{ApiCompletionId, ChatSessionId, JobId};
use parley_shared::jobs::{ApiCompletion, JobSpec};
use parley_shared::store::llm_configs;
use parley_shared::usecases::api_completion::{self, StartCompletion, StartError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The header naming the job that answers a completion.
pub const JOB_HEADER: &str = "x-parley-job-id";
/// The response header naming the chat session a completion is kept in.
pub const SESSION_ID_HEADER: &str = "x-parley-session-id";

/// `max_message_chars` bounds each message; a request holds a whole conversation, so its
/// body may be larger than the general limit.
pub fn routes(max_message_chars: usize, max_json_body_bytes: usize) -> Router<AppState> {
    let body_limit = max_json_body_bytes.max(max_message_chars.saturating_mul(6).saturating_mul(16));
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions).layer(DefaultBodyLimit::max(body_limit)))
}

/// A model, as OpenAI lists them: `id` is the Parley config's name.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiModel {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<OpenAiModel>,
}

/// The enabled models (LLM configs) the key's owner may use, by name. Needs the `read` or
/// `chat` scope.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("api_key" = [])), responses(
    (status = 200, body = OpenAiModelList),
    (status = 401, description = "missing, unknown, revoked or expired key", body = OpenAiErrorEnvelope),
    (status = 403, description = "the key lacks the scope", body = OpenAiErrorEnvelope),
    (status = 429, description = "the key's rate limit (see Retry-After)", body = OpenAiErrorEnvelope)))]
pub async fn list_models(State(state): State<AppState>, auth: ApiKeyAuth) -> Result<Response, OpenAiError> {
    auth.require(Scope::Read)?;
    let configs = llm_configs::list(&state.db.pool, true).await?;
    let quota = parley_shared::store::quotas::get(&state.db.pool, auth.key.user_id).await?;
    let data = configs
        .into_iter()
        .filter(|c| quota.allows(c.id))
        .map(|c| OpenAiModel { id: c.name, object: "model", created: c.created_at.0.timestamp(), owned_by: "parley" })
        .collect();
    Ok(axum::Json(OpenAiModelList { object: "list", data }).into_response())
}

/// The request fields Parley reads (OpenAI's request type is parsed; fields it cannot serve,
/// such as `tools`, images or `n > 1`, get a 400).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequestDoc {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// `system`, `developer`, `user` and `assistant` messages; `content` is a string or an
    /// array of `{"type": "text", "text": ...}` parts.
    #[schema(min_items = 1)]
    pub messages: Vec<Value>,
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a usage chunk before `data: [DONE]`.
    pub stream_options: Option<Value>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// A string or up to four strings.
    pub stop: Option<Value>,
    pub user: Option<String>,
}

/// Creates a chat completion: a durable job whose id comes in `X-Parley-Job-Id`. With
/// `stream` true the answer is OpenAI's `data:` chunks, then `data: [DONE]`. Needs the
/// `chat` scope. `X-Parley-Session: new` (or a session id) keeps the conversation as a chat
/// session, named in `X-Parley-Session-Id`. A retry with the same `Idempotency-Key` answers
/// from the first request's job instead of starting another.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequestDoc,
    params(("X-Parley-Session" = Option<String>, Header, description = "`new`, or a chat session id to continue"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key answers from the first request's job")),
    security(("api_key" = [])), responses(
    (status = 200, body = ChatCompletion, description = "the completion; with `stream` true, `text/event-stream` chunks",
        headers(("X-Parley-Job-Id" = String, description = "the job answering the request"))),
    (status = 400, description = "invalid or unsupported request", body = OpenAiErrorEnvelope),
    (status = 401, description = "missing, unknown, revoked or expired key", body = OpenAiErrorEnvelope),
    (status = 403, description = "the key lacks the `chat` scope, the model is not enabled, or the account may not use it (`model_not_allowed`)", body = OpenAiErrorEnvelope),
    (status = 404, description = "unknown model or session", body = OpenAiErrorEnvelope),
    (status = 413, description = "the body is too large", body = OpenAiErrorEnvelope),
    (status = 429, description = "the key's rate limit, or `quota_exceeded`: a token budget is spent (type `insufficient_quota`; see Retry-After)", body = OpenAiErrorEnvelope),
    (status = 502, description = "the provider failed after the job's retries, or the job was cancelled", body = OpenAiErrorEnvelope)))]
pub async fn chat_completions(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAiError> {
    auth.require(Scope::Chat)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => OpenAiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..OpenAiError::invalid(None, "The request body is too large.")
        },
        _ => OpenAiError::invalid(None, rejection.body_text()),
    })?;
    let raw: CreateChatCompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::invalid(None, format!("The body is not a valid chat completion request: {e}")))?;
    let parsed = parse_request(&raw, state.config.llm_max_message_chars)?;
    let session = request::session_pick(&headers)?;
    let config = match llm_configs::by_name(&state.db.pool, &raw.model).await? {
        None => return Err(OpenAiError::model_not_found(&raw.model)),
        Some(c) if !c.enabled => {
            return Err(OpenAiError::forbidden(
                "model_not_allowed",
                format!("The model `{}` is not enabled.", raw.model),
            ));
        }
        Some(c) => c,
    };
    let user = auth.key.user_id;
    let key = IdempotencyKey::from_headers(&headers, format!("user:{user}:v1-chat-completions"))?;
    if let Some(key) = &key
        && let Some(first) = key.first_body(&state.db.pool).await?
    {
        return attach(state, &first, &raw.model, parsed.stream, parsed.include_usage).await;
    }
    let mut tx = state.db.begin_write().await?;
    let call = StartCompletion {
        user: auth.key.user_id,
        api_key: Some(auth.key.id),
        config: &config,
        request: &parsed.request,
        session,
        budgets: state.config.token_budgets,
    };
    let started = api_completion::start(&mut tx, call).await.map_err(|e| match e {
        StartError::SessionNotFound => OpenAiError::not_found("session_not_found", "No such chat session."),
        StartError::Quota(e) => e.into(),
        StartError::Store(e) => e.into(),
    })?;
    let first = Attached { job: started.job, completion: started.completion, session_id: started.session_id };
    if let Some(key) = &key
        && !key.store(&mut *tx, StatusCode::OK, &first).await?
    {
        // A concurrent retry with the same key started the call first.
        tx.rollback().await?;
        let first = key.first_body(&state.db.pool).await?.ok_or_else(OpenAiError::internal)?;
        return attach(state, &first, &raw.model, parsed.stream, parsed.include_usage).await;
    }
    tx.commit().await?;
    state.queue.wake(ApiCompletion::QUEUE);
    tracing::info!(job.id = %started.job, api_key.id = %auth.key.id, stream = parsed.stream, "API completion started");
    Ok(answer(state, &first, &raw.model, parsed.stream, parsed.include_usage).await)
}

/// The call a request started: what an `Idempotency-Key` stores, so that a retry of the
/// request answers from the same job.
#[derive(Debug, Serialize, Deserialize)]
struct Attached {
    #[serde(rename = "job_id")]
    job: JobId,
    #[serde(rename = "completion_id")]
    completion: ApiCompletionId,
    session_id: Option<ChatSessionId>,
}

/// Answers a retried request from the job of the first one.
async fn attach(
    state: AppState,
    first: &Value,
    model: &str,
    stream: bool,
    include_usage: bool,
) -> Result<Response, OpenAiError> {
    let first: Attached = serde_json::from_value(first.clone()).map_err(|e| {
        tracing::error!(error = %e, "an idempotency record of another shape");
        OpenAiError::internal()
    })?;
    Ok(answer(state, &first, model, stream, include_usage).await)
}

/// The job's answer, streamed or whole, with the headers naming the job and session.
async fn answer(state: AppState, call: &Attached, model: &str, stream: bool, include_usage: bool) -> Response {
    let meta = ChunkMeta {
        id: format!("chatcmpl-{}", call.completion),
        created: chrono::Utc::now().timestamp(),
        model: model.to_owned(),
    };
    let mut response = if stream {
        stream_response(state, call.job, meta, include_usage)
    } else {
        // An error after the job started still names it.
        whole_response(&state, call.job, &meta).await.unwrap_or_else(IntoResponse::into_response)
    };
    let headers = response.headers_mut();
    headers.insert(JOB_HEADER, header_value(&call.job.to_string()));
    if let Some(session) = call.session_id {
        headers.insert(SESSION_ID_HEADER, header_value(&session.to_string()));
    }
    response
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
