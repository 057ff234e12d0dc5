//! The `jobs` table: the client-visible record of every job, and the outbox the dispatcher
//! drains (`dispatched_at is null`). Status changes are conditional updates, so two
//! deliveries of one job never both run it.

use super::Exec;
use crate::error::StoreError;
use crate::ids::{JobId, UserId};
use crate::jobs::{JobKind, JobStatus};
use crate::time::now_ms;

const COLUMNS: &str = "id, kind, queue, owner_id, payload, status, attempts, max_attempts, progress, result, \
    error, run_after, dispatched_at, lease_until, cancel_requested, created_at, started_at, finished_at, updated_at";

/// A job row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    #[sqlx(try_from = "String")]
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub owner_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub run_after: i64,
    pub dispatched_at: Option<i64>,
    pub lease_until: Option<i64>,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Failed)
    }

    pub fn kind(&self) -> Option<JobKind> {
        JobKind::parse(&self.kind)
    }

    pub fn owner(&self) -> Option<UserId> {
        self.owner_id.as_deref().and_then(|s| s.parse().ok())
    }
}

/// Writes a queued job (the outbox row). Call it in the same transaction as the domain write
/// it belongs to; the dispatcher hands it to the queue after commit.
pub async fn enqueue<'e, E: Exec<'e>>(
    ex: E,
    kind: JobKind,
    owner: Option<UserId>,
    payload: &impl serde::Serialize,
) -> Result<JobId, StoreError> {
    let id = JobId::new();
    let policy = kind.policy();
    let now = now_ms();
    let payload = serde_json::to_string(payload).map_err(anyhow::Error::from)?;
    sqlx::query(
        "insert into parley_jobs (id, kind, queue, owner_id, payload, status, max_attempts, run_after, created_at, updated_at)
         values ($1, $2, $3, $4, $5, 'queued', $6, $7, $7, $7)",
    )
    .bind(id.to_string())
    .bind(kind.as_str())
    .bind(policy.queue.as_str())
    .bind(owner.map(|o| o.to_string()))
    .bind(payload)
    .bind(i64::from(policy.max_attempts))
    .bind(now)
    .execute(ex)
    .await?;
    Ok(id)
}

