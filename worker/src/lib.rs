//! Parley's workers: one handler file per job kind under [`jobs`], the generic attempt
//! logic (leases, timeouts, retries with backoff, cancellation, events) in [`runner`], and
//! [`run`] to start a worker set on the configured queue.

pub mod context;
pub mod jobs;
pub mod prompt;
pub mod runner;

pub use context::WorkerContext;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use parley_shared::jobs::QueueName;
use parley_shared::queue::{JobMessage, Transport, redis_config, sqlite_config};
use std::future::Future;
use std::time::Duration;

/// Runs one worker per queue until `shutdown` resolves; then stops fetching, gives running
/// jobs `shutdown_grace_secs` to finish, and returns. Jobs cut off at the deadline are run
/// again by another worker once their lease expires.
pub async fn run(ctx: WorkerContext, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let poll = Duration::from_millis(config.queue_poll_ms);
    let heartbeat = config.queue_heartbeat_secs;
    let concurrency = config.worker_concurrency;
    let instance = format!("{}-{}", std::process::id(), &parley_shared::auth::random_token()[..8]);
    let mut monitor = Monitor::new();
    for queue in QueueName::ALL {
        let name = format!("{}-{instance}", ctx.queue.apalis_name(queue));
        let apalis_queue = ctx.queue.apalis_name(queue);
        let ctx = ctx.clone();
        match ctx.queue.transport.clone() {
            Transport::Sqlite(pool) => {
                monitor = monitor.register(move |_restarts| {
                    let strategy = Strategy::new().stream(ctx.queue.wake_stream(queue)).interval(poll);
                    let backend = SqliteStorage::<JobMessage>::new(&pool)
                        .with_config(sqlite_config(&apalis_queue, heartbeat))
                        .poll_with_strategy(strategy);
                    WorkerBuilder::new(name.clone())
                        .backend(backend)
                        .data(ctx.clone())
                        .concurrency(concurrency)
                        .catch_panic()
                        .build(runner::handle)
                });
            }
            Transport::Redis { conn, .. } => {
                monitor = monitor.register(move |_restarts| {
                    let strategy = Strategy::new().stream(ctx.queue.wake_stream(queue)).interval(poll);
                    let backend = RedisStorage::<JobMessage>::new(conn.clone())
                        .with_config(redis_config(&apalis_queue, heartbeat))
                        .poll_with_strategy(strategy);
                    WorkerBuilder::new(name.clone())
                        .backend(backend)
                        .data(ctx.clone())
                        .concurrency(concurrency)
                        .catch_panic()
                        .build(runner::handle)
                });
            }
        }
    }
    let shutdown = async move {
        shutdown.await;
        Ok::<(), std::io::Error>(())
    };
    let running = ctx.running.clone();
    let db = ctx.db.clone();
    let result = monitor
        .shutdown_timeout(Duration::from_secs(config.shutdown_grace_secs))
        .run_with_signal(shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("worker monitor: {e}"));
    // Attempts the grace period cut off go back to the queue now rather than after their
    // lease expires.
    let cut_off: Vec<_> = running.lock().expect("running lock").drain().collect();
    for (job, attempt) in cut_off {
        match parley_shared::store::jobs::hand_back(&db.pool, job, attempt).await {
            Ok(true) => tracing::warn!(job.id = %job, "job handed back at shutdown"),
            Ok(false) => {}
            Err(e) => tracing::warn!(job.id = %job, error = %e, "handing a job back failed; its lease will expire"),
        }
    }
    result
}
