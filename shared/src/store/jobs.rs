//! The `jobs` table: the client-visible record of every job and, at the same time, the queue.
//! One row owns every piece of a job's state: delivery (`status` and `run_after`), liveness
//! (`lease_until`, renewed by the worker that holds the job), the retry schedule
//! (`attempts`, `run_after`) and what clients see. Every change is a conditional update
//! fenced by status and attempt number, so two workers never both run one attempt, and a
//! worker whose lease was taken over cannot record an outcome.

use super::Exec;
use crate::db::DbBool;
use crate::error::StoreError;
use crate::ids::{JobId, UserId};
use crate::jobs::{JobKind, JobSpec, JobStatus, QueueName};
use crate::store::job_events;
use crate::time::{Timestamp, now_ms};
use sqlx::AnyConnection;

pub(crate) const COLUMNS: &str = "id, kind, queue, owner_id, payload, status, attempts, max_attempts, progress, result, \
    error, error_detail, run_after, lease_until, cancel_requested, created_at, started_at, finished_at, updated_at, request_id";

/// A job row. A kind or status the code does not know fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    #[sqlx(try_from = "String")]
    pub id: JobId,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    #[sqlx(try_from = "String")]
    pub queue: QueueName,
    pub owner_id: Option<String>,
    pub payload: String,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    /// The full (redacted) text behind `error`, for admins only.
    pub error_detail: Option<String>,
    pub run_after: Timestamp,
    pub lease_until: Option<Timestamp>,
    #[sqlx(try_from = "DbBool")]
    pub cancel_requested: bool,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// The `X-Request-Id` of the request that created the job, for its logs.
    pub request_id: Option<String>,
}

impl Job {
    pub fn owner(&self) -> Option<UserId> {
        self.owner_id.as_deref().and_then(|s| s.parse().ok())
    }

    /// The typed payload; a payload that does not parse as its kind's is an error.
    pub fn payload<J: JobSpec>(&self) -> Result<J, StoreError> {
        debug_assert_eq!(J::KIND, self.kind);
        serde_json::from_str(&self.payload).map_err(|e| StoreError::Other(anyhow::anyhow!("malformed payload: {e}")))
    }
}

/// The columns a new job's insert writes, and its values (`$1` to `$8`, see [`bind_new_job`]).
/// The columns of a new job, and their values as bound by [`bind_new_job`].
macro_rules! job_columns {
    () => {
        "parley_jobs (id, kind, queue, owner_id, payload, status, max_attempts, run_after, created_at, updated_at, request_id)"
    };
}
macro_rules! job_values {
    () => {
        "$1, $2, $3, $4, $5, 'queued', $6, $7, $7, $7, $8"
    };
}
const INSERT_JOB: &str = concat!("insert into ", job_columns!(), " values (", job_values!(), ")");

/// Writes a queued job only where `condition` holds (an SQL expression; the job binds `$1`
/// to `$8` with [`bind_new_job`], `$7` being the time).
pub(crate) fn insert_job_where(condition: &str) -> String {
    format!(concat!("insert into ", job_columns!(), " select ", job_values!(), " where {}"), condition)
}

/// Writes a queued job. Call it in the same transaction as the domain write it belongs to:
/// once that commits, the job is in the queue (a worker's claim finds it), and if it rolls
/// back, there is no job. Wake the queue's workers after commit ([`crate::queue::Queue::wake`]).
pub async fn enqueue<'e, E: Exec<'e>, J: JobSpec>(
    ex: E,
    owner: Option<UserId>,
    payload: &J,
) -> Result<JobId, StoreError> {
    let id = JobId::new();
    let payload = serde_json::to_string(payload).map_err(anyhow::Error::from)?;
    bind_new_job::<J>(sqlx::query(INSERT_JOB), id, owner, payload, now_ms()).execute(ex).await?;
    enqueued::<J>(id);
    Ok(id)
}

