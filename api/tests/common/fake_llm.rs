//! Wire-level fake LLM providers: real HTTP servers on `127.0.0.1:0` that speak the OpenAI
//! chat-completions API (`POST /v1/chat/completions`) or the Anthropic messages API
//! (`POST /v1/messages`), JSON and SSE, answering each request with the next scripted [`Step`]
//! (the last step repeats once the script runs out). Every request is recorded.
//!
//! ```ignore
//! let llm = FakeLlm::openai(vec![Step::error(429, "slow down", Some(1)), Step::reply(&["Hel", "lo"])])
//!     .await
//!     .require_key("sk-test");
//! // configure the app with llm.base_url() and the key, run a chat turn, then:
//! assert_eq!(llm.request_count(), 2);
//! ```
//!
//! Streaming (`"stream": true` in the request) gets `text/event-stream` with every frame flushed
//! as it is written, so delays are real. A request without `"stream": true` gets the provider's
//! plain JSON completion (after the same total delay). The server stops when the [`FakeLlm`] is
//! dropped: open streams (a stall included) end and the port closes.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// A stall this long (one day) means "forever" for any test.
pub const FOREVER_MS: u64 = 24 * 60 * 60 * 1000;

/// What the fake does with one request.
#[derive(Clone, Debug)]
pub enum Step {
    /// Streams `chunks` as text deltas: waits `first_token_ms` before the first chunk and
    /// `between_ms` between chunks; ends with finish_reason "stop", a usage record
    /// (`prompt_tokens`, `completion_tokens`) and `[DONE]` (OpenAI; the usage chunk only when
    /// the request set `stream_options.include_usage`) / `message_delta` + `message_stop`
    /// (Anthropic).
    Reply { chunks: Vec<String>, first_token_ms: u64, between_ms: u64, prompt_tokens: u32, completion_tokens: u32 },
    /// Answers `status` with a provider-style JSON error body and a `retry-after` header
    /// (seconds) when given.
    Error { status: u16, message: String, retry_after: Option<u64> },
    /// Sends the first `chunks` as deltas, then keeps the connection open without sending
    /// anything for `stall_ms` ([`FOREVER_MS`] for "forever"), then ends the body cleanly
    /// without the terminal frames (`[DONE]` / `message_stop`). A non-streaming request gets
    /// nothing for `stall_ms`, then the connection closes without a response.
    Stall { chunks: Vec<String>, stall_ms: u64 },
    /// Answers the whole completion as JSON (`content-type: application/json`) even to a
    /// streaming request, as some proxies do; usage (7, number of chunks).
    WholeJson { chunks: Vec<String> },
    /// Streams `chunks` as deltas, then an error object inside the stream and ends: OpenAI
    /// `data: {"error": error}`, Anthropic an `error` event `{"type": "error", "error": error}`.
    /// A non-streaming request gets `error` in a 500.
    StreamError { chunks: Vec<String>, error: Value },
}

impl Step {
    /// A reply streaming `chunks` without delays, usage (7, number of chunks).
    pub fn reply(chunks: &[&str]) -> Step {
        Step::reply_with_delays(chunks, 0, 0)
    }

    /// A reply streaming `chunks` with these delays, usage (7, number of chunks).
    pub fn reply_with_delays(chunks: &[&str], first_token_ms: u64, between_ms: u64) -> Step {
        Step::Reply {
            chunks: strings(chunks),
            first_token_ms,
            between_ms,
            prompt_tokens: 7,
            completion_tokens: chunks.len() as u32,
        }
    }

    /// An error answer with `status`, `message` and an optional `retry-after` (seconds).
    pub fn error(status: u16, message: &str, retry_after: Option<u64>) -> Step {
        Step::Error { status, message: message.to_owned(), retry_after }
    }

    /// Sends `chunks`, then nothing for `stall_ms`, then ends the body.
    pub fn stall(chunks: &[&str], stall_ms: u64) -> Step {
        Step::Stall { chunks: strings(chunks), stall_ms }
    }

    /// The whole completion of `chunks` as JSON, whether or not the request streams.
    pub fn whole_json(chunks: &[&str]) -> Step {
        Step::WholeJson { chunks: strings(chunks) }
    }

    /// Streams `chunks`, then the error object `error` inside the stream.
    pub fn stream_error(chunks: &[&str], error: Value) -> Step {
        Step::StreamError { chunks: strings(chunks), error }
    }

