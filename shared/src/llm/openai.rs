//! OpenAI's Chat Completions API, also spoken by Ollama, vLLM, llama.cpp and others: the
//! request, and the stream chunks turned into [`StreamItem`]s.

use super::client::{base_url, secret_header};
use super::error::classify_stream_error;
use super::sse::{EventParser, Flow};
use super::{ChatMessage, LlmError, Provider, ProviderSettings, Role, StreamItem};
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionStreamResponse, StopConfiguration,
};
use reqwest::header::AUTHORIZATION;
use secrecy::ExposeSecret;
use serde_json::Value;

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// `POST {base}/chat/completions`; the base URL is required for `openai_compatible`.
pub(crate) fn build_request(
    http: &reqwest::Client,
    settings: &ProviderSettings,
    messages: &[ChatMessage],
) -> Result<reqwest::Request, LlmError> {
    let default_base = (settings.provider == Provider::Openai).then_some(OPENAI_BASE_URL);
    let url = format!("{}/chat/completions", base_url(settings, default_base)?);
    let mut request = http.post(url).json(&request_body(settings, messages));
    // Local servers (Ollama, llama.cpp) take no key.
    if let Some(key) = settings.api_key.as_ref().map(|k| k.expose_secret().trim()).filter(|k| !k.is_empty()) {
        request = request.header(AUTHORIZATION, secret_header(&format!("Bearer {key}"))?);
    }
    request.build().map_err(super::client::builder_error)
}

#[expect(deprecated, reason = "`max_tokens` is deprecated by OpenAI but the one compatible servers understand")]
pub(crate) fn request_body(settings: &ProviderSettings, messages: &[ChatMessage]) -> CreateChatCompletionRequest {
    // OpenAI's reasoning models reject `max_tokens` and want `max_completion_tokens`, which
    // many compatible servers do not know yet.
    let is_openai = settings.provider == Provider::Openai;
    CreateChatCompletionRequest {
        model: settings.model.clone(),
        messages: messages.iter().map(to_request_message).collect(),
        stream: Some(true),
        stream_options: Some(ChatCompletionStreamOptions { include_usage: Some(true), ..Default::default() }),
        temperature: settings.temperature,
        max_completion_tokens: settings.max_tokens.filter(|_| is_openai),
        max_tokens: settings.max_tokens.filter(|_| !is_openai),
        stop: (!settings.stop.is_empty()).then(|| StopConfiguration::StringArray(settings.stop.clone())),
        ..Default::default()
    }
}

fn to_request_message(message: &ChatMessage) -> ChatCompletionRequestMessage {
    let content = message.content.clone();
    match message.role {
        Role::System => ChatCompletionRequestSystemMessage::from(content).into(),
        Role::User => ChatCompletionRequestUserMessage::from(content).into(),
        Role::Assistant => ChatCompletionRequestAssistantMessage::from(content).into(),
    }
}

/// Reads `data: {chunk}` lines until `data: [DONE]`.
#[derive(Debug, Default)]
pub(crate) struct OpenAiParser {
    model_sent: bool,
    finished: bool,
    saw_data: bool,
}

impl EventParser for OpenAiParser {
    fn on_data(&mut self, data: &str, out: &mut Vec<StreamItem>) -> Result<Flow, LlmError> {
        self.saw_data = true;
        if data.trim() == "[DONE]" {
            return Ok(Flow::Done);
        }
        let value: Value =
            serde_json::from_str(data).map_err(|e| LlmError::Protocol(format!("a stream chunk is not JSON: {e}")))?;
        if value.get("error").is_some_and(|e| !e.is_null()) {
            return Err(classify_stream_error(&value));
        }
        let chunk = Chunk::parse(value)?;
        // Azure's first chunk has an empty `model` (and only content-filter results).
        if let Some(model) = chunk.model.filter(|m| !m.is_empty() && !self.model_sent) {
            self.model_sent = true;
            out.push(StreamItem::Model(model));
        }
        if let Some(text) = chunk.content.filter(|t| !t.is_empty()) {
            out.push(StreamItem::Delta(text));
        }
        if let Some(reason) = chunk.finish_reason.filter(|r| !r.is_empty()) {
            self.finished = true;
            out.push(StreamItem::Finish { reason });
        }
        if let Some((prompt_tokens, completion_tokens)) = chunk.usage {
            out.push(StreamItem::Usage { prompt_tokens, completion_tokens });
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&self) -> Result<(), LlmError> {
        match (self.finished, self.saw_data) {
            // Some servers close after the finish chunk without `[DONE]`: nothing is missing.
            (true, _) => Ok(()),
            (false, true) => Err(LlmError::Protocol("the stream ended before the completion finished".into())),
            (false, false) => Err(LlmError::Protocol("the response held no server-sent events".into())),
        }
    }
}

/// A whole completion answered (as JSON) to a streaming request: its items in stream order,
/// or the error it holds. Anything else is a protocol error that says so.
pub(crate) fn whole_completion(body: &Value) -> Result<Vec<StreamItem>, LlmError> {
    if body.get("error").is_some_and(|e| !e.is_null()) {
        return Err(classify_stream_error(body));
    }
    let choice = &body["choices"][0];
    let Some(message) = choice.get("message").filter(|m| m.is_object()) else {
        return Err(LlmError::Protocol(
            "the provider answered a streaming request with JSON that is not a completion".into(),
        ));
    };
    let mut items = Vec::new();
    if let Some(model) = body["model"].as_str().filter(|m| !m.is_empty()) {
        items.push(StreamItem::Model(model.to_owned()));
    }
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        items.push(StreamItem::Delta(text.to_owned()));
    }
    let reason = choice["finish_reason"].as_str().unwrap_or("stop");
    items.push(StreamItem::Finish { reason: reason.to_owned() });
    if let Some(usage) = body.get("usage").filter(|u| u.is_object()) {
        items.push(StreamItem::Usage {
            prompt_tokens: tokens(&usage["prompt_tokens"]),
            completion_tokens: tokens(&usage["completion_tokens"]),
        });
    }
    Ok(items)
}