/// Writes a queued job and the activity-log entry that records who asked for it (`event`
/// gets the job's id), both or neither: on PostgreSQL in one statement, with no transaction
/// round trips; on SQLite in one transaction on the writer, sent as one script (the
/// writer is held for one trip to SQLite's thread rather than four). Wake the queue after it.
pub async fn enqueue_recorded<J: JobSpec>(
    db: &crate::Db,
    owner: Option<UserId>,
    payload: &J,
    event: impl FnOnce(JobId) -> crate::audit::AuditEvent,
) -> Result<JobId, StoreError> {
    let id = JobId::new();
    let event = event(id);
    let payload = serde_json::to_string(payload).map_err(anyhow::Error::from)?;
    // The entry binds `$9` to `$16` and takes the job's time (`$7`).
    let entry = "$9, $10, $11, $12, $13, $14, $15, $16, $7, $7";
    let bind = |query: crate::db::SqlQuery| {
        super::audit::bind_event(bind_new_job::<J>(query, id, owner, payload, now_ms()), &event)
    };
    let insert_entry = super::audit::INSERT;
    match db.backend {
        crate::db::Backend::Sqlite => {
            db.write_script(&format!("{INSERT_JOB}; {insert_entry} values ({entry})"), bind).await?;
        }
        crate::db::Backend::Postgres => {
            let sql = format!("with job as ({INSERT_JOB} returning id) {insert_entry} select {entry} from job");
            bind(sqlx::query(sqlx::AssertSqlSafe(sql))).execute(&db.writer).await?;
        }
    }
    enqueued::<J>(id);
    Ok(id)
}

pub(crate) fn bind_new_job<'q, J: JobSpec>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    id: JobId,
    owner: Option<UserId>,
    payload: String,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(id.to_string())
        .bind(J::KIND.as_str())
        .bind(J::QUEUE.as_str())
        .bind(owner.map(|o| o.to_string()))
        .bind(payload)
        .bind(i64::from(J::MAX_ATTEMPTS))
        .bind(now)
        .bind(crate::telemetry::request_id())
}

