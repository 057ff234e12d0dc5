//! Job events: written to `job_events` (so streams can be resumed) and published for live
//! watchers: in-process, or through Redis pub/sub so any API process can serve any job's
//! stream. Cancel requests travel the same way, from the API process that took the request
//! to the worker running the job.

use crate::Db;
use crate::ids::JobId;
use crate::store::job_events::{self, EventType, JobEvent};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
                let sent: redis::RedisResult<()> =
                    redis::cmd("PUBLISH").arg(&redis.cancels).arg(job.to_string()).query_async(&mut conn).await;
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
                if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                    // Watchers still get them: streams re-read the table periodically.
                    tracing::warn!(error = %e, "publishing job events failed");
                }
            }
        }
    }

    /// Publishes an already stored event.
    pub async fn publish(&self, event: &JobEvent) {
        self.publish_many(std::slice::from_ref(event)).await;
    }
}

/// Writes a burst of events (an LLM reply's deltas) for a job whose attempt owns its stream.
/// `seq` is counted here, and [`StreamWriter::emit`] only hands the event to a writer task,
/// so the caller (reading a provider's stream) never waits for the database. The task
/// stores whatever has piled up in one statement, then publishes it: an event is stored
/// before anyone sees it, and under load the batches grow instead of the delay.
/// [`StreamWriter::close`] waits until everything is stored and published.
#[derive(Debug)]
pub struct StreamWriter {
    job: JobId,
    next: i64,
    queue: tokio::sync::mpsc::UnboundedSender<JobEvent>,
    /// Taken by [`StreamWriter::close`]; a writer dropped without closing (its attempt was
    /// cut off) stops its task, so nothing it queued lands after the attempt's final event.
    writer: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

/// Most events stored by one statement.
const WRITE_BATCH: usize = 100;

impl StreamWriter {
    /// Starts after the job's newest stored event.
    pub async fn open(db: &Db, bus: &EventBus, job: JobId) -> anyhow::Result<Self> {
        let next = job_events::last_seq(&db.pool, job).await? + 1;
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<JobEvent>();
        let (db, bus) = (db.clone(), bus.clone());
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while pending.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                job_events::insert_many(&db.writer, &batch).await.context("storing job events")?;
                bus.publish_many(&batch).await;
                batch.clear();
            }
            Ok(())
        });
        Ok(Self { job, next, queue, writer: Some(writer) })
    }

    /// Queues the next event for storing and publishing.
    pub fn emit(&mut self, event: EventType, data: serde_json::Value) -> anyhow::Result<()> {
        let event = JobEvent {
            job_id: self.job.to_string(),
            seq: self.next,
            event,
            data: data.to_string(),
            created_at: crate::time::now_ms(),
        };
        // The writer only stops early on a failed write, which `close` reports.
        self.queue.send(event).map_err(|_| anyhow::anyhow!("the job event writer stopped"))?;
        self.next += 1;
        Ok(())
    }

    /// Waits until every emitted event is stored and published.
    pub async fn close(mut self) -> anyhow::Result<()> {
        // Ends the writer's loop once it has stored what is queued.
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.queue, closed));
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        // Taken only once it finished: if this wait is cut off, `Drop` still stops the task.
        let finished = writer.await;
        self.writer = None;
        finished.context("the job event writer panicked")?
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
