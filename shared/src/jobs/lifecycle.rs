//! A job's transitions, each one transaction on the app database's writer together with the
//! event it emits (published once the transaction commits): a worker's claim (attempts
//! start, `status` events), an attempt's end (the record, then `done`, `error`, `retrying`
//! or `cancelled`), and a cancel or admin retry from the API. When a job ends without
//! succeeding, its kind's [`JobSpec::on_end`] closes what it left open, in the same
//! transaction.

use super::{JobEnd, JobSpec, JobStatus, QueueName};
use crate::Db;
use crate::db::Backend;
use crate::error::StoreError;
use crate::events::EventBus;
use crate::ids::JobId;
use crate::media::MediaStore;
use crate::store::job_events::{self, EventType, JobEvent};
use crate::store::jobs::{self as store, Job, Pick};
use serde_json::{Value, json};
use sqlx::AnyConnection;
use std::sync::Arc;
use std::time::Duration;

/// What a job's transitions touch: the database, the event bus, and the media store (a kind
/// may have files to remove when it ends). Cheap to clone.
#[derive(Clone)]
pub struct JobEnv {
    pub db: Db,
    pub bus: EventBus,
    pub media: Arc<dyn MediaStore>,
    /// Where successes wait to be written together (share one per worker set).
    pub successes: Arc<SuccessQueue>,
}

impl std::fmt::Debug for JobEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEnv").field("db", &self.db).finish_non_exhaustive()
    }
}

/// Takes up to `limit` jobs of `queue` for a worker: due waiting jobs and, with
/// `take_over`, jobs whose worker died (lease expired). Each taken job's attempt starts with
/// a lease of `lease_ms` and a `status` event; a job whose worker died and which must not run
/// again (out of attempts, or cancelled) ends instead. An idle queue costs no write.
pub async fn claim(
    env: &JobEnv,
    queue: QueueName,
    limit: usize,
    lease_ms: i64,
    take_over: bool,
) -> Result<Vec<Job>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let bus = &env.bus;
    let mut stored = Vec::new();
    let mut started = start(&env.db, Pick::Due { queue, limit }, lease_ms, &mut stored).await?;
    // Watchers learn at once that their jobs started, while the jobs start: a watcher that
    // gets a later event first re-reads the table.
    bus.publish_detached(stored);
    let room = limit - started.len() as i64;
    if take_over && room > 0 {
        let mut stored = Vec::new();
        // The jobs started above are this worker's now, whatever happens here.
        match take_over_expired(env, queue, room, lease_ms, &started, &mut stored).await {
            Ok(more) => started.extend(more),
            Err(e) => tracing::warn!(queue = queue.as_str(), error = %e, "taking over dead workers' jobs failed"),
        }
        bus.publish_detached(stored);
    }
    Ok(started)
}

/// Takes over (or ends) up to `room` jobs whose worker died.
async fn take_over_expired(
    env: &JobEnv,
    queue: QueueName,
    room: i64,
    lease_ms: i64,
    started: &[Job],
    stored: &mut Vec<JobEvent>,
) -> Result<Vec<Job>, StoreError> {
    let mut expired = store::claimable_expired(&env.db.pool, queue, room).await?;
    // Not one this call just started (a lease shorter than the call itself).
    expired.retain(|id| !started.iter().any(|j| j.id.to_string() == *id));
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let ended = end_abandoned(env, &expired, stored).await?;
    let ids: Vec<String> = expired.into_iter().filter(|id| !ended.iter().any(|j| j.id.to_string() == *id)).collect();
    start(&env.db, Pick::Ids(&ids), lease_ms, stored).await
}

/// Gives an interrupted attempt back to the queue (a worker shutting down), not counted as
/// an attempt; a job with a cancel request ends `cancelled` instead, with its final event.
/// Whether the attempt still owned the job.
pub async fn hand_back(env: &JobEnv, job: JobId, attempt: i64) -> Result<bool, StoreError> {
    let mut tx = env.db.begin_write().await?;
    let Some(handed) = store::hand_back(&mut tx, job, attempt).await? else { return Ok(false) };
    let mut stored = Vec::new();
    if handed.status == JobStatus::Cancelled {
        close_domain_rows(&mut tx, &*env.media, &handed, JobStatus::Cancelled, None).await?;
        stored = job_events::append_in(&mut tx, &[final_event(job, JobStatus::Cancelled, None)]).await?;
    }
    tx.commit().await?;
    env.bus.publish_many(&stored).await;
    Ok(true)
}