pub(crate) fn enqueued<J: JobSpec>(id: JobId) {
    crate::metrics::job_enqueued(J::KIND);
    tracing::info!(job.id = %id, job.kind = J::KIND.as_str(), "job enqueued");
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

/// `kind in (...)` of the kinds this build knows: a row of a kind from another version (a
/// rolling deploy) is left for a worker that knows it, never claimed and failed here.
fn known_kinds() -> String {
    let kinds: Vec<String> = JobKind::ALL.iter().map(|k| format!("'{}'", k.as_str())).collect();
    format!("kind in ({})", kinds.join(", "))
}

/// Due waiting jobs of `queue` (ids), oldest due first. A read: an idle worker's look
/// costs no write.
pub async fn claimable_due<'e, E: Exec<'e>>(ex: E, queue: QueueName, limit: i64) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "select id from parley_jobs where queue = $1 and status in ('queued', 'retrying') and run_after <= $2
           and cancel_requested = false and {} order by run_after limit $3",
        known_kinds()
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(queue.as_str())
        .bind(now_ms())
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Running jobs of `queue` whose lease expired (their worker died), ids.
pub async fn claimable_expired<'e, E: Exec<'e>>(
    ex: E,
    queue: QueueName,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "select id from parley_jobs where queue = $1 and status = 'running' and lease_until < $2 and {} limit $3",
        known_kinds()
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(queue.as_str())
        .bind(now_ms())
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Starts attempts of the jobs `ids` (from [`claimable_due`] or [`claimable_expired`]) that are still free to take:
/// status `running`, `attempts` + 1, a lease of `lease_ms`. Jobs another worker took first
/// are skipped, and so are expired jobs out of attempts or with a cancel request (see
/// [`end_abandoned`]). Runs in the caller's transaction, on SQLite (PostgreSQL uses
/// [`start_attempts_with_events`]).
pub async fn start_attempts(conn: &mut AnyConnection, ids: &[String], lease_ms: i64) -> Result<Vec<Job>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let sql = start_statement(&placeholders(3, ids.len()));
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(now + lease_ms);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

/// Starts attempts of up to `limit` due waiting jobs of `queue`, oldest due first, with each
/// attempt's `status` event (`{"status":"running","attempt":n}`), in one script on SQLite's
/// writer: one trip to its thread instead of four. Picked under the write lock, so the claim
/// takes every job committed before it got the lock (not only those a read found earlier). The events are
/// written first, for the rows the update then starts: under the script's write lock
/// nothing else changes the jobs, and the pick's order is total (`rowid` breaks ties, which
/// the due index's order already does), so both statements pick the same rows.
pub async fn start_due_in_one_script(
    db: &crate::Db,
    queue: QueueName,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<Started>, StoreError> {
    let picked = format!(
        "select id from parley_jobs where queue = $3 and status in ('queued', 'retrying')
         and run_after <= $1 and cancel_requested = false and {} order by run_after, rowid limit $4",
        known_kinds()
    );
    let events = format!(
        "insert into job_events (job_id, seq, event, data, created_at)
         select j.id, coalesce((select max(e.seq) from job_events e where e.job_id = j.id), 0) + 1, 'status',
             '{{\"status\":\"running\",\"attempt\":' || (j.attempts + 1) || '}}', $1
         from parley_jobs j where j.id in ({picked})
         returning job_id, seq"
    );
    let script = format!("{events}; {}", start_statement(&picked));
    let now = now_ms();
    let rows =
        db.write_script(&script, |query| query.bind(now).bind(now + lease_ms).bind(queue.as_str()).bind(limit)).await?;
    // The events' rows (two columns) come first, then the started jobs'. The script has
    // committed: a row that cannot be read here is left to its lease (it is taken over once
    // that expires) rather than failing the jobs that can run.
    let (seqs, jobs): (Vec<_>, Vec<_>) = rows.iter().partition(|row| sqlx::Row::columns(*row).len() == 2);
    let seqs: Vec<(String, i64)> = seqs.into_iter().filter_map(|row| sqlx::FromRow::from_row(row).ok()).collect();
    let mut started = Vec::with_capacity(jobs.len());
    for row in jobs {
        let job: Job = match sqlx::FromRow::from_row(row) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(error = %e, "a started job could not be read; it runs once its lease expires");
                continue;
            }
        };
        let id = job.id.to_string();
        let Some(&(_, seq)) = seqs.iter().find(|(job_id, _)| *job_id == id) else {
            tracing::error!(job.id = %id, "a job started without its status event; it runs once its lease expires");
            continue;
        };
        started.push(Started { job, seq });
    }
    Ok(started)
}

/// Due waiting jobs of the queue `$3`, oldest due first, at most `$4`; `$1` is now.
fn due_ids() -> String {
    format!(
        "select id from parley_jobs where queue = $3 and status in ('queued', 'retrying')
         and run_after <= $1 and cancel_requested = false and {} order by run_after limit $4",
        known_kinds()
    )
}

/// The update that starts attempts of the jobs `picked` (ids, or a subquery of them) that
/// are free to take: due waiting jobs, and expired ones with attempts left and no cancel
/// request. `$1` is now, `$2` the new lease's end.
fn start_statement(picked: &str) -> String {
    format!(
        "update parley_jobs set status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, $1),
             lease_until = $2, updated_at = $1
         where id in ({picked}) and cancel_requested = false
           and ((status in ('queued', 'retrying') and run_after <= $1)
                or (status = 'running' and lease_until < $1 and attempts < max_attempts))
         returning {COLUMNS}"
    )
}

/// An attempt started by [`start_attempts_with_events`], with the `seq` of its `status` event.
#[derive(Debug, sqlx::FromRow)]
pub struct Started {
    #[sqlx(flatten)]
    pub job: Job,
    pub seq: i64,
}

/// Which jobs [`start_attempts_with_events`] takes.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// These (from [`claimable_expired`]), if still free to take.
    Ids(&'a [String]),
    /// Up to `limit` due waiting jobs of the queue, oldest due first.
    Due { queue: QueueName, limit: i64 },
}

/// [`start_attempts`] and each attempt's `status` event (`{"status": "running", "attempt": n}`)
/// in one statement, on PostgreSQL (a data-modifying CTE): one round trip instead of the
/// four of a transaction, and, for [`Pick::Due`], none for looking first. Rows another
/// claimer holds are skipped, not waited for.
pub async fn start_attempts_with_events<'e, E: Exec<'e>>(
    ex: E,
    pick: Pick<'_>,
    lease_ms: i64,
) -> Result<Vec<Started>, StoreError> {
    let picked = match pick {
        Pick::Ids([]) => return Ok(Vec::new()),
        Pick::Ids(ids) => {
            format!("select id from parley_jobs where id in ({}) for update skip locked", placeholders(3, ids.len()))
        }
        Pick::Due { .. } => format!("{} for update skip locked", due_ids()),
    };
    let now = now_ms();
    let sql = format!(
        "with started as ({}),
         events as (
             insert into job_events (job_id, seq, event, data, created_at)
             select id, coalesce((select max(e.seq) from job_events e where e.job_id = started.id), 0) + 1, 'status',
                 '{{\"status\":\"running\",\"attempt\":' || attempts || '}}', $1
             from started
             returning job_id, seq)
         select started.*, events.seq from started join events on events.job_id = started.id",
        start_statement(&picked)
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(now + lease_ms);
    match pick {
        Pick::Ids(ids) => {
            for id in ids {
                query = query.bind(id);
            }
        }
        Pick::Due { queue, limit } => query = query.bind(queue.as_str()).bind(limit),
    }
    Ok(query.fetch_all(ex).await?)
}

/// One attempt's success for [`succeed_many_with_events`].
#[derive(Debug, Clone)]
pub struct Success {
    pub id: JobId,
    pub attempt: i64,
    /// The result, as JSON text.
    pub result: String,
    /// The `done` event's data, as JSON text.
    pub data: String,
}

/// Ends each attempt of `successes` succeeded and stores its `done` event, all in one
/// statement on PostgreSQL. For each attempt that still owned its job: its index in
/// `successes`, the event's `seq` and its time. An attempt that no longer owns its job (or a
/// second entry for the same attempt) records nothing.
pub async fn succeed_many_with_events<'e, E: Exec<'e>>(
    ex: E,
    successes: &[Success],
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    if successes.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let values: Vec<String> = (0..successes.len())
        .map(|i| {
            let n = 2 + i * 5;
            format!("(${}, ${}, ${}, ${}, ${})", n, n + 1, n + 2, n + 3, n + 4)
        })
        .collect();
    let sql = format!(
        "with input (n, id, attempt, result, data) as (values {}),
         finished as (
             update parley_jobs j set status = 'succeeded', result = input.result, error = null, error_detail = null,
                 finished_at = $1, lease_until = null, updated_at = $1
             from input where j.id = input.id and j.attempts = input.attempt and j.status = 'running'
             returning input.n, j.id, input.data),
         inserted as (
             insert into job_events (job_id, seq, event, data, created_at)
             select id, coalesce((select max(e.seq) from job_events e where e.job_id = finished.id), 0) + 1, 'done', data, $1
             from finished
             returning job_id, seq)
         select finished.n, inserted.seq, $1 from inserted join finished on finished.id = inserted.job_id",
        values.join(", ")
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now);
    for (i, s) in successes.iter().enumerate() {
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        query = query.bind(n).bind(s.id.to_string()).bind(s.attempt).bind(&s.result).bind(&s.data);
    }
    Ok(query.fetch_all(ex).await?)
}

/// [`succeed_many_with_events`] on SQLite, as one script on its writer (one trip to its
/// thread instead of four): the `done` events first, for the attempts that still own their
/// job, then the update of those same rows (nothing else writes under the script's lock).
/// The ids of `successes` must differ. For each attempt that still owned its job: its index
/// in `successes`, its event's `seq` and time.
pub async fn succeed_many_in_one_script(
    db: &crate::Db,
    successes: &[Success],
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    if successes.is_empty() {
        return Ok(Vec::new());
    }
    debug_assert!(
        successes.iter().enumerate().all(|(i, s)| successes[..i].iter().all(|t| t.id != s.id)),
        "the ids of one script's successes differ"
    );
    let values: Vec<String> = (0..successes.len())
        .map(|i| {
            let n = 2 + i * 4;
            format!("(${}, ${}, ${}, ${})", n, n + 1, n + 2, n + 3)
        })
        .collect();
    let input = format!(
        "(select column1 as id, column2 as attempt, column3 as result, column4 as data from (values {})) as input",
        values.join(", ")
    );
    let script = format!(
        "insert into job_events (job_id, seq, event, data, created_at)
         select j.id, coalesce((select max(e.seq) from job_events e where e.job_id = j.id), 0) + 1, 'done', input.data, $1
         from {input} join parley_jobs j on j.id = input.id and j.attempts = input.attempt and j.status = 'running'
         returning job_id, seq, created_at;
         update parley_jobs set status = 'succeeded', result = input.result, error = null, error_detail = null,
             finished_at = $1, lease_until = null, updated_at = $1
         from {input}
         where parley_jobs.id = input.id and parley_jobs.attempts = input.attempt and parley_jobs.status = 'running'"
    );
    let now = now_ms();
    let rows = db
        .write_script(&script, |mut query| {
            query = query.bind(now);
            for s in successes {
                query = query.bind(s.id.to_string()).bind(s.attempt).bind(s.result.clone()).bind(s.data.clone());
            }
            query
        })
        .await?;
    let mut finished = Vec::with_capacity(rows.len());
    for row in &rows {
        let (id, seq, created_at): (String, i64, i64) = sqlx::FromRow::from_row(row)?;
        if let Some(n) = successes.iter().position(|s| s.id.to_string() == id) {
            finished.push((i64::try_from(n).unwrap_or(i64::MAX), seq, created_at));
        }
    }
    Ok(finished)
}

/// Ends each attempt of `successes` succeeded, in one statement (for SQLite, where a
/// statement cannot both update and insert: store the `done` events after it, in the same
/// transaction). The `(id, attempt)` of each attempt that still owned its job.
pub async fn succeed_many_in(
    conn: &mut AnyConnection,
    successes: &[Success],
) -> Result<Vec<(String, i64)>, StoreError> {
    if successes.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<String> = (0..successes.len())
        .map(|i| {
            let n = 2 + i * 3;
            format!("(${}, ${}, ${})", n, n + 1, n + 2)
        })
        .collect();
    let sql = format!(
        "update parley_jobs set status = 'succeeded', result = input.result, error = null, error_detail = null,
             finished_at = $1, lease_until = null, updated_at = $1
         from (select column1 as id, column2 as attempt, column3 as result from (values {})) as input
         where parley_jobs.id = input.id and parley_jobs.attempts = input.attempt and parley_jobs.status = 'running'
         returning id, attempts",
        values.join(", ")
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now_ms());
    for s in successes {
        query = query.bind(s.id.to_string()).bind(s.attempt).bind(&s.result);
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

/// Ends the jobs among `ids` whose worker died (lease expired) and which must not run again:
/// out of attempts (failed) or with a cancel request (cancelled). Runs in the caller's
/// transaction; returns the ended jobs.
pub async fn end_abandoned(conn: &mut AnyConnection, ids: &[String]) -> Result<Vec<Job>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let sql = format!(
        "update parley_jobs set
             status = case when cancel_requested then 'cancelled' else 'failed' end,
             error = case when cancel_requested then 'cancelled' else 'the worker running this job stopped responding' end,
             finished_at = $1, lease_until = null, updated_at = $1
         where id in ({}) and status = 'running' and lease_until < $1
           and (attempts >= max_attempts or cancel_requested = true)
         returning {COLUMNS}",
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

/// Extends the leases of the attempts a worker holds, in one statement. Returns those it
/// still holds, with whether a cancel was requested; an attempt missing from the answer
/// lost its job (the lease expired and another worker took it over).
pub async fn renew_leases<'e, E: Exec<'e>>(
    ex: E,
    held: &[(JobId, i64)],
    lease_ms: i64,
) -> Result<Vec<(String, bool)>, StoreError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let pairs: Vec<String> =
        (0..held.len()).map(|i| format!("(id = ${} and attempts = ${})", 3 + 2 * i, 4 + 2 * i)).collect();
    let sql = format!(
        "update parley_jobs set lease_until = $1, updated_at = $2 where status = 'running' and ({})
         returning id, cancel_requested",
        pairs.join(" or ")
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now + lease_ms).bind(now);
    for (id, attempt) in held {
        query = query.bind(id.to_string()).bind(*attempt);
    }
    let rows: Vec<(String, DbBool)> = query.fetch_all(ex).await?;
    Ok(rows.into_iter().map(|(id, c)| (id, c.0)).collect())
}

/// Ends attempt `attempt` with `status`, except that a failure with a cancel requested
/// meanwhile ends `cancelled`. The status it ended with; `None` if that attempt no longer
/// owns the job.
pub async fn finish(
    conn: &mut AnyConnection,
    id: JobId,
    attempt: i64,
    status: JobStatus,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<Option<JobStatus>, StoreError> {
    let now = now_ms();
    let row: Option<(String,)> = sqlx::query_as(
        "update parley_jobs set status = case when $3 = 'failed' and cancel_requested then 'cancelled' else $3 end,
             result = $4, error = case when $3 = 'failed' and cancel_requested then 'cancelled' else $5 end,
             error_detail = null, finished_at = $6, lease_until = null, updated_at = $6
         where id = $1 and attempts = $2 and status = 'running' returning status",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(status.as_str())
    .bind(result)
    .bind(error)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(s,)| JobStatus::try_from(s).map_err(|e| StoreError::Other(e.into()))).transpose()
}

/// Schedules another attempt at `run_after`, or, when a cancel came in meanwhile, ends the
/// job cancelled. Returns the new status (`None`: the attempt no longer owns the job).
pub async fn retry_later(
    conn: &mut AnyConnection,
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
             error = $3, error_detail = null, run_after = $4, lease_until = null, updated_at = $5
         where id = $1 and attempts = $2 and status = 'running' returning status",
    )
    .bind(id.to_string())
    .bind(attempt)
    .bind(error)
    .bind(run_after)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(s,)| JobStatus::try_from(s).map_err(|e| StoreError::Other(e.into()))).transpose()
}

/// Gives an interrupted attempt back to the queue (a worker shutting down): it does not
/// count against the job's attempts. A job with a cancel request ends cancelled instead.
/// The job as it now is; `None` if that attempt no longer owned it.
pub async fn hand_back(conn: &mut AnyConnection, id: JobId, attempt: i64) -> Result<Option<Job>, StoreError> {
    let now = now_ms();
    let sql = format!(
        "update parley_jobs set status = case when cancel_requested then 'cancelled' else 'retrying' end,
             finished_at = case when cancel_requested then $3 else null end,
             error = case when cancel_requested then 'cancelled' else error end,
             attempts = attempts - 1, run_after = $3, lease_until = null, updated_at = $3
         where id = $1 and attempts = $2 and status = 'running' returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(attempt)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Records the admin-only detail of the error attempt `attempt` ended with.
pub async fn set_error_detail<'e, E: Exec<'e>>(ex: E, id: JobId, attempt: i64, detail: &str) -> Result<(), StoreError> {
    sqlx::query("update parley_jobs set error_detail = $3 where id = $1 and attempts = $2")
        .bind(id.to_string())
        .bind(attempt)
        .bind(detail)
        .execute(ex)
        .await?;
    Ok(())
}

/// Puts a failed or cancelled job back in the queue with a fresh attempt budget and a fresh
/// event stream (admin retry).
pub async fn requeue(conn: &mut AnyConnection, id: JobId) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update parley_jobs set status = 'queued', attempts = 0, error = null, error_detail = null, result = null,
             finished_at = null,
             run_after = $2, cancel_requested = false, updated_at = $2
         where id = $1 and status in ('failed', 'cancelled')",
    )
    .bind(id.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        job_events::delete_all(&mut *conn, id).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Cancels a job in one statement, so that no change of status can slip between looking and
/// writing: a waiting job ends `cancelled`, a running one gets `cancel_requested` (its
/// worker stops it). The job as it now is; `None` if it had already finished.
pub async fn cancel(conn: &mut AnyConnection, id: JobId) -> Result<Option<Job>, StoreError> {
    let now = now_ms();
    let sql = format!(
        "update parley_jobs set cancel_requested = true,
             status = case when status = 'running' then status else 'cancelled' end,
             finished_at = case when status = 'running' then finished_at else $2 end,
             updated_at = $2
         where id = $1 and status in ('queued', 'retrying', 'running') returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).bind(now).fetch_optional(&mut *conn).await?)
}

/// Per queue: jobs waiting (queued or retrying), and when the oldest due one fell due (ms).
pub async fn queue_depths<'e, E: Exec<'e>>(ex: E) -> Result<Vec<(String, i64, Option<i64>)>, StoreError> {
    Ok(sqlx::query_as(
        "select queue, count(*), min(case when run_after <= $1 then run_after end) from parley_jobs
         where status in ('queued', 'retrying') group by queue",
    )
    .bind(now_ms())
    .fetch_all(ex)
    .await?)
}

/// Jobs of one queue in one status, and when the oldest due one fell due (ms; waiting
/// statuses only).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueStatusCount {
    pub queue: String,
    pub status: String,
    pub count: i64,
    pub oldest_due: Option<i64>,
}

/// Job counts per queue and status, in one pass over the table (the admin queue page,
/// which may poll it).
pub async fn count_by_queue_and_status<'e, E: Exec<'e>>(ex: E) -> Result<Vec<QueueStatusCount>, StoreError> {
    Ok(sqlx::query_as(
        "select queue, status, count(*) as count,
             min(case when status in ('queued', 'retrying') and run_after <= $1 then run_after end) as oldest_due
         from parley_jobs group by queue, status",
    )
    .bind(now_ms())
    .fetch_all(ex)
    .await?)
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

/// `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// What jobs of one kind (in one queue) came to since a point in time (the admin queue
/// page's last hour).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct RecentOutcomes {
    /// The job kind, e.g. `llm_completion`.
    pub kind: String,
    /// The queue the kind runs on.
    pub queue: String,
    /// Jobs that ended succeeded.
    pub succeeded: i64,
    /// Jobs that ended failed (out of attempts, or a fatal error).
    pub failed: i64,
    /// Jobs that ended cancelled.
    pub cancelled: i64,
    /// Jobs that needed another attempt: ended since then after two or more attempts, or
    /// waiting now to retry after an attempt that failed since then.
    pub retried: i64,
}

/// Per kind and queue, the jobs that ended (and those that were set to retry) at or after
/// `since_ms`, by kind. Reads the finished-time index and the status index only, so a page
/// may poll it.
pub async fn outcomes_since<'e, E: Exec<'e>>(ex: E, since_ms: i64) -> Result<Vec<RecentOutcomes>, StoreError> {
    Ok(sqlx::query_as(
        // Two parts, each on an index (the finish time's, the status's): the window is an
        // hour, the table may hold months.
        "select kind, queue,
             sum(case when status = 'succeeded' then 1 else 0 end) as succeeded,
             sum(case when status = 'failed' then 1 else 0 end) as failed,
             sum(case when status = 'cancelled' then 1 else 0 end) as cancelled,
             sum(case when attempts > 1 or status = 'retrying' then 1 else 0 end) as retried
         from (
             select kind, queue, status, attempts from parley_jobs
             where finished_at >= $1 and status in ('succeeded', 'failed', 'cancelled')
             union all
             select kind, queue, status, attempts from parley_jobs
             where status = 'retrying' and updated_at >= $1 and attempts > 0
         ) recent
         group by kind, queue order by kind, queue",
    )
    .bind(since_ms)
    .fetch_all(ex)
    .await?)
}
