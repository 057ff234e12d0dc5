//! `api_completion`: streams the answer to one call of the OpenAI-compatible chat completions
//! endpoint. The prompt is the call's own messages (as OpenAI's API has it), with the call's
//! sampling settings over the config's. Deltas go out as `delta` events; the answer is the
//! job's result. A call that opted into a chat session fills that session's reply too.

use super::llm_completion::{provider_settings, to_job_error};
use super::{CancelSignal, JobError, Outcome as JobOutcome, RunJob};
use crate::WorkerContext;
use crate::usage::Spent;
use futures::StreamExt;
use parley_shared::ids::MessageId;
use parley_shared::jobs::{ApiCompletion, GenerateTitle, JobSpec};
use parley_shared::llm::ChatMessage;
use parley_shared::llm::StreamItem;
use parley_shared::store::api_completions;
use parley_shared::store::chat::{self, MessageRole, MessageStatus, Outcome};
use parley_shared::store::job_events::{self, EventType};
use parley_shared::store::jobs::{self as job_store, Job};
use parley_shared::store::llm_configs::{self, LlmConfig};
use parley_shared::store::usage::{UsageKind, UsageOutcome};
use serde_json::json;

impl RunJob for ApiCompletion {
    async fn run(self, ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> JobOutcome {
        complete(self, ctx, job, cancel).await.into()
    }
}

async fn complete(
    p: ApiCompletion,
    ctx: &WorkerContext,
    job: &Job,
    mut cancel: CancelSignal,
) -> Result<JobOutcome, JobError> {
    let (pool, writer) = (&ctx.db.pool, &ctx.db.writer);
    let call = api_completions::get(pool, p.completion_id)
        .await?
        .ok_or_else(|| JobError::fatal("the completion request was deleted"))?;
    let request = call.request().map_err(|e| JobError::Fatal(e.into()))?;
    let config = match call.config_id {
        Some(id) => llm_configs::get(pool, id).await?.filter(|c| c.enabled),
        None => None,
    }
    .ok_or_else(|| JobError::fatal("the model is no longer enabled"))?;
    let mut settings = provider_settings(ctx, &config)?;
    settings.temperature = request.temperature.or(settings.temperature);
    settings.max_tokens = request.max_tokens.or(settings.max_tokens);
    settings.stop = request.stop.clone();
    if let Some(message_id) = p.message_id {
        match chat::get_message(pool, message_id).await? {
            Some(m) if m.status == MessageStatus::Complete => {}
            Some(_) => chat::save_partial(writer, message_id, "", MessageStatus::Pending).await?,
            None => return Err(JobError::fatal("the chat reply was deleted")),
        }
    }

    let mut events = ctx.open_stream(job.id).await?;
    let answered: Result<JobOutcome, JobError> = async {
        // Watchers drop the text of a failed attempt that sent some.
        if job.attempts > 1 && job_events::has_text_since_restart(pool, job.id).await? {
            events.emit(EventType::Status, json!({"status": "restarted", "attempt": job.attempts}))?;
        }
        let mut text = String::new();
        let (mut usage, mut finish, mut model) = (None, None, config.model.clone());
        let connected = tokio::select! {
            connected = ctx.llm.stream_chat(&settings, &request.messages) => connected,
            _ = cancel.changed() => {
                spend(ctx, job, &config, &model, None, &request.messages, &text, UsageOutcome::Cancelled).await;
                return cancelled(ctx, &p, &text, &model).await;
            }
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                spend(ctx, job, &config, &model, None, &request.messages, "", UsageOutcome::Failed).await;
                return Err(to_job_error(e));
            }
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(StreamItem::Delta(delta))) => {
                        text.push_str(&delta);
                        events.emit(EventType::Delta, json!({"text": delta}))?;
                    }
                    Some(Ok(StreamItem::Usage { prompt_tokens, completion_tokens })) => usage = Some((prompt_tokens, completion_tokens)),
                    Some(Ok(StreamItem::Finish { reason })) => finish = Some(reason),
                    Some(Ok(StreamItem::Model(m))) => model = m,
                    Some(Err(e)) => {
                        spend(ctx, job, &config, &model, usage, &request.messages, &text, UsageOutcome::Failed).await;
                        return Err(to_job_error(e));
                    }
                },
                _ = cancel.changed() => {
                    spend(ctx, job, &config, &model, usage, &request.messages, &text, UsageOutcome::Cancelled).await;
                    return cancelled(ctx, &p, &text, &model).await;
                }
            }
        }
        let (prompt_tokens, completion_tokens) = (usage.map(|u| i64::from(u.0)), usage.map(|u| i64::from(u.1)));
        api_completions::set_usage(writer, call.id, prompt_tokens, completion_tokens).await?;
        spend(ctx, job, &config, &model, usage, &request.messages, &text, UsageOutcome::Complete).await;
        if let Some(message_id) = p.message_id {
            let outcome = Outcome {
                status: MessageStatus::Complete,
                content: &text,
                model: Some(&model),
                prompt_tokens,
                completion_tokens,
                finish_reason: finish.as_deref(),
                error: None,
            };
            chat::finish_message(writer, message_id, &outcome).await?;
            title_new_session(ctx, job, message_id).await?;
        }
        Ok(JobOutcome::Succeeded(json!({
            "completion_id": call.id,
            "message_id": p.message_id,
            "content": text,
            "model": model,
            "finish_reason": finish,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        })))
    }
    .await;
    // Every event of this attempt is stored (and published) before the runner writes the
    // final one.
    let closed = events.close().await;
    let value = answered?;
    closed?;
    Ok(value)
}

/// After the first reply of a chat session the call started, a `generate_title` job names it,
/// as after a chat's first reply.
async fn title_new_session(ctx: &WorkerContext, job: &Job, message_id: MessageId) -> Result<(), JobError> {
    let pool = &ctx.db.pool;
    let Some(message) = chat::get_message(pool, message_id).await? else { return Ok(()) };
    let Some(session) = chat::session_by_id(pool, message.session_id).await? else { return Ok(()) };
    let history = chat::history_before(pool, session.id, message.id, 100).await?;
    if session.title_is_auto && history.iter().all(|m| m.role == MessageRole::User) {
        job_store::enqueue(&ctx.db.writer, job.owner(), &GenerateTitle { session_id: session.id }).await?;
        ctx.queue.wake(GenerateTitle::QUEUE);
    }
    Ok(())
}

/// Records the tokens of this attempt of a call.
#[expect(clippy::too_many_arguments, reason = "the figures of one attempt, each from its own place")]
async fn spend(
    ctx: &WorkerContext,
    job: &Job,
    config: &LlmConfig,
    model: &str,
    reported: Option<(u32, u32)>,
    prompt: &[ChatMessage],
    text: &str,
    outcome: UsageOutcome,
) {
    let spent = Spent { kind: UsageKind::Api, config: config.id, model, reported, prompt, text, outcome };
    crate::usage::record(ctx, job, spent).await;
}

/// Ends the call as cancelled; a chat reply it was filling keeps the text it has.
async fn cancelled(ctx: &WorkerContext, p: &ApiCompletion, text: &str, model: &str) -> Result<JobOutcome, JobError> {
    if let Some(message_id) = p.message_id {
        let outcome = Outcome { model: Some(model), ..Outcome::new(MessageStatus::Cancelled, text) };
        chat::finish_message(&ctx.db.writer, message_id, &outcome).await?;
    }
    Ok(JobOutcome::Cancelled)
}
