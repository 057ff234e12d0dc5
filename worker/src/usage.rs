//! Recording the tokens a finished attempt used: the provider's figures where it gave them,
//! else Parley's own count of the prompt and of the text received.

use crate::WorkerContext;
use crate::prompt::TokenCounter;
use parley_shared::ids::LlmConfigId;
use parley_shared::llm::ChatMessage;
use parley_shared::store::jobs::Job;
use parley_shared::store::usage::{self, NewUsage, UsageKind, UsageOutcome};

/// What an attempt used, as far as it got.
pub struct Spent<'a> {
    pub kind: UsageKind,
    pub config: LlmConfigId,
    pub model: &'a str,
    /// The provider's `(prompt, completion)` figures, when it sent them.
    pub reported: Option<(u32, u32)>,
    pub prompt: &'a [ChatMessage],
    pub text: &'a str,
    pub outcome: UsageOutcome,
}

/// Records `spent` for the job's owner. A failure to record is logged, not the job's: the
/// reply itself is done.
pub async fn record(ctx: &WorkerContext, job: &Job, spent: Spent<'_>) {
    let Some(user) = job.owner() else { return };
    let (prompt_tokens, completion_tokens, from_provider) = match spent.reported {
        Some((p, c)) => (i64::from(p), i64::from(c), true),
        None => {
            let counter = TokenCounter::for_model(spent.model);
            let prompt: usize = spent.prompt.iter().map(|m| counter.count(&m.content)).sum();
            let completion = if spent.text.is_empty() { 0 } else { counter.count(spent.text) };
            (prompt as i64, completion as i64, false)
        }
    };
    let new = NewUsage {
        user,
        job: job.id,
        attempt: job.attempts,
        kind: spent.kind,
        config: Some(spent.config),
        model: spent.model,
        prompt_tokens,
        completion_tokens,
        from_provider,
        outcome: spent.outcome,
    };
    if let Err(e) = usage::record(&ctx.db.writer, &new).await {
        tracing::warn!(error = %e, "recording token usage");
    }
}
