//! The OpenAI-compatible endpoints, so OpenAI's SDKs and tools can use Parley as their
//! endpoint: `GET /v1/models` and `POST /v1/chat/completions` (streamed or not).
//!
//! A completion is a durable `api_completion` job like a chat reply (retries, cancellation,
//! `/api/jobs/` with its events): the response carries its id in `X-Parley-Job-Id`, so a
//! client that lost the connection can fetch the answer from the job or resume its events.
//! Requests authenticate with a personal API key; errors come in OpenAI's shape.

use crate::idempotency::IdempotencyKey;
use crate::sse::event_feed;
use crate::state::AppState;
use crate::v1::{ApiKeyAuth, OpenAiError, OpenAiErrorEnvelope};
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestAssistantMessageContentPart,
    ChatCompletionRequestDeveloperMessageContent, ChatCompletionRequestDeveloperMessageContentPart,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestSystemMessageContentPart, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, CreateChatCompletionRequest, StopConfiguration,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::auth::api_keys::Scope;
use parley_shared::ids::{ApiCompletionId, ChatSessionId, JobId};
use parley_shared::jobs::{ApiCompletion, JobSpec};
use parley_shared::llm::{ChatMessage, Role};
use parley_shared::store::api_completions::CompletionRequest;
use parley_shared::store::job_events::{EventType, JobEvent};
use parley_shared::store::llm_configs;
use parley_shared::usecases::api_completion::{self, SessionPick, StartCompletion, StartError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;

/// The header naming the job that answers a completion.
pub const JOB_HEADER: &str = "x-parley-job-id";
/// The request header that keeps the conversation as a chat session: `new` or a session id.
pub const SESSION_HEADER: &str = "x-parley-session";
/// The response header naming that session.
pub const SESSION_ID_HEADER: &str = "x-parley-session-id";
/// OpenAI's limit on stop sequences.
const MAX_STOP: usize = 4;
/// A comment line sent this often keeps idle proxies from closing a stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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

/// The enabled models (LLM configs), by name. Needs the `read` or `chat` scope.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("api_key" = [])), responses(
    (status = 200, body = OpenAiModelList),
    (status = 401, description = "missing, unknown, revoked or expired key", body = OpenAiErrorEnvelope),
    (status = 403, description = "the key lacks the scope", body = OpenAiErrorEnvelope),
    (status = 429, description = "the key's rate limit (see Retry-After)", body = OpenAiErrorEnvelope)))]
