//! `generate_title`: asks a model for a short session title. On failure the session keeps
//! the title made from its first message when it was created.

use super::llm_completion::{provider_settings, resolve_config, to_job_error};
use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use crate::usage::Spent;
use futures::StreamExt;
use parley_shared::domain::truncate_words;
use parley_shared::jobs::GenerateTitle;
use parley_shared::llm::{ChatMessage, Role, StreamItem};
use parley_shared::store::chat;
use parley_shared::store::jobs::Job;
use parley_shared::store::llm_configs;
use parley_shared::store::usage::{UsageKind, UsageOutcome};
use serde_json::json;

pub const MAX_TITLE_CHARS: usize = 60;

const INSTRUCTION: &str = "Write a title of at most six words for this conversation. \
    Answer with the title only: no quotes, no punctuation at the end, no explanation.";

impl RunJob for GenerateTitle {
    async fn run(self, ctx: &WorkerContext, job: &Job, _cancel: CancelSignal) -> Outcome {
        generate(self, ctx, job).await.into()
    }
}

async fn generate(p: GenerateTitle, ctx: &WorkerContext, job: &Job) -> Result<serde_json::Value, JobError> {
    let pool = &ctx.db.writer;
    let Some(session) = chat::session_by_id(pool, p.session_id).await? else {
        return Ok(json!({"skipped": "the session was deleted"}));
    };
    if !session.title_is_auto {
        return Ok(json!({"skipped": "the title was set by the user"}));
    }
    let messages = chat::list_messages(pool, session.id, None, 2).await?;
    let config = match &ctx.config.llm_title_config {
        Some(name) => llm_configs::by_name(pool, name).await?.filter(|c| c.enabled),
        None => None,
    };
    let config = match config {
        Some(c) => c,
        None => resolve_config(ctx, session.config_id).await?,
    };
    let mut settings = provider_settings(ctx, &config)?;
    settings.max_tokens = Some(32);
    let conversation: String = messages
        .iter()
        .map(|m| format!("{}: {}\n", m.role.as_str(), m.content.chars().take(2000).collect::<String>()))
        .collect();
    let prompt = [
        ChatMessage { role: Role::System, content: INSTRUCTION.into() },
        ChatMessage { role: Role::User, content: conversation },
    ];
    // Titles count against the owner's usage too, marked as titles.
    let spent = |reported, text, outcome| Spent {
        kind: UsageKind::Title,
        config: config.id,
        model: &config.model,
        reported,
        prompt: &prompt,
        text,
        outcome,
    };
    let mut stream = match ctx.llm.stream_chat(&settings, &prompt).await {
        Ok(stream) => stream,
        Err(e) => {
            crate::usage::record(ctx, job, spent(None, "", UsageOutcome::Failed)).await;
            return Err(to_job_error(e));
        }
    };
    let (mut raw, mut usage) = (String::new(), None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamItem::Delta(d)) => raw.push_str(&d),
            Ok(StreamItem::Usage { prompt_tokens, completion_tokens }) => {
                usage = Some((prompt_tokens, completion_tokens))
            }
            Ok(_) => {}
            Err(e) => {
                crate::usage::record(ctx, job, spent(usage, &raw, UsageOutcome::Failed)).await;
                return Err(to_job_error(e));
            }
        }
    }
    crate::usage::record(ctx, job, spent(usage, &raw, UsageOutcome::Complete)).await;
    let title = clean_title(&raw);
    if title.is_empty() {
        return Err(JobError::fatal("the model gave an empty title"));
    }
    chat::set_auto_title(pool, session.id, &title).await?;
    Ok(json!({"title": title}))
}

/// One line, no reasoning blocks, no surrounding quotes or trailing punctuation, at most
/// [`MAX_TITLE_CHARS`] characters (cut at a word boundary).
pub fn clean_title(raw: &str) -> String {
    let mut s = raw.to_owned();
    while let (Some(start), Some(end)) = (s.find("<think>"), s.find("</think>")) {
        if end < start {
            break;
        }
        s.replace_range(start..end + "</think>".len(), "");
    }
    // A reasoning block the token limit cut off before it closed: no title in it.
    if let Some(start) = s.find("<think>") {
        s.truncate(start);
    }
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let line = line.trim_start_matches("Title:").trim_start_matches("title:");
    let trimmed = line
        .trim()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '“' | '”' | '‘' | '’' | '`' | '*' | '#'))
        .trim_end_matches(['.', '!', ':', ';', ','])
        .trim();
    truncate_words(trimmed, MAX_TITLE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_lose_reasoning_quotes_and_trailing_punctuation() {
        assert_eq!(clean_title("<think>hmm, maybe</think>\n\"Rust lifetimes explained.\""), "Rust lifetimes explained");
        assert_eq!(clean_title("Title: Paris trip\nextra"), "Paris trip");
        // Cut off inside the reasoning: nothing usable, so the fallback title stays.
        assert_eq!(clean_title("<think>Let me think about what this chat is"), "");
    }

    #[test]
    fn titles_are_at_most_sixty_characters_cut_at_a_word() {
        let t = clean_title(&"word ".repeat(40));
        assert!(t.chars().count() <= MAX_TITLE_CHARS && !t.ends_with(' '), "{t:?}");
    }
}