/// The parts of a chunk we use (only the first choice: we never ask for more than one).
#[derive(Debug, Default, PartialEq)]
struct Chunk {
    model: Option<String>,
    content: Option<String>,
    finish_reason: Option<String>,
    usage: Option<(u32, u32)>,
}

impl Chunk {
    fn parse(value: Value) -> Result<Self, LlmError> {
        match serde_json::from_value::<CreateChatCompletionStreamResponse>(value.clone()) {
            Ok(typed) => Ok(Self::from_typed(typed)),
            // async-openai's type is OpenAI's schema to the letter: `id`, `created` (an
            // integer), `object` and `usage.total_tokens` required, `finish_reason` one of
            // five names. Compatible servers stray from it (older Ollama and llama.cpp omit
            // fields, vLLM finishes with "abort", some send a float `created`), and none of
            // that matters to us, so such a chunk is read field by field instead.
            Err(_) => Self::from_value(&value),
        }
    }

    fn from_typed(typed: CreateChatCompletionStreamResponse) -> Self {
        let choice = typed.choices.into_iter().next();
        let finish_reason = choice.as_ref().and_then(|c| c.finish_reason).and_then(|reason| {
            // The enum serializes to the wire name (`stop`, `length`, ...).
            serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned))
        });
        Chunk {
            model: Some(typed.model),
            content: choice.and_then(|c| c.delta.content),
            finish_reason,
            usage: typed.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        }
    }

    fn from_value(value: &Value) -> Result<Self, LlmError> {
        if !value.is_object() {
            return Err(LlmError::Protocol("a stream chunk is not a JSON object".into()));
        }
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let choice = &value["choices"][0];
        let usage = value
            .get("usage")
            .filter(|u| u.is_object())
            .map(|u| (tokens(&u["prompt_tokens"]), tokens(&u["completion_tokens"])));
        Ok(Chunk {
            model: text(&value["model"]),
            content: text(&choice["delta"]["content"]),
            finish_reason: text(&choice["finish_reason"]),
            usage,
        })
    }
}

