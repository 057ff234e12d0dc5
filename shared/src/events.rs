//! Job events: written to `job_events` (so streams can be resumed) and published for live
//! watchers: in-process, or through Redis pub/sub so any API process can serve any job's
//! stream. Cancel requests travel the same way, from the API process that took the request
//! to the worker running the job.

use crate::Db;
use crate::ids::JobId;
use crate::store::job_events::{self, EventType, JobEvent};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// Fans job events out to watchers.
#[derive(Clone, Debug)]
pub struct EventBus {
    local: Watchers,
    redis: Option<RedisChannels>,
    /// Cancel requests for running jobs, delivered to every process's workers.
    cancels: broadcast::Sender<JobId>,
}

/// An event as published on Redis: `<job id> <event JSON>`, so that an event of a job nobody
/// here `watched` is not parsed. A bare JSON object (an older process's, during a rolling
/// deploy) is read too.
fn parse_published(payload: &str, watched: impl Fn(&str) -> bool) -> Option<JobEvent> {
    let (job, json) = match payload.split_once(' ') {
        Some((job, json)) if !payload.starts_with('{') => (Some(job), json),
        _ => (None, payload),
    };
    if job.is_some_and(|job| !watched(job)) {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// The Redis connection and channels of a distributed bus.
#[derive(Clone, Debug)]
struct RedisChannels {
    conn: redis::aio::ConnectionManager,
    events: String,
    cancels: String,
}

/// Longest a publish may take. While Redis is down, its connection manager holds each
/// command until its reconnect attempts give up (about six seconds), and a claim or a
/// success that waited that long would outlive short leases; what is not published in time
/// reaches watchers anyway (streams re-read the table, workers see cancels at renewal).
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Cancel requests a worker may fall behind by (it also learns of them at lease renewal).
const CANCEL_BUFFER: usize = 256;

fn cancel_channel(prefix: &str) -> String {
    format!("{prefix}:job-cancel")
}

/// One channel per watched job, so a watcher only ever handles its own job's events (with
/// hundreds of live streams, a shared channel would make each watcher sift through all).
#[derive(Clone, Debug, Default)]
struct Watchers(Arc<Mutex<HashMap<String, broadcast::Sender<JobEvent>>>>);

/// Events a slow watcher may fall behind by before it re-reads the table.
const WATCHER_BUFFER: usize = 1024;

impl Watchers {
    fn subscribe(&self, job: &str) -> broadcast::Receiver<JobEvent> {
        let mut map = self.0.lock().expect("watchers lock");
        if map.len() > 1024 {
            // Channels of jobs whose watchers left without a final event.
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        map.entry(job.to_owned()).or_insert_with(|| broadcast::channel(WATCHER_BUFFER).0).subscribe()
    }

    fn watched(&self, job: &str) -> bool {
        self.0.lock().expect("watchers lock").contains_key(job)
    }

    fn deliver(&self, event: JobEvent) {
        let mut map = self.0.lock().expect("watchers lock");
        let Some(tx) = map.get(&event.job_id) else { return };
        let terminal = event.is_terminal();
        // Nobody watches any more, or nothing follows a final event.
        if tx.send(event.clone()).is_err() || terminal {
            map.remove(&event.job_id);
        }
    }
}

impl EventBus {
    /// The bus for the configured profile: Redis when the queue is on Redis, else in-process.
    pub async fn connect(config: &crate::Config) -> anyhow::Result<Self> {
        match config.queue_url.expose() {
            url if url.starts_with("redis") => Self::redis(url, &config.redis_prefix).await,
            _ => Ok(Self::local()),
        }
    }

    /// A bus for one process.
    pub fn local() -> Self {
        Self { local: Watchers::default(), redis: None, cancels: broadcast::channel(CANCEL_BUFFER).0 }
    }

    /// A bus shared by every process on the Redis server at `url`.
    pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("invalid Redis URL for job events")?;
        let conn = client.get_connection_manager().await.context("connecting to Redis for job events")?;
        let channel = format!("{prefix}:job-events");
        let local = Watchers::default();
        let tx = local.clone();
        crate::redis_sub::subscribe(client.clone(), channel.clone(), "job events", move |payload| {
            if let Some(event) = parse_published(&payload, |job| tx.watched(job)) {
                tx.deliver(event);
            }
        })
        .await?;
        let cancels = broadcast::channel(CANCEL_BUFFER).0;
        let tx = cancels.clone();
        crate::redis_sub::subscribe(client, cancel_channel(prefix), "cancel requests", move |payload| {
            if let Ok(job) = payload.parse() {
                let _ = tx.send(job);
            }
        })
        .await?;
        Ok(Self {
            local,
            redis: Some(RedisChannels { conn, events: channel, cancels: cancel_channel(prefix) }),
            cancels,
        })
    }

    /// Tells the workers of every process that `job` was cancelled (the record already says
    /// so; a worker that misses this message sees it at its next lease renewal).
    pub async fn request_cancel(&self, job: JobId) {
        match &self.redis {
            None => {
                let _ = self.cancels.send(job);
            }
            Some(redis) => {
                let mut conn = redis.conn.clone();
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(&redis.cancels).arg(job.to_string());
                let sent = tokio::time::timeout(PUBLISH_TIMEOUT, publish.query_async::<()>(&mut conn)).await;
                let sent: redis::RedisResult<()> = match sent {
                    Ok(sent) => sent,
                    Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
                };
                if let Err(e) = sent {
                    tracing::warn!(job.id = %job, error = %e, "publishing a cancel request failed; the lease renewal carries it");
                }
            }
        }
    }

    /// Cancel requests from now on.
    pub fn cancel_requests(&self) -> broadcast::Receiver<JobId> {
        self.cancels.subscribe()
    }

    /// Live events of `job` from now on.
    pub fn subscribe(&self, job: JobId) -> broadcast::Receiver<JobEvent> {
        self.local.subscribe(&job.to_string())
    }

    /// Publishes already stored events, in order (one round trip to Redis).
    pub async fn publish_many(&self, events: &[JobEvent]) {
        if events.is_empty() {
            return;
        }
        match &self.redis {
            None => events.iter().for_each(|e| self.local.deliver(e.clone())),
            Some(redis) => {
                let mut pipe = redis::pipe();
                for event in events {
                    pipe.cmd("PUBLISH")
                        .arg(&redis.events)
                        .arg(format!("{} {}", event.job_id, serde_json::to_string(event).unwrap_or_default()))
                        .ignore();
                }
                let mut conn = redis.conn.clone();
                match tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
                    Ok(Ok(())) => {}
                    // Watchers still get them: streams re-read the table periodically.
                    Ok(Err(e)) => tracing::warn!(error = %e, "publishing job events failed"),
                    Err(_) => tracing::warn!("publishing job events timed out"),
                }
            }
        }
    }

    /// Publishes already stored events, in order, without waiting: on the in-process bus
    /// watchers have them on return; through Redis the publish runs in a task of its own, so
    /// a later event of the same job may reach watchers first (they re-read the table on a
    /// gap in `seq`).
    pub fn publish_detached(&self, events: Vec<JobEvent>) {
        if events.is_empty() {
            return;
        }
        match &self.redis {
            None => events.into_iter().for_each(|e| self.local.deliver(e)),
            Some(_) => {
                let bus = self.clone();
                tokio::spawn(async move { bus.publish_many(&events).await });
            }
        }
    }

    /// Publishes an already stored event.
    pub async fn publish(&self, event: &JobEvent) {
        self.publish_many(std::slice::from_ref(event)).await;
    }
}

/// Where a process's running attempts queue their stream events (an LLM reply's deltas) to
/// be stored and then published. One task stores whatever has piled up, across every job,
/// in one statement, then publishes it: an event is stored before anyone sees it, and under
/// load (hundreds of replies streaming at once) the batches grow instead of the delay, where
/// a write per event would queue on SQLite's one writer or on PostgreSQL's commits. The
/// task starts on first use and ends once this and every writer is dropped.
#[derive(Debug, Default)]
pub struct EventQueue {
    queue: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Queued>>>,
}

impl EventQueue {
    /// The writer task's queue, started on first use (and again if the task died).
    fn sender(&self, db: &Db, bus: &EventBus) -> tokio::sync::mpsc::UnboundedSender<Queued> {
        let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*queue {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(write_events(db.clone(), bus.clone(), rx));
                *queue = Some(tx.clone());
                tx
            }
        }
    }

    /// Waits until everything queued so far, by any stream, is stored (or skipped): once an
    /// attempt was cut off (its writer dropped without closing), nothing of its stream is
    /// written after this returns, so its final event cannot meet one of its deltas.
    pub async fn flush(&self) {
        let queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(queue) = queue else { return };
        let (reply, flushed) = tokio::sync::oneshot::channel();
        if queue.send(Queued::Flush(Arc::default(), reply)).is_ok() {
            let _ = flushed.await;
        }
    }
}

