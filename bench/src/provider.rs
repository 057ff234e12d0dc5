//! A fake OpenAI-compatible provider served by the bench itself: `POST /v1/chat/completions`
//! streams real Chat Completions SSE chunks at a fixed pace, so what the `chat` scenario
//! measures beyond that pace is Parley's.
//!
//! A reply is `tok ` repeated: the first after `first_token`, then one every 1 / `rate`
//! seconds (on a fixed schedule, so a late token does not delay the next), then a finish
//! chunk, a usage chunk when `stream_options.include_usage` asks for one, and `data: [DONE]`.
//! Its length is the `tokens=N` written in the last user message (the default otherwise),
//! capped by `max_tokens`. A `mark=M` there names the reply: the provider keeps when it
//! actually sent that reply's first chunk, so what it was late itself is not counted as
//! Parley's.

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Json, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How replies are paced.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// From the request to the first token.
    pub first_token: Duration,
    /// Tokens per second after the first.
    pub rate: f64,
    /// Reply length when the message names none.
    pub default_tokens: usize,
}

impl Pace {
    /// The provider's gap between two tokens.
    pub fn gap(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }
}

/// The running provider; dropping it stops it.
pub struct FakeProvider {
    base_url: String,
    state: AppState,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    pace: Pace,
    requests: Arc<AtomicU64>,
    /// How late each token left its schedule, in milliseconds (this process was busy).
    lateness: Arc<Mutex<Vec<f64>>>,
    /// For each marked reply, from its request to its first chunk.
    first_chunks: Arc<Mutex<HashMap<String, Duration>>>,
}

impl FakeProvider {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start(pace: Pace) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the fake provider")?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let state = AppState { pace, requests: Arc::default(), lateness: Arc::default(), first_chunks: Arc::default() };
        let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(state.clone());
        // Small chunks spaced in time: do not let Nagle's algorithm hold them back.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("warning: the fake provider stopped: {e}");
            }
        });
        Ok(Self { base_url, state, task })
    }

    /// `http://127.0.0.1:<port>/v1`, the config's `base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Completion requests answered so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// From the request of the reply marked `mark` to its first chunk (and forgets it).
    pub fn take_first_chunk(&self, mark: &str) -> Option<Duration> {
        self.state.first_chunks.lock().ok().and_then(|mut m| m.remove(mark))
    }

    /// How late tokens left their schedule so far, sorted (milliseconds), and forgets them.
    pub fn take_lateness(&self) -> Vec<f64> {
        let mut lateness = self.state.lateness.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        lateness.sort_by(f64::total_cmp);
        lateness
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn completions(State(state): State<AppState>, Json(request): Json<Value>) -> Response {
    let start = Instant::now();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (pace, lateness, first_chunks) = (state.pace, state.lateness, state.first_chunks);
    let tokens = reply_tokens(&request, pace.default_tokens);
    let mark = reply_mark(&request);
    let usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let frames = futures::stream::unfold(0, move |k| {
        let (lateness, first_chunks, mark) = (lateness.clone(), first_chunks.clone(), mark.clone());
        async move {
            if k > tokens {
                return None;
            }
            if k == tokens {
                return Some((Ok::<_, Infallible>(Bytes::from(ending(tokens, usage))), k + 1));
            }
            let due = start + pace.first_token + pace.gap().mul_f64(k as f64);
            tokio::time::sleep_until(due).await;
            if let Ok(mut lateness) = lateness.lock() {
                lateness.push(due.elapsed().as_secs_f64() * 1000.0);
            }
            if k == 0
                && let Some(mark) = mark
                && let Ok(mut first_chunks) = first_chunks.lock()
            {
                first_chunks.insert(mark, start.elapsed());
            }
            Some((Ok(Bytes::from(data(&chunk(json!({"content": "tok "}), Value::Null)))), k + 1))
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(frames))
        .into_response()
}

/// The last user message's text.
fn last_user_text(request: &Value) -> &str {
    let messages = request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let last_user = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    last_user.and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or_default()
}

/// `mark=M` (up to the next space) from the last user message.
fn reply_mark(request: &Value) -> Option<String> {
    let (_, rest) = last_user_text(request).split_once("mark=")?;
    Some(rest.split_whitespace().next().unwrap_or_default().to_owned())
}

/// `tokens=N` from the last user message, or `default`; at most `max_tokens`.
fn reply_tokens(request: &Value, default: usize) -> usize {
    let text = last_user_text(request);
    let asked = text.split_once("tokens=").and_then(|(_, rest)| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    let cap = ["max_tokens", "max_completion_tokens"].iter().find_map(|k| request.get(*k).and_then(Value::as_u64));
    let tokens = asked.unwrap_or(default);
    cap.map_or(tokens, |cap| tokens.min(cap as usize))
}

fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    })
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// The finish chunk, the usage chunk if asked for, and the end marker.
fn ending(tokens: usize, usage: bool) -> String {
    let mut out = data(&chunk(json!({}), json!("stop")));
    if usage {
        let usage = json!({"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens});
        let value = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": usage});
        out.push_str(&data(&value));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_length_comes_from_the_last_user_message_capped_by_max_tokens() {
        let request = |text: &str, max: Option<u64>| {
            let mut r = json!({"messages": [
                {"role": "user", "content": "tokens=99"},
                {"role": "assistant", "content": "tok"},
                {"role": "user", "content": text},
            ]});
            if let Some(max) = max {
                r["max_tokens"] = json!(max);
            }
            r
        };
        assert_eq!(reply_tokens(&request("bench tokens=7", None), 40), 7);
        assert_eq!(reply_tokens(&request("bench tokens=7 mark=3", None), 40), 7);
        assert_eq!(reply_mark(&request("bench tokens=7 mark=3", None)).as_deref(), Some("3"));
        assert_eq!(reply_mark(&request("bench tokens=7", None)), None);
        assert_eq!(reply_tokens(&request("hello", None), 40), 40);
        assert_eq!(reply_tokens(&request("bench tokens=70", Some(32)), 40), 32);
        assert!(ending(3, true).contains(r#""completion_tokens":3"#));
        assert!(!ending(3, false).contains("usage") && ending(3, false).ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn streams_paced_chunks_that_end_with_done() {
        let pace = Pace { first_token: Duration::from_millis(20), rate: 100.0, default_tokens: 3 };
        let provider = FakeProvider::start(pace).await.unwrap();
        let url = format!("{}/chat/completions", provider.base_url());
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let start = std::time::Instant::now();
        let text = reqwest::Client::new().post(url).json(&body).send().await.unwrap().text().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40), "{:?}", start.elapsed());
        assert_eq!(text.matches(r#""content":"tok ""#).count(), 3);
        assert!(text.contains(r#""finish_reason":"stop""#) && text.ends_with("data: [DONE]\n\n"));
        assert_eq!(provider.requests(), 1);
        assert_eq!(provider.take_lateness().len(), 3);
        assert!(provider.take_lateness().is_empty());
    }
}
