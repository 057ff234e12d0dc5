//! Anthropic's Messages API: the request, and the stream events turned into [`StreamItem`]s.

use super::client::{base_url, secret_header};
use super::error::classify_stream_error;
use super::sse::{EventParser, Flow};
use super::{ChatMessage, LlmError, ProviderSettings, Role, StreamItem};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The API requires a limit; this one when the config sets none.
const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    /// Anthropic takes the system prompt apart from the turns.
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
}

#[derive(Debug, Serialize, PartialEq)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// `POST {base}/v1/messages`.
pub(crate) fn build_request(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    messages: &[ChatMessage],
) -> Result<reqwest::Request, LlmError> {
    // Accept a base URL given with or without the version segment.
    let url = format!("{}/v1/messages", base_url(settings, Some(ANTHROPIC_BASE_URL))?.trim_end_matches("/v1"));
    let mut request =
        http.post(url).header("anthropic-version", ANTHROPIC_VERSION).json(&request_body(settings, messages));
    if let Some(key) = settings.api_key.as_ref().map(|k| k.expose_secret().trim()).filter(|k| !k.is_empty()) {
        request = request.header("x-api-key", secret_header(key)?);
    }
    request.build().map_err(super::client::builder_error)
}

pub(crate) fn request_body<'a>(settings: &'a ProviderSettings, messages: &'a [ChatMessage]) -> MessagesRequest<'a> {
    let system: Vec<&str> = messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
    MessagesRequest {
        model: &settings.model,
        max_tokens: settings.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| Message { role: m.role.as_str(), content: &m.content })
            .collect(),
        temperature: settings.temperature,
        stop_sequences: &settings.stop,
        stream: true,
    }
}

/// Reads the typed events (`message_start`, `content_block_delta`, `message_delta`,
/// `message_stop`, `ping`, `error`) from their `data:` lines; each carries its own `type`.
#[derive(Debug, Default)]
pub(crate) struct AnthropicParser {
    prompt_tokens: u32,
    finished: bool,
}

impl EventParser for AnthropicParser {
    fn on_data(&mut self, data: &str, out: &mut Vec<StreamItem>) -> Result<Flow, LlmError> {
        let event: Value =
            serde_json::from_str(data).map_err(|e| LlmError::Protocol(format!("an event is not JSON: {e}")))?;
        match event["type"].as_str() {
            Some("message_start") => {
                let message = &event["message"];
                if let Some(model) = message["model"].as_str().filter(|m| !m.is_empty()) {
                    out.push(StreamItem::Model(model.to_owned()));
                }
                self.prompt_tokens = prompt_tokens(&message["usage"]).unwrap_or(0);
            }
            Some("content_block_delta") => {
                // Only text: `thinking_delta`, `signature_delta` and `input_json_delta` are
                // not part of the answer.
                let delta = &event["delta"];
                if delta["type"] == "text_delta"
                    && let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty())
                {
                    out.push(StreamItem::Delta(text.to_owned()));
                }
            }
            Some("message_delta") => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.finished = true;
                    out.push(StreamItem::Finish { reason: reason.to_owned() });
                }
                let usage = &event["usage"];
                // Newer API versions repeat the (final) input counts here.
                if let Some(prompt) = prompt_tokens(usage) {
                    self.prompt_tokens = prompt;
                }
                if let Some(completion) = usage["output_tokens"].as_u64() {
                    let completion_tokens = u32::try_from(completion).unwrap_or(u32::MAX);
                    out.push(StreamItem::Usage { prompt_tokens: self.prompt_tokens, completion_tokens });
                }
            }
            Some("message_stop") => return Ok(Flow::Done),
            Some("error") => return Err(classify_stream_error(&event)),
            // `ping`, `content_block_start`/`_stop`, and event types added later (Anthropic's
            // versioning policy says to ignore unknown ones).
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&self) -> Result<(), LlmError> {
        if self.finished {
            Ok(())
        } else {
            Err(LlmError::Protocol("the stream ended before the message stopped".into()))
        }
    }
}

/// A whole message answered (as JSON) to a streaming request, as some proxies do: its items
/// in stream order, or the error it holds. Anything else is a protocol error that says so.
pub(crate) fn whole_message(body: &Value) -> Result<Vec<StreamItem>, LlmError> {
    if body["type"] == "error" || body.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_stream_error(body));
    }
    if body["type"] != "message" || !body["content"].is_array() {
        return Err(LlmError::Protocol(
            "the provider answered a streaming request with JSON that is not a message".into(),
        ));
    }
    let mut items = Vec::new();
    if let Some(model) = body["model"].as_str().filter(|m| !m.is_empty()) {
        items.push(StreamItem::Model(model.to_owned()));
    }
    let blocks = body["content"].as_array().into_iter().flatten();
    let text: String = blocks.filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
    if !text.is_empty() {
        items.push(StreamItem::Delta(text));
    }
    let reason = body["stop_reason"].as_str().unwrap_or("end_turn");
    items.push(StreamItem::Finish { reason: reason.to_owned() });
    let usage = &body["usage"];
    if let (Some(prompt_tokens), Some(completion)) = (prompt_tokens(usage), usage["output_tokens"].as_u64()) {
        let completion_tokens = u32::try_from(completion).unwrap_or(u32::MAX);
        items.push(StreamItem::Usage { prompt_tokens, completion_tokens });
    }
    Ok(items)
}

