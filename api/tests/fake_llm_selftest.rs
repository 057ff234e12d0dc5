//! Self-tests of the fake LLM providers in `common::fake_llm`, with a plain HTTP client.

mod common;

use common::fake_llm::{FakeLlm, Step};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One SSE frame as it arrived.
#[derive(Debug)]
struct Frame {
    at: Instant,
    event: Option<String>,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {}", self.data))
    }
}

/// Moves the complete frames of `buffer` into `frames`, stamped `at`.
fn take_frames(buffer: &mut String, at: Instant, frames: &mut Vec<Frame>) {
    while let Some(end) = buffer.find("\n\n") {
        let raw: String = buffer.drain(..end + 2).collect();
        let (mut event, mut data) = (None, String::new());
        for line in raw.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        frames.push(Frame { at, event, data });
    }
}

/// Every frame of the stream until the server ends it (panics after 10 s).
async fn read_frames(res: reqwest::Response) -> Vec<Frame> {
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = res.bytes_stream();
    let (mut buffer, mut frames) = (String::new(), Vec::new());
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.next()).await {
            Ok(Some(chunk)) => {
                buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                take_frames(&mut buffer, Instant::now(), &mut frames);
            }
            Ok(None) => {
                assert!(buffer.is_empty(), "a partial frame at the end: {buffer:?}");
                return frames;
            }
            Err(_) => panic!("the stream did not end in time; got {frames:?}"),
        }
    }
}

fn openai_request(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}],
    })
}

fn anthropic_request(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

fn content(frame: &Frame) -> String {
    frame.json()["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn openai_reply_streams_chunks_in_order_then_finish_usage_and_done() {
    let step = Step::Reply {
        chunks: vec!["Hel".into(), "lo".into(), " world".into()],
        first_token_ms: 60,
        between_ms: 40,
        prompt_tokens: 11,
        completion_tokens: 3,
    };
    let llm = FakeLlm::openai(vec![step]).await;
    assert!(llm.base_url().starts_with("http://127.0.0.1:") && llm.base_url().ends_with("/v1"));
    let sent = Instant::now();
    let res = reqwest::Client::new().post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
    let frames = read_frames(res).await;

    assert_eq!(frames.len(), 6, "{frames:?}");
    let texts: Vec<String> = frames[..3].iter().map(content).collect();
    assert_eq!(texts, ["Hel", "lo", " world"]);
    for frame in &frames[..3] {
        let chunk = frame.json();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    let finish = frames[3].json();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = frames[4].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}));
    assert_eq!(frames[5].data, "[DONE]");
    // The delays are real: sleeps only ever make things later, so lower bounds are safe.
    assert!(frames[0].at - sent >= Duration::from_millis(60));
    assert!(frames[2].at - sent >= Duration::from_millis(140));
    assert!(frames.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn openai_usage_chunk_only_when_asked_for() {
    let llm = FakeLlm::openai(vec![Step::reply(&["a", "b"])]).await;
    let mut request = openai_request(true);
    request.as_object_mut().unwrap().remove("stream_options");
    let res = reqwest::Client::new().post(llm.endpoint()).json(&request).send().await.unwrap();
    let frames = read_frames(res).await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[2].json()["choices"][0]["finish_reason"], "stop");
    assert!(frames.iter().all(|f| f.data == "[DONE]" || f.json().get("usage").is_none()));
    assert_eq!(frames[3].data, "[DONE]");
}

#[tokio::test]
async fn error_step_answers_status_retry_after_and_provider_body() {
    let client = reqwest::Client::new();
    let llm =
        FakeLlm::openai(vec![Step::error(429, "Rate limit reached", Some(3)), Step::error(500, "boom", None)]).await;
    let res = client.post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Rate limit reached");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["type"].is_string());

    let res = client.post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("retry-after").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "boom");
    assert_eq!(body["error"]["type"], "server_error");

    let llm = FakeLlm::anthropic(vec![Step::error(529, "Overloaded", Some(10))]).await;
    let res = client.post(llm.endpoint()).json(&anthropic_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 529);
    assert_eq!(res.headers()["retry-after"], "10");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
}

#[tokio::test]
async fn the_last_step_repeats() {
    let client = reqwest::Client::new();
    let llm = FakeLlm::openai(vec![Step::error(503, "busy", None), Step::reply(&["ok"])]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = client.post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
        statuses.push(res.status().as_u16());
        let _ = res.bytes().await;
    }
    assert_eq!(statuses, [503, 200, 200]);
    assert_eq!((llm.request_count(), llm.steps_taken()), (3, 3));
}

