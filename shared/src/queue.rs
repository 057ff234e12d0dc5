//! The queue transport (apalis) and the dispatcher that feeds it from the `jobs` outbox.
//!
//! A job-creating request writes its `jobs` row in the same transaction as its domain write.
//! After commit, a dispatcher (one runs in every process) claims due rows, pushes their ids
//! to apalis, and wakes the workers of that queue: in-process through a channel, across
//! processes through Redis pub/sub. Workers also poll at a short interval as a fallback.

use crate::config::Config;
use crate::events::EventBus;
use crate::jobs::QueueName;
use crate::store::jobs;
use crate::{Db, StoreError};
use anyhow::Context;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqlitePool, SqliteStorage};
use futures::channel::mpsc;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What travels through apalis: only the job id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: String,
}

/// The apalis storage behind the queues.
#[derive(Clone)]
pub enum Transport {
    Sqlite(SqlitePool),
    Redis { conn: redis::aio::ConnectionManager, client: redis::Client },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Sqlite(_) => "Transport::Sqlite",
            Transport::Redis { .. } => "Transport::Redis",
        })
    }
}

/// Per queue, the channels of the in-process workers waiting on it.
type Wakers = HashMap<&'static str, Vec<mpsc::UnboundedSender<()>>>;

/// The queue handle every process holds: push, wake, and the dispatcher's nudge.
#[derive(Clone, Debug)]
pub struct Queue {
    pub transport: Transport,
    prefix: String,
    wakers: Arc<Mutex<Wakers>>,
    /// Nudges the dispatcher after a commit that wrote an outbox row.
    outbox: Arc<Notify>,
}

impl Queue {
    /// Connects to the configured queue: SQLite (`sqlite://`) or Redis (`redis://`).
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config.queue_url.expose();
        let transport = if url.starts_with("redis") {
            let client = redis::Client::open(url).context("PARLEY_QUEUE_URL is not a valid Redis URL")?;
            let conn = apalis_redis::connect(url).await.context("connecting to the Redis queue")?;
            Transport::Redis { conn, client }
        } else {
            let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            // The same durability settings as the app's pool: WAL, and a sync per checkpoint
            // rather than per commit (a power cut may lose the last commits, never corrupt).
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .context("PARLEY_QUEUE_URL is not a valid SQLite URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            // One connection: the queue's writes (pushes, fetches, acks, heartbeats) wait for
            // each other here instead of in SQLite's busy handler, which sleeps 1 ms and more.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .context("opening the SQLite queue")?;
            // The app's migrations share the file's migration table, so neither set may
            // treat the other's versions as missing.
            let mut migrator = SqliteStorage::migrations();
            migrator.set_ignore_missing(true);
            migrator.run(&pool).await.context("setting up the SQLite queue")?;
            Transport::Sqlite(pool)
        };
        let queue = Self {
            transport,
            prefix: config.redis_prefix.clone(),
            wakers: Arc::default(),
            outbox: Arc::new(Notify::new()),
        };
        if let Transport::Redis { client, .. } = &queue.transport {
            queue.spawn_wake_subscriber(client.clone()).await?;
        }
        Ok(queue)
    }

    /// The apalis queue name of `queue`.
    pub fn apalis_name(&self, queue: QueueName) -> String {
        format!("{}.{}", self.prefix, queue.as_str())
    }

    fn wake_channel(&self) -> String {
        format!("{}:queue-wake", self.prefix)
    }

    /// Pushes job ids onto `queue` and wakes its workers.
    pub async fn push_many(&self, queue: QueueName, job_ids: &[String]) -> anyhow::Result<()> {
        let tasks: Vec<_> = job_ids
            .iter()
            .map(|id| {
                TaskBuilder::new(JobMessage { job_id: id.clone() })
                    .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
                    // Retries are Parley's (with backoff, in the jobs table); apalis
                    // re-delivers only when a handler could not record an outcome at all.
                    .max_attempts(5)
                    .build()
            })
            .collect();
        let tasks = futures::stream::iter(tasks);
        let name = self.apalis_name(queue);
        match &self.transport {
            Transport::Sqlite(pool) => {
                let mut storage = SqliteStorage::<JobMessage>::new(pool).with_config(sqlite_config(&name, 2));
                storage.push_all(tasks).await.map_err(|e| anyhow::anyhow!("pushing to the SQLite queue: {e}"))?;
                self.wake_local(queue);
            }
            Transport::Redis { conn, .. } => {
                let mut storage = RedisStorage::<JobMessage>::new(conn.clone()).with_config(redis_config(&name, 2));
                storage.push_all(tasks).await.map_err(|e| anyhow::anyhow!("pushing to the Redis queue: {e}"))?;
                let mut conn = conn.clone();
                let _: () = redis::cmd("PUBLISH")
                    .arg(self.wake_channel())
                    .arg(queue.as_str())
                    .query_async(&mut conn)
                    .await
                    .context("publishing a queue wake-up")?;
            }
        }
        Ok(())
    }

    /// A stream that yields whenever a job is pushed onto `queue` (any process).
    pub fn wake_stream(&self, queue: QueueName) -> mpsc::UnboundedReceiver<()> {
        let (tx, rx) = mpsc::unbounded();
        self.wakers.lock().expect("wakers lock").entry(queue.as_str()).or_default().push(tx);
        rx
    }