    /// Sends `chunks`, then nothing until the client goes away or the fake is dropped.
    pub fn stall_forever(chunks: &[&str]) -> Step {
        Step::stall(chunks, FOREVER_MS)
    }
}

fn strings(chunks: &[&str]) -> Vec<String> {
    chunks.iter().map(|c| (*c).to_owned()).collect()
}

/// One request as the fake received it (whether or not it was authorized).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The JSON body; a body that isn't JSON is kept as a JSON string.
    pub body: Value,
    /// The `Authorization` header (OpenAI: `Bearer <key>`).
    pub authorization: Option<String>,
    /// The `x-api-key` header (Anthropic).
    pub api_key: Option<String>,
    /// All request headers (`anthropic-version`, `content-type`, ...).
    pub headers: HeaderMap,
    /// When the request arrived.
    pub at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

struct Inner {
    provider: Provider,
    script: Vec<Step>,
    steps_taken: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    key: Mutex<Option<String>>,
    disconnects: AtomicUsize,
    /// Changes (errors) when the [`FakeLlm`] is dropped.
    shutdown: watch::Receiver<()>,
}

impl Inner {
    fn next_step(&self) -> Step {
        let i = self.steps_taken.fetch_add(1, Ordering::SeqCst);
        self.script[i.min(self.script.len() - 1)].clone()
    }
}

/// A fake provider listening on `127.0.0.1:<port>` until dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    inner: Arc<Inner>,
    /// Dropping it stops the server and ends open streams.
    _shutdown: watch::Sender<()>,
}

impl FakeLlm {
    /// An OpenAI-compatible fake: `POST /v1/chat/completions`; `base_url()` ends in `/v1`.
    pub async fn openai(script: Vec<Step>) -> FakeLlm {
        FakeLlm::start(Provider::OpenAi, script).await
    }

    /// An Anthropic fake: `POST /v1/messages`; `base_url()` is the bare origin.
    pub async fn anthropic(script: Vec<Step>) -> FakeLlm {
        FakeLlm::start(Provider::Anthropic, script).await
    }