pub async fn get<'e, E: Exec<'e>>(ex: E, id: JobId) -> Result<Option<Job>, StoreError> {
    let sql = format!("select {COLUMNS} from parley_jobs where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

/// A page of jobs, newest first; `owner` restricts to one user's jobs.
pub async fn list<'e, E: Exec<'e>>(
    ex: E,
    owner: Option<UserId>,
    status: Option<JobStatus>,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from parley_jobs
         where ($1 is null or owner_id = $1) and ($2 is null or status = $2) and ($3 is null or id < $3)
         order by id desc limit $4"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner.map(|o| o.to_string()))
        .bind(status.map(|s| s.as_str()))
        .bind(before.map(|b| b.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Takes up to `limit` due outbox rows for dispatch in one statement: `(id, queue)`. A row
/// another dispatcher took first is skipped (the `dispatched_at is null` check is made again
/// on the row itself).
pub async fn claim_due<'e, E: Exec<'e>>(ex: E, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "update parley_jobs set dispatched_at = $1
         where dispatched_at is null and id in (
             select id from parley_jobs where dispatched_at is null and run_after <= $1
               and status in ('queued', 'retrying') order by run_after limit $2)
         returning id, queue",
    )
    .bind(now_ms())
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// Gives an outbox row back after a failed push.
pub async fn unclaim_dispatch<'e, E: Exec<'e>>(ex: E, id: &str) -> Result<(), StoreError> {
    sqlx::query("update parley_jobs set dispatched_at = null where id = $1").bind(id).execute(ex).await?;
    Ok(())
}

/// How far apart the clocks of two processes may be.
const CLOCK_SKEW_MS: i64 = 500;

/// Starts an attempt: the job must be waiting and due (or running under an expired lease,
/// its worker gone) and not cancelled. `None` means someone else has it, it is finished, or
/// its retry is not due yet (a duplicate delivery must not skip the backoff).
pub async fn start<'e, E: Exec<'e>>(ex: E, id: JobId, lease_ms: i64) -> Result<Option<Job>, StoreError> {
    let now = now_ms();
    let sql = format!(
        "update parley_jobs set status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, $2),
             lease_until = $3, updated_at = $2
         where id = $1 and cancel_requested = false
           and ((status in ('queued', 'retrying') and run_after <= $4) or (status = 'running' and lease_until < $2))
         returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(now)
        .bind(now + lease_ms)
        // Room for the clocks of the process that wrote `run_after` and this one to differ.
        .bind(now + CLOCK_SKEW_MS)
        .fetch_optional(ex)
        .await?)
}

/// Gives a job that was delivered before it was due (a duplicate delivery, or a clock of the
/// process that scheduled it ahead of this one's) back to the outbox, for the dispatcher to
/// hand over when it is due. Whether it was such a job.
pub async fn return_undue<'e, E: Exec<'e>>(ex: E, id: JobId) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set dispatched_at = null, updated_at = $2
         where id = $1 and status in ('queued', 'retrying') and run_after > $3 and dispatched_at is not null",
    )
    .bind(id.to_string())
    .bind(now)
    .bind(now + CLOCK_SKEW_MS)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Extends the lease of attempt `attempt` of a running job; returns whether a cancel was
/// requested (`None` if that attempt no longer owns the job). The attempt number fences off
/// a worker whose lease expired and whose job another worker took over.
pub async fn renew_lease<'e, E: Exec<'e>>(
    ex: E,
    id: JobId,
    attempt: i64,
    lease_ms: i64,
) -> Result<Option<bool>, StoreError> {
    let now = now_ms();
    let row: Option<(crate::db::DbBool,)> = sqlx::query_as(
        "update parley_jobs set lease_until = $3, updated_at = $4 where id = $1 and attempts = $2 and status = 'running'
         returning cancel_requested",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(now + lease_ms)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|(b,)| b.0))
}

/// Ends attempt `attempt` with `status`; false if that attempt no longer owns the job.
pub async fn finish<'e, E: Exec<'e>>(
    ex: E,
    id: JobId,
    attempt: i64,
    status: JobStatus,
    result: Option<&serde_json::Value>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set status = $3, result = $4, error = $5, finished_at = $6, lease_until = null, updated_at = $6
         where id = $1 and attempts = $2 and status = 'running'",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(status.as_str())
    .bind(result.map(|r| r.to_string()))
    .bind(error)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Schedules another attempt at `run_after` (back into the outbox), or, when a cancel came
/// in meanwhile, ends the job cancelled. Returns the new status (`None`: the attempt no
/// longer owns the job).
pub async fn retry_later<'e, E: Exec<'e>>(
    ex: E,
    id: JobId,
    attempt: i64,
    error: &str,
    run_after: i64,
) -> Result<Option<JobStatus>, StoreError> {
    let now = now_ms();
    let row: Option<(String,)> = sqlx::query_as(
        "update parley_jobs set
             status = case when cancel_requested then 'cancelled' else 'retrying' end,
             finished_at = case when cancel_requested then $5 else null end,
             error = $3, run_after = $4, dispatched_at = null, lease_until = null, updated_at = $5
         where id = $1 and attempts = $2 and status = 'running' returning status",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(error)
    .bind(run_after)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    Ok(row.and_then(|(s,)| JobStatus::parse(&s)))
}

/// Gives an interrupted attempt back to the outbox (a worker shutting down): it does not
/// count against the job's attempts.
pub async fn hand_back<'e, E: Exec<'e>>(ex: E, id: JobId, attempt: i64) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set status = case when cancel_requested then 'cancelled' else 'retrying' end,
             finished_at = case when cancel_requested then $3 else null end,
             attempts = attempts - 1, run_after = $3, dispatched_at = null, lease_until = null, updated_at = $3
         where id = $1 and attempts = $2 and status = 'running'",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a failed or cancelled job back in the queue with a fresh attempt budget and a fresh
/// event stream (admin retry).
pub async fn requeue<'e, E: Exec<'e> + Copy>(ex: E, id: JobId) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set status = 'queued', attempts = 0, error = null, result = null, finished_at = null,
             run_after = $2, dispatched_at = null, cancel_requested = false, updated_at = $2
         where id = $1 and status in ('failed', 'cancelled')",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query("delete from job_events where job_id = $1").bind(id.to_string()).execute(ex).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled,
    /// The job is running; its worker stops it shortly.
    Requested,
    /// The job had already finished (or is gone).
    Finished,
}

/// Cancels a job: a waiting job ends at once; a running one is asked to stop.
pub async fn cancel<'e, E: Exec<'e> + Copy>(ex: E, id: JobId) -> Result<CancelOutcome, StoreError> {
    let now = now_ms();
    let waiting = sqlx::query(
        "update parley_jobs set status = 'cancelled', cancel_requested = true, finished_at = $2, updated_at = $2
         where id = $1 and status in ('queued', 'retrying')",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    if waiting.rows_affected() == 1 {
        return Ok(CancelOutcome::Cancelled);
    }
    let running = sqlx::query(
        "update parley_jobs set cancel_requested = true, updated_at = $2 where id = $1 and status = 'running'",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(if running.rows_affected() == 1 { CancelOutcome::Requested } else { CancelOutcome::Finished })
}

/// Running jobs whose worker stopped renewing the lease: back to the outbox, or finished
/// (failed when their attempts are used up, cancelled when a cancel was requested).
/// Returns the jobs that were finished, with their new status.
pub async fn recover_expired<'e, E: Exec<'e> + Copy>(ex: E) -> Result<Vec<(Job, JobStatus)>, StoreError> {
    let now = now_ms();
    let sql = format!(
        "update parley_jobs set
             status = case when cancel_requested then 'cancelled' else 'failed' end,
             error = case when cancel_requested then 'cancelled' else 'the worker running this job stopped responding' end,
             finished_at = $1, lease_until = null, updated_at = $1
         where status = 'running' and lease_until < $1 and (attempts >= max_attempts or cancel_requested)
         returning {COLUMNS}"
    );
    let finished: Vec<Job> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(ex).await?;
    sqlx::query(
        "update parley_jobs set status = 'retrying', error = 'the worker running this job stopped responding',
             dispatched_at = null, run_after = $1, lease_until = null, updated_at = $1
         where status = 'running' and lease_until < $1",
    )
    .bind(now)
    .execute(ex)
    .await?;
    Ok(finished.into_iter().map(|j| (j.status(), j)).map(|(s, j)| (j, s)).collect())
}

/// Outbox rows handed to the queue more than `older_than_ms` ago that never started (the
/// push was lost, or the queue gave up on them): back into the outbox. Safe because a
/// start is conditional, so a duplicate delivery runs nothing twice.
pub async fn redispatch_stale<'e, E: Exec<'e>>(ex: E, older_than_ms: i64) -> Result<u64, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set dispatched_at = null, updated_at = $1
         where status in ('queued', 'retrying') and dispatched_at < $2",
    )
    .bind(now)
    .bind(now - older_than_ms)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// Job counts per status (for readiness and admin views).
pub async fn count_by_status<'e, E: Exec<'e>>(ex: E) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as("select status, count(*) from parley_jobs group by status").fetch_all(ex).await?)
}

/// When `owner` last got a job of `kind` whose payload contains `marker` (rate limits).
pub async fn last_created<'e, E: Exec<'e>>(
    ex: E,
    owner: UserId,
    kind: JobKind,
    marker: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "select max(created_at) from parley_jobs where owner_id = $1 and kind = $2 and payload like $3",
    )
    .bind(owner.to_string())
    .bind(kind.as_str())
    .bind(format!("%{marker}%"))
    .fetch_one(ex)
    .await?)
}

/// Jobs of `kind` of `owner` not finished yet.
pub async fn count_active<'e, E: Exec<'e>>(ex: E, owner: UserId, kind: JobKind) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(*) from parley_jobs where owner_id = $1 and kind = $2 and status in ('queued', 'running', 'retrying')",
    )
    .bind(owner.to_string())
    .bind(kind.as_str())
    .fetch_one(ex)
    .await?)
}