#[tokio::test]
async fn stall_sends_the_first_chunks_then_nothing() {
    let llm = FakeLlm::openai(vec![Step::stall_forever(&["Hel"])]).await;
    let res = reqwest::Client::new().post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let (mut buffer, mut frames) = (String::new(), Vec::new());
    while frames.is_empty() {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("the first chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
        take_frames(&mut buffer, Instant::now(), &mut frames);
    }
    assert_eq!(frames.len(), 1);
    assert_eq!(content(&frames[0]), "Hel");
    let silence = tokio::time::timeout(Duration::from_millis(400), body.next()).await;
    assert!(silence.is_err(), "expected silence, got {silence:?}");

    // The fake notices when the client gives up on the stalled stream.
    drop(body);
    llm.wait_for_disconnects(1, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_finite_stall_ends_the_body_without_done() {
    let llm = FakeLlm::anthropic(vec![Step::stall(&["par"], 150)]).await;
    let sent = Instant::now();
    let res = reqwest::Client::new().post(llm.endpoint()).json(&anthropic_request(true)).send().await.unwrap();
    let frames = read_frames(res).await;
    let events: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(events, ["message_start", "content_block_start", "ping", "content_block_delta"]);
    assert_eq!(frames[3].json()["delta"]["text"], "par");
    assert!(sent.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn require_key_rejects_without_taking_a_step() {
    let client = reqwest::Client::new();
    let llm =
        FakeLlm::openai(vec![Step::error(500, "first step", None), Step::reply(&["ok"])]).await.require_key("sk-good");

    let res = client.post(llm.endpoint()).json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["message"].as_str().unwrap().contains("API key"));
    let res = client.post(llm.endpoint()).bearer_auth("sk-bad").json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(llm.steps_taken(), 0);

    let res = client.post(llm.endpoint()).bearer_auth("sk-good").json(&openai_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 500, "the first step is still next");
    let res = client.post(llm.endpoint()).bearer_auth("sk-good").json(&openai_request(true)).send().await.unwrap();
    let frames = read_frames(res).await;
    assert_eq!(content(&frames[0]), "ok");
    assert_eq!((llm.request_count(), llm.steps_taken()), (4, 2));

    let llm = FakeLlm::anthropic(vec![Step::reply(&["ok"])]).await.require_key("sk-ant");
    let res = client.post(llm.endpoint()).bearer_auth("sk-ant").json(&anthropic_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 401, "Anthropic wants x-api-key, not a bearer token");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let res =
        client.post(llm.endpoint()).header("x-api-key", "sk-ant").json(&anthropic_request(true)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(llm.steps_taken(), 1);
}

#[tokio::test]
async fn anthropic_reply_emits_the_event_sequence() {
    let step = Step::Reply {
        chunks: vec!["Bon".into(), "jour".into()],
        first_token_ms: 30,
        between_ms: 30,
        prompt_tokens: 12,
        completion_tokens: 2,
    };
    let llm = FakeLlm::anthropic(vec![step]).await;
    assert!(!llm.base_url().ends_with("/v1"));
    let res = reqwest::Client::new().post(llm.endpoint()).json(&anthropic_request(true)).send().await.unwrap();
    let frames = read_frames(res).await;
    let events: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for frame in &frames {
        assert_eq!(frame.json()["type"], frame.event.as_deref().unwrap(), "data.type matches the event name");
    }
    let start = frames[0].json();
    assert_eq!(start["message"]["model"], "claude-test");
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["usage"]["input_tokens"], 12);
    assert_eq!(frames[1].json()["content_block"], json!({"type": "text", "text": ""}));
    let texts: Vec<Value> = frames[3..5].iter().map(|f| f.json()["delta"].clone()).collect();
    assert_eq!(texts, [json!({"type": "text_delta", "text": "Bon"}), json!({"type": "text_delta", "text": "jour"})]);
    let delta = frames[6].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn non_streaming_requests_get_a_json_completion() {
    let client = reqwest::Client::new();
    let llm = FakeLlm::openai(vec![Step::reply(&["Hel", "lo"])]).await;
    let res = client.post(llm.endpoint()).json(&openai_request(false)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 9);

    let llm = FakeLlm::anthropic(vec![Step::reply(&["Hel", "lo"])]).await;
    let res = client.post(llm.endpoint()).json(&anthropic_request(false)).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(body["usage"], json!({"input_tokens": 7, "output_tokens": 2}));
}

#[tokio::test]
async fn requests_are_recorded_with_bodies_and_keys() {
    let client = reqwest::Client::new();
    let before = Instant::now();
    let llm = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
    let res = client.post(llm.endpoint()).bearer_auth("sk-one").json(&openai_request(true)).send().await.unwrap();
    let _ = res.bytes().await;
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, openai_request(true));
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-one"));
    assert_eq!(requests[0].api_key, None);
    assert!(requests[0].at >= before);

    let llm = FakeLlm::anthropic(vec![Step::reply(&["x"])]).await;
    for key in ["sk-a", "sk-b"] {
        let res = client
            .post(llm.endpoint())
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&anthropic_request(true))
            .send()
            .await
            .unwrap();
        let _ = res.bytes().await;
    }
    let requests = llm.wait_for_requests(2, Duration::from_secs(1)).await;
    assert_eq!(llm.request_count(), 2);
    let keys: Vec<_> = requests.iter().map(|r| r.api_key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["sk-a", "sk-b"]);
    assert_eq!(requests[1].body["model"], "claude-test");
    assert_eq!(requests[1].headers["anthropic-version"], "2023-06-01");
    assert!(requests[0].at <= requests[1].at);
}

#[tokio::test]
async fn dropping_the_fake_ends_open_streams_and_closes_the_port() {
    let llm = FakeLlm::openai(vec![Step::stall_forever(&["a"])]).await;
    let endpoint = llm.endpoint();
    let client = reqwest::Client::new();
    let res = client.post(&endpoint).json(&openai_request(true)).send().await.unwrap();
    drop(llm);
    let frames = read_frames(res).await;
    assert_eq!(content(&frames[0]), "a");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match reqwest::Client::new().post(&endpoint).json(&openai_request(true)).send().await {
            Err(e) => {
                assert!(e.is_connect(), "{e:?}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the fake still answers after being dropped"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