/// Starts attempts of the jobs `pick` names, adding their `status` events to `stored`. On
/// PostgreSQL one statement finds, starts and records them; on SQLite a read tells whether
/// any is due, and one transaction picks, starts and records them.
async fn start(db: &Db, pick: Pick<'_>, lease_ms: i64, stored: &mut Vec<JobEvent>) -> Result<Vec<Job>, StoreError> {
    if db.backend == Backend::Postgres {
        let started = store::start_attempts_with_events(&db.writer, pick, lease_ms).await?;
        stored.extend(started.iter().map(|s| running_event(&s.job, s.seq)));
        return Ok(started.into_iter().map(|s| s.job).collect());
    }
    let ids = match pick {
        Pick::Ids([]) => return Ok(Vec::new()),
        Pick::Ids(ids) => ids,
        // A read first: an idle queue takes no write lock.
        Pick::Due { queue, .. } if store::claimable_due(&db.pool, queue, 1).await?.is_empty() => return Ok(Vec::new()),
        // Picked again under the write lock: whatever was committed while this claim waited
        // for it is taken too.
        Pick::Due { queue, limit } => {
            let started = store::start_due_in_one_script(db, queue, limit, lease_ms).await?;
            stored.extend(started.iter().map(|s| running_event(&s.job, s.seq)));
            return Ok(started.into_iter().map(|s| s.job).collect());
        }
    };
    let mut tx = db.begin_write().await?;
    let started = store::start_attempts(&mut tx, ids, lease_ms).await?;
    let events: Vec<_> = started.iter().map(|job| (job.id, EventType::Status, running_data(job))).collect();
    stored.extend(job_events::append_in(&mut tx, &events).await?);
    tx.commit().await?;
    Ok(started)
}

/// Ends the expired jobs among `ids` that must not run again, adding their final events to
/// `stored`.
async fn end_abandoned(env: &JobEnv, ids: &[String], stored: &mut Vec<JobEvent>) -> Result<Vec<Job>, StoreError> {
    let mut tx = env.db.begin_write().await?;
    let ended = store::end_abandoned(&mut tx, ids).await?;
    let mut events = Vec::new();
    for job in &ended {
        tracing::warn!(job.id = %job.id, status = job.status.as_str(), "job ended after its worker stopped responding");
        close_domain_rows(&mut tx, &*env.media, job, job.status, job.error.as_deref()).await?;
        events.push(final_event(job.id, job.status, job.error.as_deref()));
    }
    stored.extend(job_events::append_in(&mut tx, &events).await?);
    tx.commit().await?;
    for job in &ended {
        let outcome = match job.status {
            JobStatus::Cancelled => crate::metrics::JobOutcome::Cancelled,
            _ => crate::metrics::JobOutcome::Failed,
        };
        crate::metrics::job_ended(job.kind, outcome, None);
    }
    Ok(ended)
}

fn running_data(job: &Job) -> Value {
    json!({"status": "running", "attempt": job.attempts})
}

/// [`running_data`] as the claim statements store it.
fn running_text(job: &Job) -> String {
    format!(r#"{{"status":"running","attempt":{}}}"#, job.attempts)
}

/// The `status` event [`store::start_attempts_with_events`] (PostgreSQL) or
/// [`store::start_due_in_one_script`] (SQLite) stored for `job`.
fn running_event(job: &Job, seq: i64) -> JobEvent {
    JobEvent {
        job_id: job.id.to_string(),
        seq,
        event: EventType::Status,
        data: running_text(job),
        created_at: job.updated_at.millis(),
    }
}

/// Ends attempt `job.attempts` succeeded with `result`; false if it no longer owns the job.
///
/// Successes are group-committed: the first is written at once, and those that come in
/// while a write is under way go together in the next one (one statement on PostgreSQL,
/// one transaction on SQLite), so a burst of short jobs costs a write per burst rather than
/// per job, and a lone job waits for nothing.
pub async fn succeed(env: &JobEnv, job: &Job, result: &Value) -> Result<bool, StoreError> {
    let success = store::Success {
        id: job.id,
        attempt: job.attempts,
        result: result.to_string(),
        data: json!({"status": "succeeded", "result": result}).to_string(),
    };
    let (done, written) = tokio::sync::oneshot::channel();
    let queue = env.successes.queue.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_successes(env.db.clone(), env.bus.clone(), rx));
        tx
    });
    let success = match queue.send((success, done)) {
        Ok(()) => match written.await {
            Ok(outcome) => return outcome.map_err(|e| StoreError::Other(anyhow::anyhow!(e))),
            Err(_) => return Err(StoreError::Other(anyhow::anyhow!("the success writer stopped"))),
        },
        // The writer task is gone (it panicked): this one is written on its own.
        Err(tokio::sync::mpsc::error::SendError((success, _))) => success,
    };
    Ok(write_success_batch(&env.db, &env.bus, &[success]).await?.first().copied().unwrap_or(false))
}

