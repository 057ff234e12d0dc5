//! Reading OpenAI's chat completion request (async-openai's type) into what an
//! `api_completion` job runs; what Parley cannot serve is a 400 naming the field.

use super::OpenAiError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestAssistantMessageContentPart,
    ChatCompletionRequestDeveloperMessageContent, ChatCompletionRequestDeveloperMessageContentPart,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestSystemMessageContentPart, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, CreateChatCompletionRequest, StopConfiguration,
};
use axum::http::HeaderMap;
use parley_shared::llm::{ChatMessage, Role};
use parley_shared::store::api_completions::CompletionRequest;
use parley_shared::usecases::api_completion::SessionPick;

/// The request header that keeps the conversation as a chat session: `new` or a session id.
pub const SESSION_HEADER: &str = "x-parley-session";
/// OpenAI's limit on stop sequences.
const MAX_STOP: usize = 4;

/// A request as the job runs it, and how to answer.
#[derive(Debug)]
pub struct ParsedRequest {
    pub request: CompletionRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Reads what Parley serves out of OpenAI's request; what it cannot serve is a 400 naming
/// the field, never silently dropped.
pub fn parse_request(raw: &CreateChatCompletionRequest, max_chars: usize) -> Result<ParsedRequest, OpenAiError> {
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
pub fn session_pick(headers: &HeaderMap) -> Result<SessionPick, OpenAiError> {
    let Some(value) = headers.get(SESSION_HEADER) else { return Ok(SessionPick::None) };
    let bad = || OpenAiError::invalid(None, "X-Parley-Session must be `new` or a chat session id.");
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value.eq_ignore_ascii_case("new") {
        return Ok(SessionPick::New);
    }
    value.parse().map(SessionPick::Existing).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use serde_json::{Value, json};

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
