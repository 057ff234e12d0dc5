//! A small SSE client for tests: reads frames until the stream ends.

use super::TestApp;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// Parses complete frames out of `buffer`, leaving a partial one in place.
pub fn parse_frames(buffer: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let frame: String = buffer.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            out.push(SseEvent { id, event, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
        }
    }
    out
}

/// Every event of the stream at `path` (after `last_event_id`) until the server ends it.
pub async fn collect(app: &TestApp, token: &str, path: &str, last_event_id: Option<i64>) -> Vec<SseEvent> {
    read(open(app, token, path, last_event_id).await).await
}

async fn open(app: &TestApp, token: &str, path: &str, last_event_id: Option<i64>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    req.send().await.unwrap()
}

/// The first `n` events of the stream, then the connection is dropped.
pub async fn take(app: &TestApp, token: &str, path: &str, last_event_id: Option<i64>, n: usize) -> Vec<SseEvent> {
    let mut body = open(app, token, path, last_event_id).await.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next()).await.expect("an event in time");
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream goes on").unwrap()));
        events.extend(parse_frames(&mut buffer));
    }
    events.truncate(n);
    events
}

/// Every event of an SSE response until the server ends it.
pub async fn read(res: reqwest::Response) -> Vec<SseEvent> {
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = res.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => {
                buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                events.extend(parse_frames(&mut buffer));
            }
            Ok(None) => return events,
            Err(_) => panic!("the stream did not end in time; got {events:?}"),
        }
    }
}
