//! Answering a chat completion from its job: the whole completion once the job is done, or
//! its events as OpenAI's `chat.completion.chunk`s. The job runs on if the client goes away.

use super::OpenAiError;
use crate::sse::event_feed;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use parley_shared::ids::JobId;
use parley_shared::store::job_events::{EventType, JobEvent};
use serde::Serialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use utoipa::ToSchema;

/// A comment line sent this often keeps idle proxies from closing a stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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

/// What every chunk of one completion repeats.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub id: String,
    pub created: i64,
    pub model: String,
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
pub async fn whole_response(state: &AppState, job: JobId, meta: &ChunkMeta) -> Result<Response, OpenAiError> {
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
pub fn stream_response(state: AppState, job: JobId, meta: ChunkMeta, include_usage: bool) -> Response {
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

    #[test]
    fn provider_finish_reasons_become_openais() {
        assert_eq!(finish_reason(Some("end_turn")), "stop");
        assert_eq!(finish_reason(Some("max_tokens")), "length");
        assert_eq!(finish_reason(Some("length")), "length");
        assert_eq!(finish_reason(None), "stop");
    }
}