/// Where [`succeed`] queues successes for their writer task (started on first use; it ends
/// once the last holder of this is dropped and the queue is drained).
#[derive(Debug, Default)]
pub struct SuccessQueue {
    queue: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<(store::Success, SuccessReply)>>,
}

type SuccessReply = tokio::sync::oneshot::Sender<Result<bool, String>>;

/// Most successes one write records.
const SUCCESS_BATCH: usize = 256;

async fn write_successes(
    db: Db,
    bus: EventBus,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<(store::Success, SuccessReply)>,
) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, SUCCESS_BATCH).await > 0 {
        let (successes, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
        match write_success_batch(&db, &bus, &successes).await {
            Ok(owned) => replies.into_iter().zip(owned).for_each(|(reply, owned)| drop(reply.send(Ok(owned)))),
            Err(e) => {
                let error = e.to_string();
                replies.into_iter().for_each(|reply| drop(reply.send(Err(error.clone()))));
            }
        }
    }
}

/// Records `successes` with their `done` events, then publishes the events. For each,
/// whether its attempt still owned the job.
async fn write_success_batch(db: &Db, bus: &EventBus, successes: &[store::Success]) -> Result<Vec<bool>, StoreError> {
    let mut owned = vec![false; successes.len()];
    let mut stored = Vec::with_capacity(successes.len());
    let distinct = {
        let mut ids: Vec<JobId> = successes.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.windows(2).all(|w| w[0] != w[1])
    };
    if db.backend == Backend::Postgres || distinct {
        let finished = match db.backend {
            Backend::Postgres => store::succeed_many_with_events(&db.writer, successes).await?,
            // One script; two attempts of one job (the first lost its lease) in one batch
            // take the transaction below.
            Backend::Sqlite => store::succeed_many_in_one_script(db, successes).await?,
        };
        for (n, seq, created_at) in finished {
            let Some(s) = usize::try_from(n).ok().and_then(|n| successes.get(n).map(|s| (n, s))) else { continue };
            owned[s.0] = true;
            let data = s.1.data.clone();
            stored.push(JobEvent { job_id: s.1.id.to_string(), seq, event: EventType::Done, data, created_at });
        }
    } else {
        let mut tx = db.begin_write().await?;
        let finished = store::succeed_many_in(&mut tx, successes).await?;
        let mut events = Vec::with_capacity(finished.len());
        for (id, attempt) in finished {
            // The first entry for that attempt (a second report of it records nothing).
            let id: JobId = id.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("a stored job id: {e}")))?;
            let Some(n) = successes.iter().position(|s| s.id == id && s.attempt == attempt) else { continue };
            owned[n] = true;
            let data: Value = serde_json::from_str(&successes[n].data).map_err(anyhow::Error::from)?;
            events.push((successes[n].id, EventType::Done, data));
        }
        stored = job_events::append_in(&mut tx, &events).await?;
        tx.commit().await?;
    }
    bus.publish_many(&stored).await;
    Ok(owned)
}