#[derive(Debug)]
enum Queued {
    Event(JobEvent, Arc<StreamState>),
    /// Answered once everything queued before it is stored and published.
    Flush(Arc<StreamState>, tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// What the writer task knows of one attempt's stream.
#[derive(Debug, Default)]
struct StreamState {
    /// Its attempt was cut off (the writer was dropped without closing): nothing more of it
    /// is stored, so nothing lands after the attempt's final event.
    dropped: AtomicBool,
    /// Why storing its events failed; nothing more of it is stored.
    failed: OnceLock<String>,
}

impl StreamState {
    fn live(&self) -> bool {
        !self.dropped.load(Ordering::Relaxed) && self.failed.get().is_none()
    }
}

/// Most events stored by one statement (five parameters each).
const WRITE_BATCH: usize = 256;

async fn write_events(db: Db, bus: EventBus, mut queue: tokio::sync::mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let (mut events, mut owners, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
        for queued in batch.drain(..) {
            match queued {
                Queued::Event(event, owner) if owner.live() => {
                    events.push(event);
                    owners.push(owner);
                }
                Queued::Event(..) => {}
                Queued::Flush(owner, reply) => flushes.push((owner, reply)),
            }
        }
        let stored = store_events(&db, events, &owners).await;
        bus.publish_many(&stored).await;
        for (owner, reply) in flushes {
            let _ = reply.send(owner.failed.get().map_or(Ok(()), |e| Err(e.clone())));
        }
    }
}

/// Stores `events` (of `owners`' streams) in one statement. If the database refused what
/// the statement wrote (an attempt that lost its job writing a `seq` its successor took),
/// each stream's share is stored on its own, and a stream whose share fails stops; if it
/// could not be reached, every stream of the batch stops (their attempts fail and are
/// retried), without a write per stream against a database that is down. Returns what was
/// stored, in order.
async fn store_events(db: &Db, events: Vec<JobEvent>, owners: &[Arc<StreamState>]) -> Vec<JobEvent> {
    if events.is_empty() {
        return events;
    }
    match job_events::insert_many(&db.writer, &events).await {
        Ok(()) => return events,
        Err(e) if !refused(&e) => {
            tracing::warn!(error = %e, "storing job events failed");
            let error = format!("storing job events: {e}");
            owners.iter().for_each(|o| drop(o.failed.set(error.clone())));
            return Vec::new();
        }
        Err(_) => {}
    }
    let mut stored = Vec::with_capacity(events.len());
    let mut rest: Vec<(JobEvent, &Arc<StreamState>)> = events.into_iter().zip(owners).collect();
    while let Some((_, owner)) = rest.first() {
        let owner = Arc::clone(owner);
        let (share, others): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(_, o)| Arc::ptr_eq(o, &owner));
        rest = others;
        let share: Vec<JobEvent> = share.into_iter().map(|(e, _)| e).collect();
        match job_events::insert_many(&db.writer, &share).await {
            Ok(()) => stored.extend(share),
            Err(e) => {
                tracing::warn!(job.id = %share[0].job_id, error = %e, "storing job events failed");
                let error = format!("storing job events: {e}");
                let _ = owner.failed.set(error.clone());
                if !refused(&e) {
                    // The database went away meanwhile: the rest stop too.
                    rest.iter().for_each(|(_, o)| drop(o.failed.set(error.clone())));
                    break;
                }
            }
        }
    }
    // Each job's events keep their order; across jobs it does not matter.
    stored
}

/// Whether the database refused the data (a constraint, text it cannot store), rather than
/// failing to run the statement (unreachable, shutting down, out of connections or space).
fn refused(error: &crate::error::StoreError) -> bool {
    use crate::error::StoreError;
    match error {
        StoreError::Conflict { .. } | StoreError::InvalidText => true,
        StoreError::Other(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(e)) => e.kind() != sqlx::error::ErrorKind::Other,
            _ => false,
        },
        StoreError::NotFound => false,
    }
}