    async fn start(provider: Provider, script: Vec<Step>) -> FakeLlm {
        assert!(!script.is_empty(), "a FakeLlm needs at least one step");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(());
        let inner = Arc::new(Inner {
            provider,
            script,
            steps_taken: AtomicUsize::new(0),
            requests: Mutex::default(),
            key: Mutex::default(),
            disconnects: AtomicUsize::new(0),
            shutdown: rx.clone(),
        });
        let path = match provider {
            Provider::OpenAi => "/v1/chat/completions",
            Provider::Anthropic => "/v1/messages",
        };
        let app = Router::new().route(path, post(handle)).with_state(inner.clone());
        let mut signal = rx;
        tokio::spawn(async move {
            let stopped = async move {
                let _ = signal.changed().await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
        });
        FakeLlm { addr, inner, _shutdown: tx }
    }

    /// Requires this key (OpenAI: `Authorization: Bearer <key>`; Anthropic: `x-api-key: <key>`).
    /// A request without it (or with another key) gets 401 with a provider-style "invalid API
    /// key" body; it is recorded but doesn't take a script step. Builder style:
    /// `FakeLlm::openai(script).await.require_key("sk-test")`.
    pub fn require_key(self, key: &str) -> Self {
        *self.inner.key.lock().unwrap() = Some(key.to_owned());
        self
    }

    pub fn provider(&self) -> Provider {
        self.inner.provider
    }

    /// What to configure the app with: `http://127.0.0.1:PORT/v1` (OpenAI) or
    /// `http://127.0.0.1:PORT` (Anthropic).
    pub fn base_url(&self) -> String {
        match self.inner.provider {
            Provider::OpenAi => format!("http://{}/v1", self.addr),
            Provider::Anthropic => format!("http://{}", self.addr),
        }
    }

    /// The full URL requests are POSTed to.
    pub fn endpoint(&self) -> String {
        match self.inner.provider {
            Provider::OpenAi => format!("{}/chat/completions", self.base_url()),
            Provider::Anthropic => format!("{}/v1/messages", self.base_url()),
        }
    }

    /// Every request received so far (including rejected ones), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// How many requests arrived (including ones rejected for a missing or wrong key).
    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// How many script steps were taken (requests that got past the key check).
    pub fn steps_taken(&self) -> usize {
        self.inner.steps_taken.load(Ordering::SeqCst)
    }

    /// How many streams the client closed before the fake finished them (e.g. a cancelled
    /// generation during a stall or between chunks).
    pub fn disconnects(&self) -> usize {
        self.inner.disconnects.load(Ordering::SeqCst)
    }

    /// Polls until `n` requests arrived and returns them; panics after `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "the fake LLM got {} of {n} requests", got.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until `n` client disconnects were seen; panics after `timeout`.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.disconnects() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake LLM saw {} of {n} disconnects",
                self.disconnects()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let authorization = header_string(&headers, "authorization");
    let api_key = header_string(&headers, "x-api-key");
    inner.requests.lock().unwrap().push(RecordedRequest {
        body: match &parsed {
            Ok(v) => v.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        },
        authorization: authorization.clone(),
        api_key: api_key.clone(),
        headers,
        at: Instant::now(),
    });
    let provider = inner.provider;
    let required = inner.key.lock().unwrap().clone();
    if let Some(key) = required {
        let authorized = match provider {
            Provider::OpenAi => authorization.as_deref() == Some(format!("Bearer {key}").as_str()),
            Provider::Anthropic => api_key.as_deref() == Some(key.as_str()),
        };
        if !authorized {
            let message = match provider {
                Provider::OpenAi => "Incorrect API key provided. You can find your API key in your account settings.",
                Provider::Anthropic => "invalid x-api-key",
            };
            return error_response(provider, 401, message, None);
        }
    }
    let Ok(request) = parsed else {
        return error_response(provider, 400, "We could not parse the JSON body of your request.", None);
    };
    let model = request["model"].as_str().unwrap_or("fake-model").to_owned();
    let streaming = request["stream"].as_bool() == Some(true);
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let mut shutdown = inner.shutdown.clone();
    match inner.next_step() {
        Step::Error { status, message, retry_after } => error_response(provider, status, &message, retry_after),
        Step::WholeJson { chunks } => {
            let completion_tokens = chunks.len() as u32;
            axum::Json(whole_body(provider, &model, &chunks.concat(), 7, completion_tokens)).into_response()
        }
        step if streaming => stream_response(inner, step, model, include_usage),
        Step::StreamError { error, .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": error}))).into_response()
        }
        Step::Reply { chunks, first_token_ms, between_ms, prompt_tokens, completion_tokens } => {
            let total = first_token_ms + between_ms * (chunks.len().saturating_sub(1) as u64);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(total.min(FOREVER_MS))) => {}
                _ = shutdown.changed() => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
            axum::Json(whole_body(provider, &model, &chunks.concat(), prompt_tokens, completion_tokens)).into_response()
        }
        Step::Stall { stall_ms, .. } => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(stall_ms.min(FOREVER_MS))) => {}
                _ = shutdown.changed() => {}
            }
            let cut =
                futures::stream::once(async { Err::<Bytes, _>(std::io::Error::other("the fake LLM cut the body")) });
            Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from_stream(cut)).unwrap()
        }
    }
}

/// The provider's non-streaming answer.
fn whole_body(provider: Provider, model: &str, text: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
    match provider {
        Provider::OpenAi => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage_openai(prompt_tokens, completion_tokens),
        }),
        Provider::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }),
    }
}

fn usage_openai(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
}

/// `(type, code)` of an OpenAI error with this status.
fn openai_error_kind(status: u16) -> (&'static str, Value) {
    match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("invalid_request_error", json!("unsupported_country_region_territory")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    }
}

/// The Anthropic error `type` for this status.
fn anthropic_error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

fn error_response(provider: Provider, status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).expect("a valid HTTP status");
    let body = match provider {
        Provider::OpenAi => {
            let (kind, code) = openai_error_kind(status);
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Provider::Anthropic => {
            json!({"type": "error", "error": {"type": anthropic_error_kind(status), "message": message}})
        }
    };
    let mut res = (code, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// Why a stream stopped early.
#[derive(Debug, PartialEq, Eq)]
enum Gone {
    Client,
    Server,
}

/// The writing end of one SSE response.
struct Out {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    shutdown: watch::Receiver<()>,
}

impl Out {
    async fn send(&mut self, frame: String) -> Result<(), Gone> {
        tokio::select! {
            sent = self.tx.send(Ok(Bytes::from(frame))) => sent.map_err(|_| Gone::Client),
            _ = self.shutdown.changed() => Err(Gone::Server),
        }
    }

    async fn pause(&mut self, ms: u64) -> Result<(), Gone> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms.min(FOREVER_MS))) => Ok(()),
            _ = self.tx.closed() => Err(Gone::Client),
            _ = self.shutdown.changed() => Err(Gone::Server),
        }
    }
}

