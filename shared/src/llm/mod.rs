//! Streaming chat completions from LLM providers, with errors classified for retry decisions.
//!
//! Three providers: `openai`, `openai_compatible` (any server speaking OpenAI's Chat
//! Completions API: Ollama, vLLM, llama.cpp, Gemini's OpenAI endpoint, ...) and `anthropic`
//! (its Messages API). [`LlmClient::stream_chat`] sends one request and yields
//! [`StreamItem`]s as the provider streams them over server-sent events.
//!
//! The OpenAI request and stream chunks use `async_openai`'s types, but not its HTTP client:
//! that client retries 429s and 5xx itself and hides the status code and `Retry-After` behind
//! its own error type, while our job system must see both to decide whether and when to retry
//! (and to count attempts). So the HTTP, SSE framing and error classification live here.
//!
//! Nothing here logs API keys or message contents; error texts carry the provider's error
//! message (truncated), never the prompt.

mod anthropic;
mod client;
mod error;
mod hosts;
mod openai;
mod sse;
#[cfg(test)]
mod tests;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use client::LlmClient;
pub use error::{LlmError, UserFacing, redact_secret};
pub use hosts::HostPolicy;

/// The wire protocol a model config speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI's Chat Completions API at `https://api.openai.com/v1` unless a base URL is set.
    Openai,
    /// The same API at a required base URL (Ollama, vLLM, llama.cpp server, ...).
    OpenaiCompatible,
    /// Anthropic's Messages API at `https://api.anthropic.com` unless a base URL is set.
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Openai, Provider::OpenaiCompatible, Provider::Anthropic];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::OpenaiCompatible => "openai_compatible",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The provider named by [`Provider::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to call one model. `Debug` redacts the API key.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub provider: Provider,
    /// The API root, e.g. `http://localhost:11434/v1` for Ollama; a trailing `/` is ignored.
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic) when set.
    pub api_key: Option<SecretString>,
    pub model: String,
    pub temperature: Option<f32>,
    /// Completion token limit; Anthropic requires one and gets 1024 when unset.
    pub max_tokens: Option<u32>,
    /// Sequences that end the completion (none: the model's own end).
    pub stop: Vec<String>,
}

/// The author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// One event of a streamed completion, in the order the provider sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The next piece of the assistant's text (never empty).
    Delta(String),
    /// Token counts. Usually once, near the end; some servers repeat it, and the last one wins.
    Usage { prompt_tokens: u32, completion_tokens: u32 },
    /// Why generation stopped, in the provider's words (`stop`, `length`, `end_turn`, ...).
    Finish { reason: String },
    /// The model that answers, as the provider names it (may be more specific than requested).
    Model(String),
}
