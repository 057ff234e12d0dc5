//! Periodic work as jobs: each schedule runs a `scheduled` job once per tick (a fixed
//! interval, aligned to the Unix epoch). Every worker process looks at each tick boundary;
//! a unique `(schedule, tick)` row, written with the job in one transaction, makes exactly
//! one of them enqueue it.

use crate::Config;
use crate::db::Db;
use crate::error::StoreError;
use crate::ids::JobId;
use crate::jobs::Scheduled;
use crate::store::jobs;
use crate::time::now_ms;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The periodic work Parley does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Deletes the files of expired exports.
    PruneExports,
    /// Deletes expired email-verification and password-reset tokens.
    PruneEmailTokens,
    /// Deletes sign-in sessions that ended more than `PARLEY_SESSION_RETENTION_DAYS` ago.
    PruneSessions,
    /// Deletes the event streams of jobs finished more than
    /// `PARLEY_JOB_EVENTS_RETENTION_SECS` ago.
    PruneJobEvents,
    /// Deletes activity-log entries older than `PARLEY_AUDIT_RETENTION_DAYS`, and expired
    /// second-factor challenges.
    PruneAudit,
    /// Sums the token usage of days past any budget's window into one row per user, config,
    /// model, kind and day.
    RollupUsage,
}

impl Schedule {
    pub const ALL: [Schedule; 6] = [
        Schedule::PruneExports,
        Schedule::PruneEmailTokens,
        Schedule::PruneSessions,
        Schedule::PruneJobEvents,
        Schedule::PruneAudit,
        Schedule::RollupUsage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::PruneExports => "prune_exports",
            Schedule::PruneEmailTokens => "prune_email_tokens",
            Schedule::PruneSessions => "prune_sessions",
            Schedule::PruneJobEvents => "prune_job_events",
            Schedule::PruneAudit => "prune_audit",
            Schedule::RollupUsage => "rollup_usage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The default interval.
    pub fn default_every(self) -> Duration {
        match self {
            Schedule::PruneJobEvents => Duration::from_secs(300),
            Schedule::PruneExports | Schedule::PruneEmailTokens | Schedule::PruneAudit => Duration::from_secs(3600),
            Schedule::PruneSessions => Duration::from_secs(6 * 3600),
            Schedule::RollupUsage => Duration::from_secs(24 * 3600),
        }
    }

    /// The interval in effect (`PARLEY_SCHEDULES` overrides the defaults).
    pub fn every(self, config: &Config) -> Duration {
        config.schedules.iter().find(|(s, _)| *s == self).map_or(self.default_every(), |(_, every)| *every)
    }
}

/// The start of the tick `at_ms` falls in, for an interval of `every`.
pub fn tick_of(at_ms: i64, every: Duration) -> i64 {
    let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
    at_ms - at_ms.rem_euclid(every)
}

/// Enqueues `schedule`'s job for the tick starting at `tick`, unless a process did already;
/// the job when this call enqueued it.
pub async fn enqueue_tick(db: &Db, schedule: Schedule, tick: i64) -> Result<Option<JobId>, StoreError> {
    let mut tx = db.begin_write().await?;
    let job = jobs::enqueue(&mut *tx, None, &Scheduled { schedule, tick }).await?;
    let inserted = sqlx::query(
        "insert into schedule_runs (schedule, tick, job_id, created_at, updated_at) values ($1, $2, $3, $4, $4)
         on conflict (schedule, tick) do nothing",
    )
    .bind(schedule.as_str())
    .bind(tick)
    .bind(job.to_string())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Another process has this tick: its job runs, this one never existed.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(job))
}

/// A schedule's last run: its tick and job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastRun {
    pub tick: i64,
    pub job_id: String,
}

pub async fn last_run(db: &Db, schedule: Schedule) -> Result<Option<LastRun>, StoreError> {
    Ok(sqlx::query_as("select tick, job_id from schedule_runs where schedule = $1 order by tick desc limit 1")
        .bind(schedule.as_str())
        .fetch_optional(&db.pool)
        .await?)
}

/// Runs of `schedule` that have a row (for tests and operations).
pub async fn run_count(db: &Db, schedule: Schedule) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("select count(*) from schedule_runs where schedule = $1")
        .bind(schedule.as_str())
        .fetch_one(&db.pool)
        .await?)
}

/// Deletes email-verification and password-reset tokens that expired; how many.
pub async fn prune_email_tokens(db: &Db) -> Result<u64, StoreError> {
    Ok(sqlx::query("delete from email_tokens where expires_at < $1")
        .bind(now_ms())
        .execute(&db.writer)
        .await?
        .rows_affected())
}

/// Deletes sign-in sessions that ended (revoked or expired) more than `retention_days` ago,
/// with their refresh tokens; how many.
pub async fn prune_sessions(db: &Db, retention_days: u64) -> Result<u64, StoreError> {
    let age_ms = i64::try_from(retention_days).unwrap_or(i64::MAX / 86_400_000).saturating_mul(86_400_000);
    let before = now_ms().saturating_sub(age_ms);
    Ok(sqlx::query("delete from sessions where (revoked_at is not null and revoked_at < $1) or expires_at < $1")
        .bind(before)
        .execute(&db.writer)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_aligned_to_the_interval() {
        assert_eq!(tick_of(3_599_999, Duration::from_secs(3600)), 0);
        assert_eq!(tick_of(3_600_000, Duration::from_secs(3600)), 3_600_000);
        assert_eq!(tick_of(7_250_000, Duration::from_secs(3600)), 7_200_000);
    }
}