fn stream_response(inner: Arc<Inner>, step: Step, model: String, include_usage: bool) -> Response {
    let (tx, rx) = mpsc::channel(64);
    let mut out = Out { tx, shutdown: inner.shutdown.clone() };
    tokio::spawn(async move {
        let result = match inner.provider {
            Provider::OpenAi => openai_stream(&mut out, step, &model, include_usage).await,
            Provider::Anthropic => anthropic_stream(&mut out, step, &model).await,
        };
        if result == Err(Gone::Client) {
            inner.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap()
}

fn openai_chunk(model: &str, delta: Value, finish_reason: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    format!("data: {chunk}\n\n")
}

fn text_delta(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

async fn openai_stream(out: &mut Out, step: Step, model: &str, include_usage: bool) -> Result<(), Gone> {
    match step {
        Step::Reply { chunks, first_token_ms, between_ms, prompt_tokens, completion_tokens } => {
            out.pause(first_token_ms).await?;
            for (i, text) in chunks.iter().enumerate() {
                if i > 0 {
                    out.pause(between_ms).await?;
                }
                out.send(openai_chunk(model, text_delta(text), Value::Null)).await?;
            }
            out.send(openai_chunk(model, json!({}), json!("stop"))).await?;
            if include_usage {
                let chunk = json!({
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": usage_openai(prompt_tokens, completion_tokens),
                });
                out.send(format!("data: {chunk}\n\n")).await?;
            }
            out.send("data: [DONE]\n\n".to_owned()).await
        }
        Step::Stall { chunks, stall_ms } => {
            for text in &chunks {
                out.send(openai_chunk(model, text_delta(text), Value::Null)).await?;
            }
            out.pause(stall_ms).await
        }
        Step::StreamError { chunks, error } => {
            for text in &chunks {
                out.send(openai_chunk(model, text_delta(text), Value::Null)).await?;
            }
            out.send(format!("data: {}\n\n", json!({"error": error}))).await
        }
        Step::Error { .. } | Step::WholeJson { .. } => unreachable!("answered before streaming"),
    }
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

async fn anthropic_preamble(out: &mut Out, model: &str, prompt_tokens: u32) -> Result<(), Gone> {
    let message = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
    });
    out.send(event("message_start", json!({"type": "message_start", "message": message}))).await?;
    let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    out.send(event("content_block_start", block)).await?;
    out.send(event("ping", json!({"type": "ping"}))).await
}

fn anthropic_delta(text: &str) -> String {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
    )
}

async fn anthropic_stream(out: &mut Out, step: Step, model: &str) -> Result<(), Gone> {
    match step {
        Step::Reply { chunks, first_token_ms, between_ms, prompt_tokens, completion_tokens } => {
            anthropic_preamble(out, model, prompt_tokens).await?;
            out.pause(first_token_ms).await?;
            for (i, text) in chunks.iter().enumerate() {
                if i > 0 {
                    out.pause(between_ms).await?;
                }
                out.send(anthropic_delta(text)).await?;
            }
            out.send(event("content_block_stop", json!({"type": "content_block_stop", "index": 0}))).await?;
            let delta = json!({
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": completion_tokens},
            });
            out.send(event("message_delta", delta)).await?;
            out.send(event("message_stop", json!({"type": "message_stop"}))).await
        }
        Step::Stall { chunks, stall_ms } => {
            anthropic_preamble(out, model, 7).await?;
            for text in &chunks {
                out.send(anthropic_delta(text)).await?;
            }
            out.pause(stall_ms).await
        }
        Step::StreamError { chunks, error } => {
            anthropic_preamble(out, model, 7).await?;
            for text in &chunks {
                out.send(anthropic_delta(text)).await?;
            }
            out.send(event("error", json!({"type": "error", "error": error}))).await
        }
        Step::Error { .. } | Step::WholeJson { .. } => unreachable!("answered before streaming"),
    }
}
