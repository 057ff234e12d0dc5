//! The scheduler every worker set runs: at each tick boundary of each schedule it tries to
//! enqueue the tick's `scheduled` job; the `(schedule, tick)` row makes exactly one process
//! succeed, however many look. A process looks once per tick (and again after an error), so
//! idle schedules cost no writes between ticks.

use crate::WorkerContext;
use parley_shared::jobs::{JobSpec, Scheduled};
use parley_shared::schedules::{self, Schedule};
use std::collections::HashMap;
use std::time::Duration;

/// How often the clock is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

pub async fn run(ctx: WorkerContext) {
    let mut seen: HashMap<Schedule, i64> = HashMap::new();
    let mut every = tokio::time::interval(LOOK_EVERY);
    loop {
        every.tick().await;
        let now = parley_shared::time::now_ms();
        for schedule in Schedule::ALL {
            let tick = schedules::tick_of(now, schedule.every(&ctx.config));
            if seen.get(&schedule) == Some(&tick) {
                continue;
            }
            match schedules::enqueue_tick(&ctx.db, schedule, tick).await {
                Ok(enqueued) => {
                    seen.insert(schedule, tick);
                    if let Some(job) = enqueued {
                        tracing::debug!(schedule = schedule.as_str(), job.id = %job, "scheduled job enqueued");
                        ctx.queue.wake(Scheduled::QUEUE);
                    }
                }
                Err(e) => tracing::warn!(schedule = schedule.as_str(), error = %e, "enqueueing a scheduled job failed"),
            }
        }
    }
}
