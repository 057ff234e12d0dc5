//! Building a model's input from a session: the system prompt always first, then as much of
//! the conversation as fits the context window, newest kept. Tokens are counted with the
//! model's own tokenizer when tiktoken knows the model (OpenAI's), and estimated otherwise.

use parley_shared::llm::{ChatMessage, Role};
use parley_shared::store::chat::{Message, MessageRole};
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// Tokens taken by a message's framing (role markers and separators), on top of its text.
const PER_MESSAGE_OVERHEAD: usize = 4;

/// Counts a message's tokens for one model.
#[derive(Clone, Copy)]
pub struct TokenCounter {
    bpe: Option<&'static CoreBPE>,
}

impl TokenCounter {
    /// The model's tokenizer if known, else the estimate.
    pub fn for_model(model: &str) -> Self {
        let bpe = get_tokenizer(model).and_then(|t| match t {
            Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(tiktoken_rs::o200k_base_singleton()),
            Tokenizer::Cl100kBase => Some(tiktoken_rs::cl100k_base_singleton()),
            Tokenizer::P50kBase | Tokenizer::P50kEdit => Some(tiktoken_rs::p50k_base_singleton()),
            Tokenizer::R50kBase | Tokenizer::Gpt2 => Some(tiktoken_rs::r50k_base_singleton()),
            #[expect(unreachable_patterns, reason = "tokenizers added by later tiktoken versions fall back")]
            _ => None,
        });
        Self { bpe }
    }

    /// Whether counts come from the model's real tokenizer.
    pub fn is_exact(&self) -> bool {
        self.bpe.is_some()
    }

    /// Tokens of one message with `text`.
    pub fn count(&self, text: &str) -> usize {
        match self.bpe {
            Some(bpe) => bpe.encode_ordinary(text).len() + PER_MESSAGE_OVERHEAD,
            None => estimate_tokens(text),
        }
    }
}

/// An estimate of the tokens of `text`: about four characters a token for English prose,
/// counted in characters so other scripts are not underestimated by bytes.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4) + PER_MESSAGE_OVERHEAD
}

/// The messages to send: `system` (if any), then the newest messages of `history_newest_first`
/// whose tokens (by `counter`) fit in `context_window` minus `reserve` (room for the reply),
/// in chronological order. The newest message is always kept.
pub fn build(
    counter: TokenCounter,
    system: &str,
    history_newest_first: &[Message],
    context_window: usize,
    reserve: usize,
) -> Vec<ChatMessage> {
    let mut budget = context_window.saturating_sub(reserve);
    let mut out = Vec::new();
    if !system.trim().is_empty() {
        budget = budget.saturating_sub(counter.count(system));
    }
    let mut kept = Vec::new();
    // Empty turns (a reply that produced nothing) are refused by some providers.
    let turns = history_newest_first.iter().filter(|m| !m.content.trim().is_empty());
    for (i, m) in turns.enumerate() {
        let cost = counter.count(&m.content);
        if i > 0 && cost > budget {
            break;
        }
        budget = budget.saturating_sub(cost);
        let role = match m.role {
            MessageRole::Assistant => Role::Assistant,
            MessageRole::User => Role::User,
        };
        kept.push(ChatMessage { role, content: m.content.clone() });
    }
    if !system.trim().is_empty() {
        out.push(ChatMessage { role: Role::System, content: system.to_owned() });
    }
    out.extend(kept.into_iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_shared::ids::{ChatSessionId, MessageId};
    use parley_shared::store::chat::MessageStatus;

    fn msg(role: MessageRole, content: &str) -> Message {
        Message {
            id: MessageId::new(),
            session_id: ChatSessionId::default(),
            user_id: String::new(),
            role,
            content: content.into(),
            status: MessageStatus::Complete,
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            finish_reason: None,
            error: None,
            job_id: None,
            created_at: parley_shared::time::Timestamp::now(),
            updated_at: parley_shared::time::Timestamp::now(),
        }
    }

    #[test]
    fn keeps_the_system_prompt_first_and_the_newest_messages() {
        // Newest first, as the store returns them.
        let history = [
            msg(MessageRole::User, &"c".repeat(40)),
            msg(MessageRole::Assistant, &"b".repeat(40)),
            msg(MessageRole::User, &"a".repeat(400)),
        ];
        let out = build(TokenCounter::for_model("unknown-model"), "be brief", &history, 60, 10);
        assert_eq!(out[0].role, Role::System);
        let texts: Vec<&str> = out[1..].iter().map(|m| &m.content[..1]).collect();
        assert_eq!(texts, ["b", "c"], "the oldest, large message is trimmed");
        assert_eq!(out.last().unwrap().role, Role::User);
    }

    #[test]
    fn the_newest_message_is_kept_even_when_alone_it_is_too_long() {
        let history = [msg(MessageRole::User, &"x".repeat(10_000))];
        let out = build(TokenCounter::for_model("unknown-model"), "", &history, 100, 10);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn known_models_are_counted_with_their_tokenizer() {
        let gpt = TokenCounter::for_model("gpt-4o");
        assert!(gpt.is_exact());
        assert_eq!(gpt.count("hello world"), 2 + PER_MESSAGE_OVERHEAD);
        assert!(!TokenCounter::for_model("llama3.1:8b").is_exact());
    }

    #[test]
    fn estimates_count_characters_not_bytes() {
        assert_eq!(estimate_tokens("абвг"), 1 + PER_MESSAGE_OVERHEAD);
    }
}
