//! Parley's workers: one handler file per job kind under [`jobs`], one attempt's life in
//! [`runner`], and [`run`] to start a worker set.
//!
//! apalis is the runtime: one worker per queue, with its concurrency limit, shutdown grace
//! and monitor. Its backend is the app database's jobs table (a
//! [`CustomBackend`](apalis::prelude::CustomBackend) whose fetcher claims due rows), so the
//! row is the one owner of a job's delivery, lease, retry schedule and record. A fetch that
//! fails (the database is down for a moment) is retried with backoff inside the fetcher,
//! so a worker outlives an outage of its backend (its stream never yields an error). A
//! queue worker that ends all the same (a panic) is restarted, and [`Health`] reports a
//! queue worker that stays dead.

pub mod context;
pub mod health;
pub mod jobs;
pub mod ops;
pub mod prompt;
pub mod runner;
pub mod running;
pub mod scheduler;
pub mod usage;

pub use context::WorkerContext;
pub use health::Health;

use apalis::prelude::*;
use futures::StreamExt;
use parley_shared::jobs::{QueueName, lifecycle};
use parley_shared::store::jobs as store;
use runner::Claimed;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Runs one worker per queue until `shutdown` resolves; then stops claiming, gives running
/// jobs `shutdown_grace_secs` to finish, and hands back (without counting the attempt) any
/// job still held.
///
/// A queue worker that ends before the shutdown (a panic escaped it) is restarted at once,
/// its first claim after a short backoff; the attempts it held were dropped with it and are
/// handed back. `ctx.health` shows the queue workers, for `/healthz`.
pub async fn run(ctx: WorkerContext, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let instance = format!("{}-{}", std::process::id(), &parley_shared::auth::random_token()[..8]);
    let renewer = keep_running("lease renewer", {
        let ctx = ctx.clone();
        move || renew_leases(ctx.clone())
    });
    let canceller = keep_running("cancel relay", {
        let ctx = ctx.clone();
        move || relay_cancels(ctx.clone())
    });
    let scheduler = keep_running("scheduler", {
        let ctx = ctx.clone();
        move || scheduler::run(ctx.clone())
    });
    let mut monitor = supervised(Monitor::new(), ctx.health.clone());
    for queue in QueueName::ALL {
        let name = format!("parley-{}-{instance}", queue.as_str());
        let ctx = ctx.clone();
        let wake = ctx.queue.register(queue);
        monitor = monitor.register(move |restarts| {
            let generation = if restarts == 0 { ctx.running.generation(queue) } else { restart(&ctx, queue) };
            let backend = BackendBuilder::new()
                .database(ctx.clone())
                .fetcher({
                    let wake = wake.clone();
                    move |ctx: &mut WorkerContext, _: &(), _: &apalis::prelude::WorkerContext| {
                        fetch(ctx.clone(), queue, wake.clone(), generation, restarts)
                    }
                })
                .sink(|_, _| futures::sink::drain::<Task<Claimed>>())
                .build()
                .expect("the backend has every part");
            WorkerBuilder::new(name.clone())
                .backend(backend)
                .data(ctx.clone())
                .concurrency(ctx.config.worker_concurrency)
                .build(runner::handle)
        });
    }
    let workers = monitor.context().workers().clone();
    let set = ctx.health.register(QueueName::ALL.into_iter().zip(workers).collect());
    let shutdown = {
        let health = ctx.health.clone();
        async move {
            shutdown.await;
            health.stopping(set);
            Ok::<(), std::io::Error>(())
        }
    };
    let result = monitor
        .shutdown_timeout(Duration::from_secs(config.shutdown_grace_secs))
        .run_with_signal(shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("worker monitor: {e}"));
    ctx.health.ended(set);
    renewer.abort();
    canceller.abort();
    scheduler.abort();
    // A claim cut off by the shutdown finishes in its own task; its jobs are handed back too.
    if tokio::time::timeout(Duration::from_secs(10), ctx.running.claims_finished()).await.is_err() {
        tracing::warn!("a claim was still under way at shutdown; its jobs run again once their lease expires");
    }
    // Attempts the grace period cut off (and claimed jobs that never started) go back to
    // the queue now rather than after their lease expires.
    for (job, attempt) in ctx.running.drain() {
        match lifecycle::hand_back(&ctx.job_env(), job, attempt).await {
            Ok(true) => tracing::warn!(job.id = %job, "job handed back at shutdown"),
            Ok(false) => {}
            Err(e) => tracing::warn!(job.id = %job, error = %e, "handing a job back failed; its lease will expire"),
        }
    }
    result
}

/// `monitor` with its queue workers restarted whenever one ends before the shutdown
/// (apalis's default is to leave it ended). A worker's name starts `parley-<queue>-`.
fn supervised(monitor: Monitor, health: Arc<Health>) -> Monitor {
    monitor.should_restart(move |worker, error| {
        if worker.is_shutting_down() {
            return false;
        }
        let queue = QueueName::ALL.into_iter().find(|q| worker.name().starts_with(&format!("parley-{}-", q.as_str())));
        tracing::error!(worker = worker.name(), error = %error, restarts = worker.restarts(), "a queue worker ended; restarting it");
        if let Some(queue) = queue {
            health.restarted(queue);
            parley_shared::metrics::worker_restarted(queue);
        }
        true
    })
}