    fn wake_local(&self, queue: QueueName) {
        if let Some(senders) = self.wakers.lock().expect("wakers lock").get_mut(queue.as_str()) {
            senders.retain(|tx| tx.unbounded_send(()).is_ok());
        }
    }

    async fn spawn_wake_subscriber(&self, client: redis::Client) -> anyhow::Result<()> {
        let this = self.clone();
        crate::redis_sub::subscribe(client, self.wake_channel(), "queue wake-ups", move |payload| {
            if let Some(queue) = QueueName::parse(&payload) {
                this.wake_local(queue);
            }
        })
        .await
    }

    /// Starts this process's dispatcher (see [`run_dispatcher`]).
    pub fn spawn_dispatcher(&self, db: Db, bus: EventBus, config: &Config) {
        let poll = Duration::from_millis(config.queue_poll_ms);
        let lease = Duration::from_secs(config.job_lease_secs);
        let retention = Duration::from_secs(config.job_events_retention_secs);
        tokio::spawn(run_dispatcher(db, self.clone(), bus, poll, lease, retention));
    }

    /// Tells the dispatcher an outbox row was committed.
    pub fn notify_outbox(&self) {
        self.outbox.notify_one();
    }

    /// Whether the queue's storage answers.
    pub async fn ping(&self) -> bool {
        match &self.transport {
            Transport::Sqlite(pool) => sqlx::query("select 1").execute(pool).await.is_ok(),
            Transport::Redis { conn, .. } => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        }
    }
}

/// apalis-sqlite settings for a queue (`heartbeat_secs` × 2 = the orphan timeout).
pub fn sqlite_config(name: &str, heartbeat_secs: u64) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(name)
        .heartbeat_interval(Duration::from_secs(heartbeat_secs.max(1)))
        .missed_heartbeats(2)
        .batch_size(16)
}

/// apalis-redis settings for a queue.
pub fn redis_config(name: &str, heartbeat_secs: u64) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(name)
        .heartbeat_interval(Duration::from_secs(heartbeat_secs.max(1)))
        .missed_heartbeats(2)
        .batch_size(16)
}

/// Drains the outbox into the queue and, once a second, sweeps: jobs whose worker died go
/// back to the outbox (or end, when out of attempts or cancelled), and rows handed to the
/// queue long ago that never started are handed over again. Runs until the process ends;
/// one per process.
pub async fn run_dispatcher(db: Db, queue: Queue, bus: EventBus, poll: Duration, lease: Duration, retention: Duration) {
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_prune = tokio::time::Instant::now();
    loop {
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            let before = crate::time::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            match crate::store::job_events::prune_finished(&db.pool, before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned the event streams of long-finished jobs"),
                Err(e) => tracing::warn!(error = %e, "pruning job events failed"),
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = tokio::time::Instant::now();
            if let Err(e) = sweep(&db, &bus, lease).await {
                tracing::warn!(error = format!("{e:#}"), "job sweep failed");
            }
        }
        match dispatch_due(&db, &queue).await {
            // A full batch: more may be due. (Rows committed meanwhile left a wake-up in
            // `outbox`, so a smaller batch needs no second look.)
            Ok(n) if n >= DISPATCH_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dispatching jobs failed; will retry"),
        }
        let _ = tokio::time::timeout(poll, queue.outbox.notified()).await;
    }
}

/// Outbox rows claimed and pushed at once.
const DISPATCH_BATCH: usize = 500;

/// How often finished jobs' old event streams are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

async fn sweep(db: &Db, bus: &EventBus, lease: Duration) -> anyhow::Result<()> {
    for (job, status) in jobs::recover_expired(&db.pool).await? {
        tracing::warn!(job.id = %job.id, status = status.as_str(), "job ended after its worker stopped responding");
        crate::jobs::lifecycle::announce_end(db, bus, &job, status, job.error.as_deref()).await?;
    }
    let stale_ms = i64::try_from((lease * 2).as_millis()).unwrap_or(i64::MAX);
    let again = jobs::redispatch_stale(&db.pool, stale_ms).await?;
    if again > 0 {
        tracing::warn!(jobs = again, "jobs handed to the queue long ago never started; handing them over again");
    }
    Ok(())
}

/// Pushes due outbox rows (a batch); returns how many were pushed.
pub async fn dispatch_due(db: &Db, queue: &Queue) -> Result<usize, StoreError> {
    let claimed = jobs::claim_due(&db.pool, DISPATCH_BATCH as i64).await?;
    let mut by_queue: HashMap<QueueName, Vec<String>> = HashMap::new();
    for (id, name) in claimed {
        by_queue.entry(QueueName::parse(&name).unwrap_or(QueueName::Default)).or_default().push(id);
    }
    let mut pushed = 0;
    for (target, ids) in by_queue {
        if let Err(e) = queue.push_many(target, &ids).await {
            tracing::warn!(jobs = ids.len(), error = %e, "push failed; the jobs stay in the outbox");
            for id in &ids {
                jobs::unclaim_dispatch(&db.pool, id).await?;
            }
            return Err(StoreError::Other(e));
        }
        pushed += ids.len();
    }
    Ok(pushed)
}