pub async fn list_models(State(state): State<AppState>, auth: ApiKeyAuth) -> Result<Response, OpenAiError> {
    auth.require(Scope::Read)?;
    let configs = llm_configs::list(&state.db.pool, true).await?;
    let data = configs
        .into_iter()
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

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionMessage {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionChoice {
    pub index: u32,
    pub message: ChatCompletionMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// A whole completion (`stream` false).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatCompletionChoice>,
    pub usage: Option<CompletionUsage>,
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
    (status = 403, description = "the key lacks the `chat` scope, or the model is not enabled", body = OpenAiErrorEnvelope),
    (status = 404, description = "unknown model or session", body = OpenAiErrorEnvelope),
    (status = 413, description = "the body is too large", body = OpenAiErrorEnvelope),
    (status = 429, description = "the key's rate limit (see Retry-After)", body = OpenAiErrorEnvelope),
    (status = 502, description = "the provider failed after the job's retries", body = OpenAiErrorEnvelope),
    (status = 503, description = "the job could not run (no usable model)", body = OpenAiErrorEnvelope)))]
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
    let session = session_pick(&headers)?;
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
    };
    let started = api_completion::start(&mut tx, call).await.map_err(|e| match e {
        StartError::SessionNotFound => OpenAiError::not_found("session_not_found", "No such chat session."),
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

/// A request as the job runs it, and how to answer.
#[derive(Debug)]
struct ParsedRequest {
    request: CompletionRequest,
    stream: bool,
    include_usage: bool,
}

/// Reads what Parley serves out of OpenAI's request; what it cannot serve is a 400 naming
/// the field, never silently dropped.
fn parse_request(raw: &CreateChatCompletionRequest, max_chars: usize) -> Result<ParsedRequest, OpenAiError> {
    if raw.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::unsupported("n", "Only one choice (`n` = 1) is supported."));
    }
    if raw.tools.as_ref().is_some_and(|t| !t.is_empty()) || raw.tool_choice.is_some() {
        return Err(OpenAiError::unsupported("tools", "Tools are not supported."));
    }
    #[expect(deprecated, reason = "the old function-calling fields are refused like tools")]
    if raw.functions.as_ref().is_some_and(|f| !f.is_empty()) || raw.function_call.is_some() {
        return Err(OpenAiError::unsupported("functions", "Function calling is not supported."));
    }
    if raw.audio.is_some() {
        return Err(OpenAiError::unsupported("audio", "Audio output is not supported."));
    }
    if raw.logprobs == Some(true) {
        return Err(OpenAiError::unsupported("logprobs", "Log probabilities are not supported."));
    }
    if raw.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(OpenAiError::invalid(Some("temperature"), "`temperature` must be between 0 and 2."));
    }
    if raw.messages.is_empty() {
        return Err(OpenAiError::invalid(Some("messages"), "`messages` must hold at least one message."));
    }
    let mut messages = Vec::with_capacity(raw.messages.len());
    for message in &raw.messages {
        let message = to_chat_message(message)?;
        if message.content.chars().count() > max_chars {
            return Err(OpenAiError::invalid(
                Some("messages"),
                format!("A message is longer than {max_chars} characters."),
            ));
        }
        messages.push(message);
    }
    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(OpenAiError::invalid(Some("messages"), "`messages` must hold a user message."));
    }
    let stop = match &raw.stop {
        None => Vec::new(),
        Some(StopConfiguration::String(s)) => vec![s.clone()],
        Some(StopConfiguration::StringArray(list)) => list.clone(),
    };
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    if stop.len() > MAX_STOP {
        return Err(OpenAiError::invalid(Some("stop"), format!("At most {MAX_STOP} stop sequences.")));
    }
    #[expect(deprecated, reason = "`max_tokens` is deprecated by OpenAI but still sent by many clients")]
    let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    if max_tokens == Some(0) {
        return Err(OpenAiError::invalid(Some("max_tokens"), "`max_tokens` must be at least 1."));
    }
    Ok(ParsedRequest {
        request: CompletionRequest { messages, temperature: raw.temperature, max_tokens, stop },
        stream: raw.stream == Some(true),
        include_usage: raw.stream_options.and_then(|o| o.include_usage) == Some(true),
    })
}

/// One message as text; images, audio, files, tool and function messages are refused.
fn to_chat_message(message: &ChatCompletionRequestMessage) -> Result<ChatMessage, OpenAiError> {
    let not_text =
        || OpenAiError::unsupported("messages", "Only text content is supported (no images, audio or files).");
    let joined = |parts: Vec<&str>| parts.concat();
    Ok(match message {
        ChatCompletionRequestMessage::System(m) => ChatMessage::system(match &m.content {
            ChatCompletionRequestSystemMessageContent::Text(t) => t.clone(),
            ChatCompletionRequestSystemMessageContent::Array(parts) => joined(
                parts.iter().map(|ChatCompletionRequestSystemMessageContentPart::Text(p)| p.text.as_str()).collect(),
            ),
        }),
        ChatCompletionRequestMessage::Developer(m) => ChatMessage::system(match &m.content {
            ChatCompletionRequestDeveloperMessageContent::Text(t) => t.clone(),
            ChatCompletionRequestDeveloperMessageContent::Array(parts) => joined(
                parts.iter().map(|ChatCompletionRequestDeveloperMessageContentPart::Text(p)| p.text.as_str()).collect(),
            ),
        }),
        ChatCompletionRequestMessage::User(m) => ChatMessage::user(match &m.content {
            ChatCompletionRequestUserMessageContent::Text(t) => t.clone(),
            ChatCompletionRequestUserMessageContent::Array(parts) => {
                let mut texts = Vec::new();
                for part in parts {
                    match part {
                        ChatCompletionRequestUserMessageContentPart::Text(p) => texts.push(p.text.as_str()),
                        _ => return Err(not_text()),
                    }
                }
                joined(texts)
            }
        }),
        ChatCompletionRequestMessage::Assistant(m) => {
            if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) || m.audio.is_some() {
                return Err(OpenAiError::unsupported("messages", "Tool calls and audio are not supported."));
            }
            ChatMessage::assistant(match &m.content {
                None => String::new(),
                Some(ChatCompletionRequestAssistantMessageContent::Text(t)) => t.clone(),
                Some(ChatCompletionRequestAssistantMessageContent::Array(parts)) => joined(
                    parts
                        .iter()
                        .map(|p| match p {
                            ChatCompletionRequestAssistantMessageContentPart::Text(p) => p.text.as_str(),
                            ChatCompletionRequestAssistantMessageContentPart::Refusal(p) => p.refusal.as_str(),
                        })
                        .collect(),
                ),
            })
        }
        ChatCompletionRequestMessage::Tool(_) | ChatCompletionRequestMessage::Function(_) => {
            return Err(OpenAiError::unsupported("messages", "Tool and function messages are not supported."));
        }
    })
}

