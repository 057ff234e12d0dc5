//! `llm_completion`: streams an assistant reply from the session's provider. Deltas go out as
//! `delta` events as they arrive and the partial text is saved at least every 500 ms; a retry
//! starts the message over and says so; a cancel keeps the partial text.

use super::{CancelSignal, JobError, Outcome as JobOutcome, RunJob};
use crate::WorkerContext;
use crate::usage::Spent;
use futures::StreamExt;
use parley_shared::crypto;
use parley_shared::ids::{LlmConfigId, MessageId};
use parley_shared::jobs::{GenerateTitle, JobSpec, LlmCompletion};
use parley_shared::llm::{ChatMessage, LlmError, Provider, ProviderSettings, StreamItem, UserFacing};
use parley_shared::metrics;
use parley_shared::store::chat::{self, MessageRole, MessageStatus, Outcome};
use parley_shared::store::job_events::{self, EventType};
use parley_shared::store::jobs::{self as job_store, Job};
use parley_shared::store::llm_configs::{self, LlmConfig};
use parley_shared::store::usage::{UsageKind, UsageOutcome};
use serde_json::json;
use std::time::{Duration, Instant};

const SAVE_EVERY: Duration = Duration::from_millis(500);

/// Replies kept when building a prompt (before trimming to the context window).
const HISTORY_LIMIT: i64 = 500;

