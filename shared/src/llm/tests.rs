//! End-to-end tests of [`LlmClient`] against a wire-level fake: a TCP listener that reads
//! one HTTP/1.1 request and writes a scripted response, byte for byte.

use super::*;
use futures::StreamExt;
use secrecy::SecretString;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const STALL: Duration = Duration::from_millis(300);

enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// Keep the connection open and silent.
    Hang,
}

struct FakeServer {
    base_url: String,
    /// The request as received: head and body.
    request: oneshot::Receiver<String>,
}

async fn fake_server(steps: Vec<Step>) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, request) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = tx.send(read_request(&mut socket).await);
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if socket.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
            }
        }
        let _ = socket.shutdown().await;
    });
    FakeServer { base_url, request }
}

async fn read_request(socket: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before sending a whole request");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if buf.len() >= head_end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

/// A 200 SSE response in chunked encoding, each part its own chunk and TCP write.
fn chunked_sse(parts: &[&[u8]]) -> Vec<Step> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut steps = vec![Step::Send(head.into())];
    for part in parts {
        let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
        chunk.extend_from_slice(part);
        chunk.extend_from_slice(b"\r\n");
        steps.push(Step::Send(chunk));
        steps.push(Step::Pause(Duration::from_millis(5)));
    }
    steps.push(Step::Send(b"0\r\n\r\n".to_vec()));
    steps
}

/// A 200 SSE response whose body ends when the connection closes.
fn close_delimited_sse(body: &[u8], split_every: usize) -> Vec<Step> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let mut steps = vec![Step::Send(head.into())];
    for part in body.chunks(split_every) {
        steps.push(Step::Send(part.to_vec()));
        steps.push(Step::Pause(Duration::from_millis(2)));
    }
    steps
}

/// A client with a stall timeout long enough for a loaded test machine.
fn client() -> LlmClient {
    client_with_stall(Duration::from_secs(5))
}

fn client_with_stall(stall: Duration) -> LlmClient {
    LlmClient::with_builder(reqwest::Client::builder().no_proxy(), stall, super::HostPolicy::default())
}

fn settings(provider: Provider, base_url: String, api_key: Option<&str>) -> ProviderSettings {
    ProviderSettings {
        provider,
        base_url: Some(base_url),
        api_key: api_key.map(SecretString::from),
        model: "test-model".into(),
        temperature: None,
        max_tokens: None,
        stop: Vec::new(),
    }
}

async fn collect(
    stream: futures::stream::BoxStream<'static, Result<StreamItem, LlmError>>,
) -> Vec<Result<StreamItem, LlmError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect()).await.expect("the stream ends")
}

fn ok_items(results: Vec<Result<StreamItem, LlmError>>) -> Vec<StreamItem> {
    results.into_iter().map(|r| r.expect("no error")).collect()
}