/// Ends attempt `job.attempts` failed or cancelled; false if it no longer owns the job.
pub async fn end(env: &JobEnv, job: &Job, status: JobStatus, error: Option<&str>) -> Result<bool, StoreError> {
    let (db, bus) = (&env.db, &env.bus);
    debug_assert!(matches!(status, JobStatus::Failed | JobStatus::Cancelled));
    let mut tx = db.begin_write().await?;
    let error = error.or((status == JobStatus::Cancelled).then_some("cancelled"));
    let Some(status) = store::finish(&mut tx, job.id, job.attempts, status, None, error).await? else {
        return Ok(false);
    };
    // A cancel that met the failing last attempt wins.
    let error = if status == JobStatus::Cancelled { None } else { error };
    close_domain_rows(&mut tx, &*env.media, job, status, error).await?;
    let stored = job_events::append_in(&mut tx, &[final_event(job.id, status, error)]).await?;
    tx.commit().await?;
    bus.publish_many(&stored).await;
    Ok(true)
}

/// Schedules the next attempt of `job` after `delay` (the job goes back to the queue with
/// `run_after` set: the row is the one retry schedule). A cancel requested meanwhile ends
/// the job instead. Returns the new status (`None`: the attempt no longer owns the job).
pub async fn retry(env: &JobEnv, job: &Job, error: &str, delay: Duration) -> Result<Option<JobStatus>, StoreError> {
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    let run_after = crate::time::now_ms().saturating_add(delay_ms);
    let (db, bus) = (&env.db, &env.bus);
    let mut tx = db.begin_write().await?;
    let status = store::retry_later(&mut tx, job.id, job.attempts, error, run_after).await?;
    let event = match status {
        Some(JobStatus::Retrying) => (
            job.id,
            EventType::Status,
            json!({"status": "retrying", "attempt": job.attempts, "error": error, "retry_in_ms": delay_ms}),
        ),
        Some(JobStatus::Cancelled) => {
            close_domain_rows(&mut tx, &*env.media, job, JobStatus::Cancelled, None).await?;
            final_event(job.id, JobStatus::Cancelled, None)
        }
        _ => return Ok(status),
    };
    let stored = job_events::append_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    bus.publish_many(&stored).await;
    Ok(status)
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled,
    /// The job is running; its worker was told through the event bus and stops shortly.
    Requested,
    /// The job had already finished (or is gone).
    Finished,
}

/// Cancels a job: a waiting job ends at once; a running one is marked (so a retry or a
/// worker taking it over never runs it again) and its worker is told through the event bus.
pub async fn cancel(env: &JobEnv, id: JobId) -> Result<CancelOutcome, StoreError> {
    let (db, bus) = (&env.db, &env.bus);
    let mut tx = db.begin_write().await?;
    match store::cancel(&mut tx, id).await? {
        None => Ok(CancelOutcome::Finished),
        Some(job) if job.status == JobStatus::Running => {
            tx.commit().await?;
            bus.request_cancel(id).await;
            Ok(CancelOutcome::Requested)
        }
        Some(job) => {
            close_domain_rows(&mut tx, &*env.media, &job, JobStatus::Cancelled, None).await?;
            let stored = job_events::append_in(&mut tx, &[final_event(id, JobStatus::Cancelled, None)]).await?;
            tx.commit().await?;
            crate::metrics::job_ended(job.kind, crate::metrics::JobOutcome::Cancelled, None);
            bus.publish_many(&stored).await;
            Ok(CancelOutcome::Cancelled)
        }
    }
}

/// The final event of a job that ended `status` (not `succeeded`, whose `done` carries the
/// result).
fn final_event(id: JobId, status: JobStatus, error: Option<&str>) -> (JobId, EventType, Value) {
    match status {
        JobStatus::Cancelled => (id, EventType::Status, json!({"status": "cancelled"})),
        _ => (id, EventType::Error, json!({"status": status.as_str(), "error": error})),
    }
}

/// Runs the kind's [`JobSpec::on_end`] for a job that ended without succeeding.
async fn close_domain_rows(
    conn: &mut AnyConnection,
    media: &dyn MediaStore,
    job: &Job,
    status: JobStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    crate::with_job_type!(job.kind, T => match job.payload::<T>() {
        Ok(payload) => payload.on_end(JobEnd { conn, media, status, error }).await,
        Err(e) => {
            tracing::warn!(job.id = %job.id, error = %e, "a job's payload does not parse; nothing to close");
            Ok(())
        }
    })
}