impl RunJob for LlmCompletion {
    async fn run(self, ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> JobOutcome {
        complete(self, ctx, job, cancel).await.into()
    }
}

async fn complete(
    p: LlmCompletion,
    ctx: &WorkerContext,
    job: &Job,
    mut cancel: CancelSignal,
) -> Result<JobOutcome, JobError> {
    let (pool, writer) = (&ctx.db.pool, &ctx.db.writer);
    // Independent reads at once (the provider is called that much sooner): the message,
    // its session and model, the history and the event stream's end. A payload from before
    // it named the session waits for the message first.
    let session_id = match p.session_id {
        Some(id) => id,
        None => read_message(ctx, p.message_id).await?.session_id,
    };
    let (message, session_config, history, events) = tokio::join!(
        read_message(ctx, p.message_id),
        async {
            let (session, config) =
                tokio::try_join!(chat::session_by_id(pool, session_id), llm_configs::for_session(pool, session_id))?;
            let session = session.ok_or_else(|| JobError::fatal("the session was deleted"))?;
            let config = config.ok_or_else(|| JobError::fatal("no enabled LLM configuration"))?;
            Ok::<_, JobError>((session, config))
        },
        chat::history_before(pool, session_id, p.message_id, HISTORY_LIMIT),
        // This attempt owns the job's event stream until it returns.
        ctx.open_stream(job.id),
    );
    // A reply already written (an earlier attempt finished it) succeeds whatever the rest
    // found: its model may have been disabled since.
    let message = message?;
    if message.status == MessageStatus::Complete {
        return Ok(JobOutcome::Succeeded(json!({"message_id": message.id})));
    }
    let ((session, config), history, mut events) = (session_config?, history?, events?);
    let settings = provider_settings(ctx, &config)?;
    let reserve = config.max_tokens.unwrap_or(1024).max(1) as usize;
    let counter = crate::prompt::TokenCounter::for_model(&config.model);
    let window = config.context_window.max(1) as usize;
    let prompt = crate::prompt::build(counter, &config.system_prompt, &history, window, reserve);

    let replied: Result<JobOutcome, JobError> = async {
        if job.attempts > 1 || !message.content.is_empty() {
            chat::save_partial(writer, message.id, "", MessageStatus::Pending).await?;
            // Watchers drop what they have of the failed attempt's text; an attempt that
            // sent none has nothing to replace.
            if job_events::has_text_since_restart(pool, job.id).await? {
                events.emit(EventType::Status, json!({"status": "restarted", "attempt": job.attempts}))?;
            }
        }
        let mut text = String::new();
        let (mut usage, mut finish, mut model) = (None, None, Some(config.model.clone()));
        let asked = Instant::now();
        metrics::llm_request(&config.name, &config.provider);
        // A cancel is honoured while the provider has not answered yet, too.
        let connected = tokio::select! {
            connected = ctx.llm.stream_chat(&settings, &prompt) => connected,
            _ = cancel.changed() => {
                record(ctx, job, &config, model.as_deref(), None, &prompt, &text, UsageOutcome::Cancelled).await;
                return cancelled(ctx, message.id, &text, model.as_deref()).await;
            }
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                metrics::provider_error(&config.provider, e.kind());
                record(ctx, job, &config, model.as_deref(), None, &prompt, "", UsageOutcome::Failed).await;
                return Err(fail(ctx, job, message.id, "", e).await);
            }
        };
        chat::save_partial(writer, message.id, "", MessageStatus::Streaming).await?;

        // The partial text is saved at most SAVE_EVERY after the last save, once it changed
        // (also when the provider pauses after a burst of tokens).
        let mut saved_at = Instant::now();
        let mut unsaved = false;
        loop {
            let save_due = tokio::time::Instant::from_std(saved_at + SAVE_EVERY);
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(StreamItem::Delta(delta))) => {
                        if text.is_empty() && !delta.is_empty() {
                            metrics::llm_first_token(&config.name, &config.provider, asked.elapsed());
                        }
                        text.push_str(&delta);
                        events.emit(EventType::Delta, json!({"text": delta}))?;
                        unsaved = true;
                    }
                    Some(Ok(StreamItem::Usage { prompt_tokens, completion_tokens })) => usage = Some((prompt_tokens, completion_tokens)),
                    Some(Ok(StreamItem::Finish { reason })) => finish = Some(reason),
                    Some(Ok(StreamItem::Model(m))) => model = Some(m),
                    Some(Err(e)) => {
                        metrics::provider_error(&config.provider, e.kind());
                        record(ctx, job, &config, model.as_deref(), usage, &prompt, &text, UsageOutcome::Failed).await;
                        return Err(fail(ctx, job, message.id, &text, e).await);
                    }
                },
                _ = tokio::time::sleep_until(save_due), if unsaved => {
                    chat::save_partial(writer, message.id, &text, MessageStatus::Streaming).await?;
                    saved_at = Instant::now();
                    unsaved = false;
                }
                _ = cancel.changed() => {
                    record(ctx, job, &config, model.as_deref(), usage, &prompt, &text, UsageOutcome::Cancelled).await;
                    return cancelled(ctx, message.id, &text, model.as_deref()).await;
                }
            }
        }
        let outcome = Outcome {
            status: MessageStatus::Complete,
            content: &text,
            model: model.as_deref(),
            prompt_tokens: usage.map(|u| i64::from(u.0)),
            completion_tokens: usage.map(|u| i64::from(u.1)),
            finish_reason: finish.as_deref(),
            error: None,
        };
        chat::finish_message(writer, message.id, &outcome).await?;
        record(ctx, job, &config, model.as_deref(), usage, &prompt, &text, UsageOutcome::Complete).await;
        if let Some((prompt, completion)) = usage {
            metrics::llm_tokens(&config.name, &config.provider, u64::from(prompt), u64::from(completion));
        }
        chat::touch_session(writer, session.id).await?;
        if session.title_is_auto && history.iter().all(|m| m.role == MessageRole::User) {
            let payload = GenerateTitle { session_id: session.id };
            job_store::enqueue(&ctx.db.writer, job.owner(), &payload).await?;
            ctx.queue.wake(GenerateTitle::QUEUE);
        }
        Ok(JobOutcome::Succeeded(json!({
            "message_id": message.id,
            "model": model,
            "finish_reason": finish,
            "prompt_tokens": usage.map(|u| u.0),
            "completion_tokens": usage.map(|u| u.1),
        })))
    }
    .await;
    // Every event of this attempt is stored (and published) before the runner writes the
    // final one.
    let closed = events.close().await;
    let value = replied?;
    closed?;
    Ok(value)
}