/// The event stream of one running attempt, which owns its job's stream: `seq` is counted
/// here, and [`StreamWriter::emit`] only hands the event to the process's [`EventQueue`], so
/// the caller (reading a provider's stream) never waits for the database.
/// [`StreamWriter::close`] waits until everything it emitted is stored and published.
#[derive(Debug)]
pub struct StreamWriter {
    job: JobId,
    next: i64,
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
    state: Arc<StreamState>,
    closed: bool,
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.closed {
            self.state.dropped.store(true, Ordering::Relaxed);
        }
    }
}

impl StreamWriter {
    /// Starts after the job's newest stored event; `queue` is the process's.
    pub async fn open(db: &Db, bus: &EventBus, queue: &EventQueue, job: JobId) -> anyhow::Result<Self> {
        let next = job_events::last_seq(&db.pool, job).await? + 1;
        let queue = queue.sender(db, bus);
        Ok(Self { job, next, queue, state: Arc::default(), closed: false })
    }

    /// Queues the next event for storing and publishing.
    pub fn emit(&mut self, event: EventType, data: serde_json::Value) -> anyhow::Result<()> {
        if let Some(e) = self.state.failed.get() {
            anyhow::bail!("{e}");
        }
        let event = JobEvent {
            job_id: self.job.to_string(),
            seq: self.next,
            event,
            data: data.to_string(),
            created_at: crate::time::now_ms(),
        };
        self.queue
            .send(Queued::Event(event, self.state.clone()))
            .map_err(|_| anyhow::anyhow!("the job event writer stopped"))?;
        self.next += 1;
        Ok(())
    }

