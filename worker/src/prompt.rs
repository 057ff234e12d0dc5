//! Building a model's input from a session: the system prompt always first, then as much of
//! the conversation as fits the context window, newest kept.

use parley_shared::llm::{ChatMessage, Role};
use parley_shared::store::chat::Message;

/// Tokens taken by a message's framing (role markers and separators), on top of its text.
const PER_MESSAGE_OVERHEAD: usize = 4;

/// An estimate of the tokens of `text`: about four characters a token for English prose,
/// counted in characters so other scripts are not underestimated by bytes.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4) + PER_MESSAGE_OVERHEAD
}

/// The messages to send: `system` (if any), then the newest messages of `history_newest_first`
/// whose estimated tokens fit in `context_window` minus `reserve` (room for the reply), in
/// chronological order. The newest message is always kept.
pub fn build(
    system: &str,
    history_newest_first: &[Message],
    context_window: usize,
    reserve: usize,
) -> Vec<ChatMessage> {
    let mut budget = context_window.saturating_sub(reserve);
    let mut out = Vec::new();
    if !system.trim().is_empty() {
        budget = budget.saturating_sub(estimate_tokens(system));
    }
    let mut kept = Vec::new();
    // Empty turns (a reply that produced nothing) are refused by some providers.
    let turns = history_newest_first.iter().filter(|m| !m.content.trim().is_empty());
    for (i, m) in turns.enumerate() {
        let cost = estimate_tokens(&m.content);
        if i > 0 && cost > budget {
            break;
        }
        budget = budget.saturating_sub(cost);
        let role = if m.role == "assistant" { Role::Assistant } else { Role::User };
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

    fn msg(role: &str, content: &str) -> Message {
        Message {
            id: String::new(),
            session_id: String::new(),
            user_id: String::new(),
            role: role.into(),
            content: content.into(),
            status: "complete".into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            finish_reason: None,
            error: None,
            job_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn keeps_the_system_prompt_first_and_the_newest_messages() {
        // Newest first, as the store returns them.
        let history = [msg("user", &"c".repeat(40)), msg("assistant", &"b".repeat(40)), msg("user", &"a".repeat(400))];
        let out = build("be brief", &history, 60, 10);
        assert_eq!(out[0].role, Role::System);
        let texts: Vec<&str> = out[1..].iter().map(|m| &m.content[..1]).collect();
        assert_eq!(texts, ["b", "c"], "the oldest, large message is trimmed");
        assert_eq!(out.last().unwrap().role, Role::User);
    }

    #[test]
    fn the_newest_message_is_kept_even_when_alone_it_is_too_long() {
        let history = [msg("user", &"x".repeat(10_000))];
        let out = build("", &history, 100, 10);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn estimates_count_characters_not_bytes() {
        assert_eq!(estimate_tokens("абвг"), 1 + PER_MESSAGE_OVERHEAD);
    }
}