async fn read_message(ctx: &WorkerContext, id: MessageId) -> Result<chat::Message, JobError> {
    chat::get_message(&ctx.db.pool, id).await?.ok_or_else(|| JobError::fatal("the message was deleted"))
}

/// Records the tokens of this attempt of a chat reply.
#[expect(clippy::too_many_arguments, reason = "the figures of one attempt, each from its own place")]
async fn record(
    ctx: &WorkerContext,
    job: &Job,
    config: &LlmConfig,
    model: Option<&str>,
    reported: Option<(u32, u32)>,
    prompt: &[ChatMessage],
    text: &str,
    outcome: UsageOutcome,
) {
    let model = model.unwrap_or(&config.model);
    let spent = Spent { kind: UsageKind::Chat, config: config.id, model, reported, prompt, text, outcome };
    crate::usage::record(ctx, job, spent).await;
}

/// Ends the reply as cancelled, keeping the text it has.
async fn cancelled(
    ctx: &WorkerContext,
    message_id: MessageId,
    text: &str,
    model: Option<&str>,
) -> Result<JobOutcome, JobError> {
    let outcome = Outcome { model, ..Outcome::new(MessageStatus::Cancelled, text) };
    chat::finish_message(&ctx.db.writer, message_id, &outcome).await?;
    tracing::info!(chars = text.len(), "generation cancelled; partial text kept");
    Ok(JobOutcome::Cancelled)
}

/// The session's config, or the default one; it must be enabled.
pub async fn resolve_config(ctx: &WorkerContext, id: Option<LlmConfigId>) -> Result<LlmConfig, JobError> {
    let pool = &ctx.db.pool;
    let config = match id {
        Some(id) => llm_configs::get(pool, id).await?,
        None => llm_configs::default_enabled(pool).await?,
    };
    config.filter(|c| c.enabled).ok_or_else(|| JobError::fatal("no enabled LLM configuration"))
}

/// Provider settings with the API key unsealed.
pub fn provider_settings(ctx: &WorkerContext, config: &LlmConfig) -> Result<ProviderSettings, JobError> {
    let provider = Provider::parse(&config.provider).ok_or_else(|| JobError::fatal("unknown provider"))?;
    let api_key = match &config.api_key_enc {
        Some(sealed) => Some(crypto::decrypt(&ctx.keys.encryption, sealed).map_err(JobError::Fatal)?.into()),
        None => None,
    };
    Ok(ProviderSettings {
        provider,
        base_url: config.base_url.clone(),
        api_key,
        model: config.model.clone(),
        temperature: config.temperature.map(|t| t as f32),
        max_tokens: config.max_tokens.map(|t| t as u32),
        stop: Vec::new(),
    })
}

/// Records a failed attempt on the message and maps the provider error to a job error.
async fn fail(ctx: &WorkerContext, job: &Job, message_id: MessageId, text: &str, error: LlmError) -> JobError {
    let last = !error.is_retryable() || job.attempts >= job.max_attempts;
    let msg = error.public_message();
    let status = if last { MessageStatus::Failed } else { MessageStatus::Pending };
    let outcome = Outcome { error: Some(&msg), ..Outcome::new(status, text) };
    if let Err(e) = chat::finish_message(&ctx.db.writer, message_id, &outcome).await {
        tracing::warn!(error = %e, "recording a failed reply");
    }
    to_job_error(error)
}

/// The job error of a provider failure: its owner sees the class of failure, admins the
/// redacted detail (see [`UserFacing`]).
pub fn to_job_error(error: LlmError) -> JobError {
    let (retryable, retry_after) = (error.is_retryable(), error.retry_after());
    let error = anyhow::Error::new(UserFacing(error));
    if retryable { JobError::Retryable { error, retry_after } } else { JobError::Fatal(error) }
}
