//! Waking the workers. The queue itself is the app database's jobs table (see
//! [`crate::store::jobs`]): a committed row is a queued job, and a worker's claim takes it.
//! Wake-ups only shorten the wait: after a commit that wrote a job, its queue's workers are
//! woken in-process, and, in the distributed profile, in every process through Redis
//! pub/sub. A wake-up that is lost (Redis down for a moment) costs at most one polling
//! interval (`PARLEY_QUEUE_POLL_MS`), never a job.

use crate::config::Config;
use crate::jobs::QueueName;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The handle every process holds to wake workers (cheap to clone).
#[derive(Clone, Debug)]
pub struct Queue {
    /// Per queue, the fetchers of this process's workers.
    local: Arc<[Mutex<Vec<Arc<Notify>>>; 3]>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
    /// Per queue, whether a Redis wake-up is about to be published (later wakes join it).
    publishing: Arc<[AtomicBool; 3]>,
}

impl Queue {
    /// In-process wake-ups only (the embedded profile).
    pub fn local() -> Self {
        Self { local: Arc::default(), redis: None, publishing: Arc::default() }
    }

    /// Wake-ups for the configured profile: through Redis when `PARLEY_QUEUE_URL` is a
    /// Redis URL, else in-process.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config.queue_url.expose();
        let mut queue = Self::local();
        if url.starts_with("redis") {
            let client = redis::Client::open(url).context("PARLEY_QUEUE_URL is not a valid Redis URL")?;
            let conn = client.get_connection_manager().await.context("connecting to Redis")?;
            let channel = format!("{}:queue-wake", config.redis_prefix);
            let this = queue.clone();
            crate::redis_sub::subscribe(client, channel.clone(), "queue wake-ups", move |payload| {
                if let Some(q) = QueueName::parse(&payload) {
                    this.wake_local(q);
                }
            })
            .await?;
            queue.redis = Some((conn, channel));
        }
        Ok(queue)
    }

    /// Registers a fetcher of `queue` to be woken when a job is committed to it.
    pub fn register(&self, queue: QueueName) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.local[queue.index()].lock().expect("wakers lock").push(notify.clone());
        notify
    }

    /// Wakes the workers of `queue` in every process; call it after the commit that wrote
    /// the job. Never waits: the Redis publish runs in the background.
    pub fn wake(&self, queue: QueueName) {
        self.wake_local(queue);
        if let Some((conn, channel)) = &self.redis {
            // A publish not sent yet wakes the workers after this commit too: one is enough.
            if self.publishing[queue.index()].swap(true, Ordering::AcqRel) {
                return;
            }
            let (mut conn, channel, publishing) = (conn.clone(), channel.clone(), self.publishing.clone());
            tokio::spawn(async move {
                // Cleared before sending, so a commit after this point publishes again.
                publishing[queue.index()].store(false, Ordering::Release);
                let sent: redis::RedisResult<()> =
                    redis::cmd("PUBLISH").arg(channel).arg(queue.as_str()).query_async(&mut conn).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "publishing a queue wake-up failed; polling picks the job up");
                }
            });
        }
    }

    fn wake_local(&self, queue: QueueName) {
        for notify in self.local[queue.index()].lock().expect("wakers lock").iter() {
            notify.notify_one();
        }
    }

    /// Whether Redis (when the profile uses it) answers.
    pub async fn ping(&self) -> bool {
        match &self.redis {
            None => true,
            Some((conn, _)) => {
                let mut conn = conn.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        }
    }
}