/// A restart of `queue`'s worker: starts a new generation and hands back what the ended
/// worker held (its attempts were dropped with it, and their leases would otherwise be
/// renewed forever) once any claim it had under way is done. Returns the new generation.
fn restart(ctx: &WorkerContext, queue: QueueName) -> u64 {
    let generation = ctx.running.next_generation(queue);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), ctx.running.claims_finished()).await;
        for (job, attempt) in ctx.running.drain_older(queue, generation) {
            match lifecycle::hand_back(&ctx.job_env(), job, attempt).await {
                Ok(_) => tracing::warn!(job.id = %job, "job of a restarted queue worker handed back"),
                Err(e) => tracing::warn!(job.id = %job, error = %e, "handing a job back failed; its lease will expire"),
            }
        }
    });
    generation
}

/// Most jobs one claim takes.
const CLAIM_BATCH: usize = 64;

/// How often a worker looks for jobs whose worker died (their leases last seconds).
const TAKE_OVER_EVERY: Duration = Duration::from_secs(1);

type Fetched = Result<Option<Task<Claimed>>, Infallible>;

/// The jobs of `queue` this worker claims, as apalis asks for them (it asks only while it
/// has a free slot). Waits for a wake-up or the polling interval when nothing is due.
fn fetch(
    ctx: WorkerContext,
    queue: QueueName,
    wake: Arc<Notify>,
    generation: u64,
    restarts: usize,
) -> futures::stream::BoxStream<'static, Fetched> {
    struct State {
        ctx: WorkerContext,
        env: lifecycle::JobEnv,
        wake: Arc<Notify>,
        ready: VecDeque<Claimed>,
        failures: u32,
        /// When jobs of dead workers were last looked for.
        took_over: std::time::Instant,
        /// Whether the last claim found nothing.
        idle: bool,
        /// Whether the last claim took fewer jobs than it asked for: the queue held no more
        /// then, so the next claim waits for a wake-up (one sent meanwhile is kept) or the
        /// polling interval rather than asking again at once.
        drained: bool,
        /// A restarted worker waits this long before its first claim.
        backoff: Duration,
    }
    let took_over = std::time::Instant::now() - TAKE_OVER_EVERY;
    let env = ctx.job_env();
    let backoff = if restarts == 0 { Duration::ZERO } else { restart_backoff(restarts) };
    let state =
        State { ctx, env, wake, ready: VecDeque::new(), failures: 0, took_over, idle: true, drained: false, backoff };
    futures::stream::unfold(state, move |mut st| async move {
        if !st.backoff.is_zero() {
            tokio::time::sleep(std::mem::take(&mut st.backoff)).await;
        }
        let poll = Duration::from_millis(st.ctx.config.queue_poll_ms);
        let lease_ms = i64::try_from(st.ctx.config.job_lease_secs * 1000).unwrap_or(i64::MAX);
        loop {
            if let Some(claimed) = st.ready.pop_front() {
                return Some((Ok(Some(Task::new(claimed))), st));
            }
            let free = st.ctx.config.worker_concurrency.saturating_sub(st.ctx.running.count(queue));
            let drained = std::mem::take(&mut st.drained);
            if free > 0 && !drained {
                // Looked for when the queue is idle (so it never delays a job that is due),
                // and under constant load at least every few seconds.
                let since = st.took_over.elapsed();
                let take_over = since >= TAKE_OVER_EVERY && (st.idle || since >= TAKE_OVER_EVERY * 5);
                if take_over {
                    st.took_over = std::time::Instant::now();
                }
                let limit = free.min(CLAIM_BATCH);
                // In a task of its own: if apalis drops this stream mid-claim (a shutdown),
                // the claimed jobs are still held, and so handed back rather than stranded
                // until their lease expires.
                let (env, running, guard) = (st.env.clone(), st.ctx.running.clone(), st.ctx.running.claim_started());
                let claimed = tokio::spawn(async move {
                    let _guard = guard;
                    let jobs = lifecycle::claim(&env, queue, limit, lease_ms, take_over).await?;
                    let held = jobs.into_iter().map(|job| Claimed { signal: running.hold(queue, generation, &job), job });
                    Ok::<_, parley_shared::StoreError>(held.collect::<Vec<_>>())
                })
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the claim task failed: {e}").into()));
                match claimed {
                    Ok(jobs) if !jobs.is_empty() => {
                        (st.failures, st.idle, st.drained) = (0, false, jobs.len() < limit);
                        st.ready.extend(jobs);
                        continue;
                    }
                    Ok(_) => (st.failures, st.idle) = (0, true),
                    Err(e) => {
                        st.failures += 1;
                        let wait = Duration::from_millis(100 << st.failures.min(6)).min(Duration::from_secs(5));
                        tracing::warn!(queue = queue.as_str(), error = %e, retry_in_ms = wait.as_millis() as u64, "claiming jobs failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                () = st.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    })
    .boxed()
}

/// Runs `task` in a task of its own, again (after a second) whenever it panics, until the
/// returned handle is aborted: a worker set whose lease renewer died would let every job it
/// runs be taken over and run twice.
fn keep_running<F, Fut>(name: &'static str, task: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Aborts the inner task when the outer one is aborted.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::spawn(async move {
        loop {
            let mut inner = AbortOnDrop(tokio::spawn(task()));
            match (&mut inner.0).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(task = name, "a worker task panicked; restarting it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return,
            }
        }
    })
}

/// How long a queue worker restarted for the `restarts`th time waits before claiming: a
/// fault that repeats at once does not spin.
fn restart_backoff(restarts: usize) -> Duration {
    Duration::from_millis(100 << restarts.min(6)).min(Duration::from_secs(5))
}

/// Renews the leases of every attempt this worker set holds, in one statement, about three
/// times per lease. An attempt whose job was taken over is told it lost it; one with a
/// cancel request is told to stop (in case the bus message was missed). When no renewal
/// gets through for a whole lease, every attempt is given up.
async fn renew_leases(ctx: WorkerContext) {
    let lease = Duration::from_secs(ctx.config.job_lease_secs);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut last_ok = std::time::Instant::now();
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let held = ctx.running.snapshot();
        if held.is_empty() {
            last_ok = std::time::Instant::now();
            continue;
        }
        match store::renew_leases(&ctx.db.writer, &held, lease_ms).await {
            Ok(renewed) => {
                last_ok = std::time::Instant::now();
                for (job, attempt) in held {
                    match renewed.iter().find(|(id, _)| *id == job.to_string()) {
                        None => ctx.running.signal(job, Some(attempt), running::Signal::Lost),
                        Some((_, true)) => ctx.running.signal(job, Some(attempt), running::Signal::Cancel),
                        Some((_, false)) => {}
                    }
                }
            }
            Err(e) if last_ok.elapsed() >= lease => {
                tracing::warn!(error = %e, "leases could not be renewed in time; giving the jobs up");
                for (job, attempt) in held {
                    ctx.running.signal(job, Some(attempt), running::Signal::Lost);
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing job leases failed"),
        }
    }
}

/// Passes cancel requests from the event bus to the attempts they concern.
async fn relay_cancels(ctx: WorkerContext) {
    let mut requests = ctx.bus.cancel_requests();
    loop {
        match requests.recv().await {
            Ok(job) => ctx.running.signal(job, None, running::Signal::Cancel),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_queue_worker_whose_stream_panics_is_restarted_and_runs_the_next_task() {
        let health = Arc::new(Health::default());
        let polls = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(Notify::new());
        let monitor = supervised(Monitor::new(), health.clone()).register({
            let (polls, ran) = (polls.clone(), ran.clone());
            move |_restarts| {
                let backend = BackendBuilder::new()
                    .database(polls.clone())
                    .fetcher(|polls: &mut Arc<AtomicUsize>, _: &(), _: &apalis::prelude::WorkerContext| {
                        let first = polls.fetch_add(1, Ordering::SeqCst) == 0;
                        futures::stream::once(async move {
                            assert!(!first, "the first stream fails");
                            Ok::<_, Infallible>(Some(Task::new(1_u32)))
                        })
                        .chain(futures::stream::pending())
                        .boxed()
                    })
                    .sink(|_, _| futures::sink::drain::<Task<u32>>())
                    .build()
                    .expect("the backend has every part");
                let ran = ran.clone();
                WorkerBuilder::new("parley-default-test").backend(backend).build(move |_n: u32| {
                    let ran = ran.clone();
                    async move {
                        ran.notify_one();
                        Ok::<(), BoxDynError>(())
                    }
                })
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(monitor.run_with_signal(async move {
            let _ = stopped.await;
            Ok(())
        }));
        tokio::time::timeout(Duration::from_secs(10), ran.notified()).await.expect("the restarted worker ran a task");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        assert_eq!(health.report().queues[QueueName::Default.index()].restarts, 1);
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    }

    #[tokio::test]
    async fn a_kept_task_that_panics_runs_again_and_stops_with_its_handle() {
        let runs = Arc::new(AtomicUsize::new(0));
        let handle = keep_running("test", {
            let runs = runs.clone();
            move || {
                let runs = runs.clone();
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("the first run fails");
                    }
                    std::future::pending::<()>().await;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "the task never ran again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn restart_backoff_grows_and_is_capped() {
        assert_eq!(restart_backoff(1), Duration::from_millis(200));
        assert!(restart_backoff(3) > restart_backoff(2));
        assert_eq!(restart_backoff(100), Duration::from_secs(5));
    }
}