    /// Waits until every emitted event is stored and published.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let (reply, stored) = tokio::sync::oneshot::channel();
        self.queue
            .send(Queued::Flush(self.state.clone(), reply))
            .map_err(|_| anyhow::anyhow!("the job event writer stopped"))?;
        // If this wait is cut off, `Drop` still stops what is left of the stream.
        let outcome = stored.await.map_err(|_| anyhow::anyhow!("the job event writer stopped"))?;
        self.closed = true;
        outcome.map_err(anyhow::Error::msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> JobEvent {
        JobEvent {
            job_id: "0193b8f0-0000-7000-8000-000000000001".into(),
            seq: 3,
            event: EventType::Delta,
            data: r#"{"text":"hello world"}"#.into(),
            created_at: 1,
        }
    }

    #[test]
    fn published_events_are_parsed_only_for_watched_jobs_in_either_format() {
        let e = event();
        let json = serde_json::to_string(&e).unwrap();
        let tagged = format!("{} {json}", e.job_id);
        assert_eq!(parse_published(&tagged, |j| j == e.job_id), Some(e.clone()));
        assert_eq!(parse_published(&tagged, |_| false), None);
        // An older process's bare JSON, with a space inside its text.
        assert_eq!(parse_published(&json, |_| false), Some(e));
        assert_eq!(parse_published("not json", |_| true), None);
    }
}