#[tokio::test]
async fn openai_compatible_stream_over_chunked_http_yields_every_item() {
    let sse = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3.2\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Bon\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3.2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"jour à toi\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3.2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n",
        "data: {\"id\":\"1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"llama3.2\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    )
    .as_bytes();
    // Odd splits: inside a `data:` prefix, inside the two-byte "à", between \r and \n.
    let a = sse.windows(5).position(|w| w == b"data:").unwrap() + 2;
    let accent = sse.windows(2).position(|w| w == "à".as_bytes()).unwrap() + 1;
    let crlf = sse.windows(2).rposition(|w| w == b"\r\n").unwrap() + 1;
    let server = fake_server(chunked_sse(&[&sse[..a], &sse[a..accent], &sse[accent..crlf], &sse[crlf..]])).await;

    let s = settings(Provider::OpenaiCompatible, format!("{}/v1/", server.base_url), None);
    let stream =
        client().stream_chat(&s, &[ChatMessage::system("Be kind."), ChatMessage::user("Salut")]).await.unwrap();
    let items = ok_items(collect(stream).await);

    assert_eq!(
        items,
        [
            StreamItem::Model("llama3.2".into()),
            StreamItem::Delta("Bon".into()),
            StreamItem::Delta("jour à toi".into()),
            StreamItem::Finish { reason: "stop".into() },
            StreamItem::Usage { prompt_tokens: 12, completion_tokens: 3 },
        ]
    );
    let request = server.request.await.unwrap();
    assert!(request.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"), "{request}");
    assert!(!request.to_ascii_lowercase().contains("\r\nauthorization:"));
    assert!(request.contains(r#""stream":true"#) && request.contains(r#""include_usage":true"#));
}

#[tokio::test]
async fn anthropic_stream_over_close_delimited_http_yields_every_item() {
    let sse = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi!\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let server = fake_server(close_delimited_sse(sse.as_bytes(), 37)).await;

    let s = settings(Provider::Anthropic, server.base_url.clone(), Some("sk-ant-secret"));
    let stream =
        client().stream_chat(&s, &[ChatMessage::system("Be kind."), ChatMessage::user("Hello")]).await.unwrap();
    let items = ok_items(collect(stream).await);

    assert_eq!(
        items,
        [
            StreamItem::Model("claude-test".into()),
            StreamItem::Delta("Hi!".into()),
            StreamItem::Finish { reason: "end_turn".into() },
            StreamItem::Usage { prompt_tokens: 30, completion_tokens: 4 },
        ]
    );
    let request = server.request.await.unwrap();
    let lower = request.to_ascii_lowercase();
    assert!(request.starts_with("POST /v1/messages HTTP/1.1\r\n"), "{request}");
    assert!(lower.contains("\r\nx-api-key: sk-ant-secret\r\n"));
    assert!(lower.contains("\r\nanthropic-version: 2023-06-01\r\n"));
    assert!(request.contains(r#""system":"Be kind.""#));
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_stalled() {
    let mut steps = close_delimited_sse(
        b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        usize::MAX,
    );
    steps.push(Step::Hang);
    let server = fake_server(steps).await;

    let s = settings(Provider::OpenaiCompatible, server.base_url, None);
    let stream = client_with_stall(STALL).stream_chat(&s, &[ChatMessage::user("Hi")]).await.unwrap();
    let mut results = collect(stream).await;

    let last = results.pop().unwrap();
    assert!(matches!(last, Err(LlmError::Stalled(d)) if d == STALL), "{last:?}");
    assert_eq!(ok_items(results), [StreamItem::Model("m".into()), StreamItem::Delta("Hel".into())]);
}

#[tokio::test]
async fn a_server_that_never_answers_is_stalled_before_the_stream() {
    let server = fake_server(vec![Step::Hang]).await;
    let s = settings(Provider::Anthropic, server.base_url, Some("k"));
    let err = client_with_stall(STALL).stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();
    assert!(matches!(err, LlmError::Stalled(d) if d == STALL), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_stream_cut_before_the_end_is_a_protocol_error() {
    let body = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
    let server = fake_server(close_delimited_sse(body, 10)).await;
    let s = settings(Provider::OpenaiCompatible, server.base_url, None);
    let mut results = collect(client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.unwrap()).await;
    assert!(matches!(results.pop(), Some(Err(LlmError::Protocol(_)))));
    assert_eq!(ok_items(results), [StreamItem::Model("m".into()), StreamItem::Delta("Hel".into())]);
}

#[tokio::test]
async fn error_statuses_are_returned_before_the_stream_with_retry_after() {
    let body =
        r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 3\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = fake_server(vec![Step::Send(response.into_bytes())]).await;
    let s = settings(Provider::Openai, server.base_url, Some("sk-test"));
    let err = client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();

    assert!(matches!(&err, LlmError::RateLimited { message, .. } if message.contains("Rate limit reached")), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    let request = server.request.await.unwrap();
    assert!(request.to_ascii_lowercase().contains("\r\nauthorization: bearer sk-test\r\n"));

    let body = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
    let response = format!("HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n{body}");
    let server = fake_server(vec![Step::Send(response.into_bytes())]).await;
    let s = settings(Provider::Anthropic, server.base_url, Some("bad"));
    let err = client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();
    assert!(matches!(&err, LlmError::Auth(m) if m.contains("invalid x-api-key")), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let s = settings(Provider::OpenaiCompatible, base_url, None);
    let err = client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();
    assert!(matches!(err, LlmError::Connection(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn providers_round_trip_through_their_names() {
    for provider in Provider::ALL {
        assert_eq!(Provider::parse(provider.as_str()), Some(provider));
        let json = serde_json::to_string(&provider).unwrap();
        assert_eq!(json, format!("\"{}\"", provider.as_str()));
    }
    assert_eq!(Provider::parse("gemini"), None);
}

#[test]
fn settings_debug_output_hides_the_api_key() {
    let s = settings(Provider::Openai, "https://api.openai.com/v1".into(), Some("sk-very-secret"));
    let debug = format!("{s:?}");
    assert!(!debug.contains("sk-very-secret"), "{debug}");
    assert!(debug.contains("test-model"));
}

fn json_response(body: &str) -> Vec<Step> {
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    vec![Step::Send(head.into_bytes())]
}

#[tokio::test]
async fn a_whole_json_message_answering_a_stream_is_accepted() {
    let message = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":2}}"#;
    let server = fake_server(json_response(message)).await;
    let s = settings(Provider::Anthropic, server.base_url, Some("k"));
    let items = ok_items(collect(client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.unwrap()).await);
    assert_eq!(
        items,
        [
            StreamItem::Model("claude-test".into()),
            StreamItem::Delta("Hello there".into()),
            StreamItem::Finish { reason: "end_turn".into() },
            StreamItem::Usage { prompt_tokens: 9, completion_tokens: 2 },
        ]
    );

    let completion = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let server = fake_server(json_response(completion)).await;
    let s = settings(Provider::OpenaiCompatible, server.base_url, None);
    let items = ok_items(collect(client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.unwrap()).await);
    assert_eq!(
        items,
        [
            StreamItem::Model("m".into()),
            StreamItem::Delta("Hi".into()),
            StreamItem::Finish { reason: "length".into() },
            StreamItem::Usage { prompt_tokens: 3, completion_tokens: 1 },
        ]
    );
}

#[tokio::test]
async fn a_json_answer_to_a_stream_that_is_no_message_fails_clearly_and_an_error_in_it_is_classified() {
    let server = fake_server(json_response(r#"{"hello":"world"}"#)).await;
    let s = settings(Provider::Anthropic, server.base_url, Some("k"));
    let err = client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();
    assert!(matches!(&err, LlmError::Protocol(m) if m.contains("not a message")), "{err:?}");

    let error = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
    let server = fake_server(json_response(error)).await;
    let s = settings(Provider::Anthropic, server.base_url, Some("k"));
    let err = client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.err().unwrap();
    assert!(matches!(err, LlmError::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn an_in_stream_error_with_a_string_code_is_classified_by_it() {
    let sse = "data: {\"error\":{\"message\":\"litellm.RateLimitError: slow\",\"type\":\"throttling_error\",\"param\":null,\"code\":\"429\"}}\n\n";
    let server = fake_server(close_delimited_sse(sse.as_bytes(), usize::MAX)).await;
    let s = settings(Provider::OpenaiCompatible, server.base_url, None);
    let mut results = collect(client().stream_chat(&s, &[ChatMessage::user("Hi")]).await.unwrap()).await;
    let err = results.pop().unwrap().unwrap_err();
    assert!(matches!(err, LlmError::RateLimited { .. }), "{err:?}");
    assert!(results.is_empty());
}