/// `X-Parley-Session`: absent (nothing kept), `new`, or a chat session id.
fn session_pick(headers: &HeaderMap) -> Result<SessionPick, OpenAiError> {
    let Some(value) = headers.get(SESSION_HEADER) else { return Ok(SessionPick::None) };
    let bad = || OpenAiError::invalid(None, "X-Parley-Session must be `new` or a chat session id.");
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value.eq_ignore_ascii_case("new") {
        return Ok(SessionPick::New);
    }
    value.parse().map(SessionPick::Existing).map_err(|_| bad())
}

/// What every chunk of one completion repeats.
#[derive(Debug, Clone)]
struct ChunkMeta {
    id: String,
    created: i64,
    model: String,
}

impl ChunkMeta {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> String {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        data(&chunk)
    }
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// OpenAI's name for why generation stopped (Anthropic says `end_turn`, `max_tokens`, ...).
fn finish_reason(provider: Option<&str>) -> &'static str {
    match provider {
        Some("length" | "max_tokens" | "model_length") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        _ => "stop",
    }
}

/// The usage of a finished job's result, if the provider reported it.
fn usage(result: &Value) -> Option<CompletionUsage> {
    let prompt_tokens = result["prompt_tokens"].as_i64()?;
    let completion_tokens = result["completion_tokens"].as_i64()?;
    Some(CompletionUsage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens })
}

/// The error a job that did not succeed answers with.
fn job_error(job: JobId, event: &JobEvent) -> OpenAiError {
    if event.event == EventType::Status {
        return OpenAiError {
            code: Some("job_cancelled"),
            ..OpenAiError::provider_failed(format!("The completion was cancelled (job {job})."))
        };
    }
    OpenAiError::provider_failed(format!(
        "The model's provider did not answer after the job's retries; GET /api/jobs/{job}/ holds the details."
    ))
}

/// Waits for the job and answers the whole completion.
async fn whole_response(state: &AppState, job: JobId, meta: &ChunkMeta) -> Result<Response, OpenAiError> {
    let mut feed = event_feed(state.clone(), job, 0);
    while let Some(event) = feed.recv().await {
        match event.event {
            EventType::Done => {
                let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
                let result = &data["result"];
                let completion = ChatCompletion {
                    id: meta.id.clone(),
                    object: "chat.completion",
                    created: meta.created,
                    model: meta.model.clone(),
                    choices: vec![ChatCompletionChoice {
                        index: 0,
                        message: ChatCompletionMessage {
                            role: "assistant",
                            content: result["content"].as_str().unwrap_or_default().to_owned(),
                        },
                        finish_reason: finish_reason(result["finish_reason"].as_str()).to_owned(),
                        logprobs: None,
                    }],
                    usage: usage(result),
                };
                return Ok(axum::Json(completion).into_response());
            }
            _ if event.is_terminal() => return Err(job_error(job, &event)),
            _ => {}
        }
    }
    tracing::error!(job.id = %job, "an API completion's job ended without a final event");
    Err(OpenAiError::internal())
}