fn tokens(v: &Value) -> u32 {
    v.as_u64().map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(provider: Provider) -> ProviderSettings {
        ProviderSettings {
            provider,
            base_url: None,
            api_key: None,
            model: "gpt-4o-mini".into(),
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
        }
    }

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("Bye"),
        ]
    }

    fn body_json(request: &reqwest::Request) -> Value {
        serde_json::from_slice(request.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn openai_request_streams_with_usage_and_bearer_key() {
        let mut s = settings(Provider::Openai);
        s.api_key = Some(SecretString::from("sk-test"));
        s.temperature = Some(0.5);
        s.max_tokens = Some(256);
        let request = build_request(&reqwest::Client::new(), &s, &conversation()).unwrap();

        assert_eq!(request.method(), reqwest::Method::POST);
        assert_eq!(request.url().as_str(), "https://api.openai.com/v1/chat/completions");
        let auth = request.headers().get(AUTHORIZATION).unwrap();
        assert_eq!(auth, "Bearer sk-test");
        assert!(auth.is_sensitive());
        assert_eq!(request.headers().get("content-type").unwrap(), "application/json");
        let body = body_json(&request);
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "max_completion_tokens": 256,
            })
        );
    }

    #[test]
    fn compatible_request_needs_a_base_url_and_sends_no_key_when_none_is_set() {
        let mut s = settings(Provider::OpenaiCompatible);
        let err = build_request(&reqwest::Client::new(), &s, &conversation()).unwrap_err();
        assert!(matches!(err, LlmError::BadRequest(_)), "{err:?}");

        s.base_url = Some("http://localhost:11434/v1/".into());
        s.max_tokens = Some(100);
        s.api_key = Some(SecretString::from("  "));
        let request = build_request(&reqwest::Client::new(), &s, &conversation()).unwrap();
        assert_eq!(request.url().as_str(), "http://localhost:11434/v1/chat/completions");
        assert!(request.headers().get(AUTHORIZATION).is_none());
        let body = body_json(&request);
        assert_eq!(body["max_tokens"], 100);
        assert!(body.get("max_completion_tokens").is_none());
        assert!(body.get("temperature").is_none());
    }

    #[test]
    fn an_invalid_base_url_is_a_bad_request() {
        let mut s = settings(Provider::OpenaiCompatible);
        s.base_url = Some("not a url".into());
        let err = build_request(&reqwest::Client::new(), &s, &conversation()).unwrap_err();
        assert!(matches!(err, LlmError::BadRequest(_)), "{err:?}");
    }

    fn parse_all(lines: &[&str]) -> (Vec<StreamItem>, Result<Flow, LlmError>, OpenAiParser) {
        let mut parser = OpenAiParser::default();
        let mut out = Vec::new();
        let mut last = Ok(Flow::Continue);
        for line in lines {
            last = parser.on_data(line, &mut out);
            if !matches!(last, Ok(Flow::Continue)) {
                break;
            }
        }
        (out, last, parser)
    }

    #[test]
    fn openai_chunks_become_model_deltas_finish_and_usage() {
        let lines = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            "[DONE]",
        ];
        // OpenAI's own chunks go through async-openai's type.
        for line in &lines[..lines.len() - 1] {
            assert!(serde_json::from_str::<CreateChatCompletionStreamResponse>(line).is_ok(), "{line}");
        }
        let (items, last, parser) = parse_all(&lines);
        assert_eq!(
            items,
            [
                StreamItem::Model("gpt-4o-mini-2024-07-18".into()),
                StreamItem::Delta("Hel".into()),
                StreamItem::Delta("lo".into()),
                StreamItem::Finish { reason: "stop".into() },
                StreamItem::Usage { prompt_tokens: 9, completion_tokens: 2 },
            ]
        );
        assert!(matches!(last, Ok(Flow::Done)));
        assert!(parser.on_eof().is_ok());
    }

    #[test]
    fn chunks_outside_openais_schema_are_read_field_by_field() {
        // No id/object/created, an unknown finish reason, usage without total_tokens.
        let loose = r#"{"model":"llama3","choices":[{"delta":{"content":"Hi"},"finish_reason":"abort"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        assert!(serde_json::from_str::<CreateChatCompletionStreamResponse>(loose).is_err());
        let (items, _, _) = parse_all(&[loose]);
        assert_eq!(
            items,
            [
                StreamItem::Model("llama3".into()),
                StreamItem::Delta("Hi".into()),
                StreamItem::Finish { reason: "abort".into() },
                StreamItem::Usage { prompt_tokens: 3, completion_tokens: 1 },
            ]
        );
    }

    #[test]
    fn an_error_object_in_the_stream_is_classified() {
        let (items, last, _) = parse_all(&[
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","code":null}}"#,
        ]);
        assert_eq!(items, [StreamItem::Model("m".into()), StreamItem::Delta("Hi".into())]);
        let err = last.unwrap_err();
        assert!(matches!(err, LlmError::Server { status: 500, .. }), "{err:?}");
        assert!(err.to_string().contains("The server had an error"));
    }

    #[test]
    fn garbage_and_truncation_are_protocol_errors() {
        let (_, last, _) = parse_all(&["{not json"]);
        assert!(matches!(last, Err(LlmError::Protocol(_))));
        let (_, last, _) = parse_all(&["[1,2]"]);
        assert!(matches!(last, Err(LlmError::Protocol(_))));
        let (_, _, parser) = parse_all(&[r#"{"model":"m","choices":[{"delta":{"content":"Hi"}}]}"#]);
        assert!(matches!(parser.on_eof(), Err(LlmError::Protocol(_))));
        assert!(matches!(OpenAiParser::default().on_eof(), Err(LlmError::Protocol(_))));
    }
}
