//! Whether a process's queue workers are alive, for its `/healthz`: every queue of every
//! worker set it runs must have a live apalis worker. A queue worker that ends is restarted
//! (see [`crate::run`]); one that stays ended (a restart refused or failed), or a worker set
//! that stopped without being asked to, makes the process unhealthy, so that an orchestrator
//! restarts it rather than leaving a queue without a worker.

use apalis::prelude::WorkerContext as ApalisWorker;
use parley_shared::jobs::QueueName;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The queue workers of the worker sets a process runs (cheap to share in an `Arc`).
#[derive(Debug, Default)]
pub struct Health {
    sets: Mutex<Vec<Set>>,
    restarts: [AtomicU64; 3],
}

#[derive(Debug)]
struct Set {
    id: u64,
    workers: Vec<(QueueName, ApalisWorker)>,
    /// Asked to stop (SIGTERM): its workers ending is expected.
    stopping: bool,
    /// Ended without being asked to.
    failed: bool,
}

/// What `/healthz` shows of the workers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    /// Per queue: live queue workers, dead ones, and restarts since the process started.
    pub queues: Vec<QueueReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueReport {
    pub queue: &'static str,
    pub alive: usize,
    pub dead: usize,
    pub restarts: u64,
}

impl Health {
    /// Registers a worker set's queue workers; returns the set's id.
    pub fn register(&self, workers: Vec<(QueueName, ApalisWorker)>) -> u64 {
        let mut sets = self.lock();
        let id = sets.iter().map(|s| s.id + 1).max().unwrap_or(0);
        sets.push(Set { id, workers, stopping: false, failed: false });
        id
    }

    /// The set was asked to stop: its workers ending from now on is no failure.
    pub fn stopping(&self, set: u64) {
        if let Some(s) = self.lock().iter_mut().find(|s| s.id == set) {
            s.stopping = true;
        }
    }

    /// The set ended: removed when it was asked to stop, else marked failed.
    pub fn ended(&self, set: u64) {
        let mut sets = self.lock();
        if let Some(i) = sets.iter().position(|s| s.id == set) {
            if sets[i].stopping {
                sets.remove(i);
            } else {
                sets[i].failed = true;
            }
        }
    }

    /// Counts a restart of `queue`'s worker.
    pub fn restarted(&self, queue: QueueName) {
        self.restarts[queue.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> Report {
        let sets = self.lock();
        let mut healthy = true;
        let queues = QueueName::ALL
            .iter()
            .map(|&queue| {
                let (mut alive, mut dead) = (0, 0);
                for set in sets.iter() {
                    for (_, worker) in set.workers.iter().filter(|(q, _)| *q == queue) {
                        // Pending: built, or restarted, and about to start.
                        let live = !set.failed && (worker.is_running() || worker.is_pending());
                        if live {
                            alive += 1;
                        } else if !set.stopping {
                            dead += 1;
                        }
                    }
                }
                healthy &= dead == 0;
                QueueReport {
                    queue: queue.as_str(),
                    alive,
                    dead,
                    restarts: self.restarts[queue.index()].load(Ordering::Relaxed),
                }
            })
            .collect();
        Report { healthy, queues }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Set>> {
        self.sets.lock().expect("health lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(name: &str) -> ApalisWorker {
        let mut worker = ApalisWorker::new(name);
        worker.start().unwrap();
        worker
    }

    fn set_of_started() -> Vec<(QueueName, ApalisWorker)> {
        QueueName::ALL.iter().map(|&q| (q, started(q.as_str()))).collect()
    }

    #[test]
    fn a_stopped_queue_worker_makes_the_process_unhealthy_until_the_set_is_asked_to_stop() {
        let health = Health::default();
        let workers = set_of_started();
        let dying = workers[0].1.clone();
        let set = health.register(workers);
        assert!(health.report().healthy);
        dying.stop().unwrap();
        let report = health.report();
        assert!(!report.healthy, "{report:?}");
        assert_eq!((report.queues[0].alive, report.queues[0].dead), (0, 1));
        assert_eq!(report.queues[1].alive, 1);
        // A shutdown stops workers on purpose.
        health.stopping(set);
        assert!(health.report().healthy);
        health.ended(set);
        assert_eq!(health.report().queues[0].alive + health.report().queues[0].dead, 0);
    }

    #[test]
    fn a_set_that_ends_unasked_is_unhealthy_and_restarts_are_counted() {
        let health = Health::default();
        let set = health.register(set_of_started());
        health.restarted(QueueName::ALL[1]);
        let report = health.report();
        assert!(report.healthy);
        assert_eq!(report.queues[1].restarts, 1);
        health.ended(set);
        let report = health.report();
        assert!(!report.healthy);
        assert!(report.queues.iter().all(|q| q.dead == 1 && q.alive == 0), "{report:?}");
    }
}
