//! `scheduled`: one tick of a schedule's periodic work. Each is idempotent (a delete of what
//! is past its time, or a rollup in one transaction), so a re-run after a crash does no harm.

use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use parley_shared::jobs::Scheduled;
use parley_shared::schedules::{self, Schedule};
use parley_shared::store::jobs::Job;
use serde_json::json;

impl RunJob for Scheduled {
    async fn run(self, ctx: &WorkerContext, _job: &Job, _cancel: CancelSignal) -> Outcome {
        run(self, ctx).await.into()
    }
}

async fn run(p: Scheduled, ctx: &WorkerContext) -> Result<serde_json::Value, JobError> {
    let db = &ctx.db;
    let deleted = match p.schedule {
        Schedule::PruneExports => {
            let store = parley_shared::exports::store(&ctx.config);
            parley_shared::usecases::exports::prune_expired(db, store.as_ref()).await?
        }
        Schedule::PruneEmailTokens => schedules::prune_email_tokens(db).await?,
        Schedule::PruneSessions => schedules::prune_sessions(db, ctx.config.session_retention_days).await?,
        Schedule::PruneJobEvents => {
            let retention_ms =
                i64::try_from(ctx.config.job_events_retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            let before = parley_shared::time::now_ms().saturating_sub(retention_ms);
            parley_shared::store::job_events::prune_finished(&db.writer, before).await?
        }
        Schedule::PruneAudit => {
            let entries = parley_shared::audit::prune(db, ctx.config.audit_retention_days).await?;
            // Second-factor challenges are useless once expired; a day on, they go too.
            let day_ago = parley_shared::time::now_ms() - 86_400_000;
            parley_shared::store::mfa::delete_challenges_before(&db.writer, day_ago).await?;
            entries
        }
        Schedule::RollupUsage => {
            let days = chrono::Days::new(parley_shared::store::usage::ROLLUP_AFTER_DAYS);
            let before = chrono::Utc::now().date_naive().checked_sub_days(days).unwrap_or_default();
            parley_shared::store::usage::rollup(db, &before.format("%Y-%m-%d").to_string()).await?
        }
    };
    if deleted > 0 {
        tracing::info!(schedule = p.schedule.as_str(), deleted, "scheduled pruning");
    }
    Ok(json!({"schedule": p.schedule, "tick": p.tick, "deleted": deleted}))
}