/// All prompt tokens: uncached input plus cache writes and cache reads, which Anthropic
/// counts apart.
fn prompt_tokens(usage: &Value) -> Option<u32> {
    let input = usage["input_tokens"].as_u64()?;
    let cached = ["cache_creation_input_tokens", "cache_read_input_tokens"].iter().filter_map(|k| usage[k].as_u64());
    Some(u32::try_from(input + cached.sum::<u64>()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Provider;
    use secrecy::SecretString;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            provider: Provider::Anthropic,
            base_url: None,
            api_key: Some(SecretString::from("sk-ant-test")),
            model: "claude-sonnet-4-5".into(),
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
        }
    }

    #[test]
    fn request_moves_system_messages_to_the_top_and_defaults_max_tokens() {
        let messages = [
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::system("Answer in French."),
            ChatMessage::user("Bye"),
        ];
        let request = build_request(&reqwest::Client::new(), &settings(), &messages).unwrap();

        assert_eq!(request.url().as_str(), "https://api.anthropic.com/v1/messages");
        let key = request.headers().get("x-api-key").unwrap();
        assert_eq!(key, "sk-ant-test");
        assert!(key.is_sensitive());
        assert_eq!(request.headers().get("anthropic-version").unwrap(), "2023-06-01");
        assert_eq!(request.headers().get("content-type").unwrap(), "application/json");
        assert!(request.headers().get("authorization").is_none());
        let body: Value = serde_json::from_slice(request.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": "Be brief.\n\nAnswer in French.",
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"},
                ],
                "stream": true,
            })
        );
    }

    #[test]
    fn request_without_system_sets_optional_fields_and_honours_the_base_url() {
        let mut s = settings();
        s.base_url = Some("https://proxy.example/anthropic/v1/".into());
        s.temperature = Some(0.25);
        s.max_tokens = Some(4000);
        s.api_key = None;
        let request = build_request(&reqwest::Client::new(), &s, &[ChatMessage::user("Hi")]).unwrap();
        assert_eq!(request.url().as_str(), "https://proxy.example/anthropic/v1/messages");
        assert!(request.headers().get("x-api-key").is_none());
        let body: Value = serde_json::from_slice(request.body().unwrap().as_bytes().unwrap()).unwrap();
        assert!(body.get("system").is_none());
        assert_eq!(body["temperature"], 0.25);
        assert_eq!(body["max_tokens"], 4000);
    }

    fn parse_all(events: &[&str]) -> (Vec<StreamItem>, Result<Flow, LlmError>, AnthropicParser) {
        let mut parser = AnthropicParser::default();
        let mut out = Vec::new();
        let mut last = Ok(Flow::Continue);
        for event in events {
            last = parser.on_data(event, &mut out);
            if !matches!(last, Ok(Flow::Continue)) {
                break;
            }
        }
        (out, last, parser)
    }

    #[test]
    fn events_become_model_deltas_finish_and_usage() {
        let (items, last, parser) = parse_all(&[
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}"#,
            r#"{"type":"message_stop"}"#,
        ]);
        assert_eq!(
            items,
            [
                StreamItem::Model("claude-sonnet-4-5-20250929".into()),
                StreamItem::Delta("Hello".into()),
                StreamItem::Delta(" there".into()),
                StreamItem::Finish { reason: "end_turn".into() },
                StreamItem::Usage { prompt_tokens: 25, completion_tokens: 12 },
            ]
        );
        assert!(matches!(last, Ok(Flow::Done)));
        assert!(parser.on_eof().is_ok());
    }

    #[test]
    fn error_events_are_classified() {
        let (_, last, _) =
            parse_all(&[r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#]);
        let err = last.unwrap_err();
        assert!(matches!(err, LlmError::Server { status: 529, .. }), "{err:?}");
        assert!(err.is_retryable());
        let (_, last, _) = parse_all(&[r#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow"}}"#]);
        assert!(matches!(last, Err(LlmError::RateLimited { .. })));
        let (_, last, _) = parse_all(&[r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#]);
        assert!(matches!(last, Err(LlmError::BadRequest(_))));
    }

    #[test]
    fn a_stream_cut_before_the_stop_reason_is_a_protocol_error() {
        let (_, _, parser) = parse_all(&[
            r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        ]);
        assert!(matches!(parser.on_eof(), Err(LlmError::Protocol(_))));
    }
}