/// Streams the job's text as OpenAI chunks. The job runs on if the client goes away.
fn stream_response(state: AppState, job: JobId, meta: ChunkMeta, include_usage: bool) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let mut feed = event_feed(state, job, 0);
        let send = |text: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(text))).await.is_ok() }
        };
        if !send(meta.chunk(json!({"role": "assistant", "content": ""}), None, include_usage)).await {
            return;
        }
        let mut sent_text = false;
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        loop {
            let event = tokio::select! {
                event = feed.recv() => event,
                _ = keep_alive.tick() => {
                    if !send(": keep-alive\n\n".to_owned()).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                tracing::error!(job.id = %job, "an API completion's job ended without a final event");
                let _ = send(data(&json!(OpenAiError::internal().body()))).await;
                return;
            };
            let payload: Value = serde_json::from_str(&event.data).unwrap_or_default();
            let frame = match event.event {
                EventType::Delta => {
                    let Some(text) = payload["text"].as_str() else { continue };
                    sent_text = true;
                    meta.chunk(json!({"content": text}), None, include_usage)
                }
                EventType::Status if payload["status"] == "restarted" && sent_text => {
                    // The text sent cannot be taken back: the client learns where the whole
                    // answer will be.
                    let error = OpenAiError {
                        code: Some("generation_restarted"),
                        ..OpenAiError::provider_failed(format!(
                            "The provider failed mid-answer and the job restarted it; GET /api/jobs/{job}/ holds the whole answer once it is done."
                        ))
                    };
                    let _ = send(data(&json!(error.body()))).await;
                    return;
                }
                EventType::Done => {
                    let result = &payload["result"];
                    let reason = finish_reason(result["finish_reason"].as_str());
                    if !send(meta.chunk(json!({}), Some(reason), include_usage)).await {
                        return;
                    }
                    if include_usage {
                        let usage = usage(result).map(|u| json!(u)).unwrap_or(Value::Null);
                        let chunk = json!({
                            "id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
                            "model": meta.model, "choices": [], "usage": usage,
                        });
                        if !send(data(&chunk)).await {
                            return;
                        }
                    }
                    let _ = send("data: [DONE]\n\n".to_owned()).await;
                    return;
                }
                _ if event.is_terminal() => {
                    let _ = send(data(&json!(job_error(job, &event).body()))).await;
                    return;
                }
                _ => continue,
            };
            if !send(frame).await {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap_or_else(|_| OpenAiError::internal().into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<ParsedRequest, OpenAiError> {
        parse_request(&serde_json::from_value(body).unwrap(), 1000)
    }

    #[test]
    fn text_messages_and_sampling_fields_are_read() {
        let parsed = request(json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.5, "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "user": "u1",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": "Bye"},
            ],
        }))
        .unwrap();
        assert!(parsed.stream && parsed.include_usage);
        let r = parsed.request;
        assert_eq!((r.temperature, r.max_tokens, r.stop), (Some(0.5), Some(20), vec!["END".to_owned()]));
        assert_eq!(
            r.messages,
            [
                ChatMessage::system("Be brief."),
                ChatMessage::user("Hello"),
                ChatMessage::assistant("Hi"),
                ChatMessage::user("Bye")
            ]
        );
    }

    #[test]
    fn what_cannot_be_served_is_refused_naming_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let image =
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]);
        let tool = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let cases = [
            (json!({"model": "m", "messages": user, "n": 2}), "n"),
            (json!({"model": "m", "messages": user, "tools": tool}), "tools"),
            (json!({"model": "m", "messages": image}), "messages"),
            (json!({"model": "m", "messages": user, "temperature": 3.0}), "temperature"),
            (json!({"model": "m", "messages": []}), "messages"),
            (json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}), "messages"),
            (json!({"model": "m", "messages": user, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        ];
        for (body, param) in cases {
            let err = request(body.clone()).unwrap_err();
            assert_eq!((err.status, err.param), (StatusCode::BAD_REQUEST, Some(param)), "{body}");
        }
    }

    #[test]
    fn provider_finish_reasons_become_openais() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("length")), "length");
        assert_eq!(finish_reason(None), "stop");
    }

    #[test]
    fn the_session_header_is_new_or_a_session_id() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_pick(&headers).unwrap(), SessionPick::None);
        headers.insert(SESSION_HEADER, HeaderValue::from_static("new"));
        assert_eq!(session_pick(&headers).unwrap(), SessionPick::New);
        headers.insert(SESSION_HEADER, HeaderValue::from_static("nope"));
        assert_eq!(session_pick(&headers).unwrap_err().status, StatusCode::BAD_REQUEST);
        let id = parley_shared::ids::ChatSessionId::new();
        headers.insert(SESSION_HEADER, HeaderValue::from_str(&id.to_string()).unwrap());
        assert_eq!(session_pick(&headers).unwrap(), SessionPick::Existing(id));
    }
}
