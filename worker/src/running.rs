//! The attempts a worker set holds (claimed, running, or waiting for a free slot): what its
//! lease renewals cover, where cancel requests and lost leases are signalled, and what is
//! handed back when the shutdown grace runs out.

use parley_shared::ids::JobId;
use parley_shared::jobs::QueueName;
use parley_shared::store::jobs::Job;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

/// What the holder of an attempt is told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Run,
    /// A cancel was requested: stop, keeping what was done.
    Cancel,
    /// The lease is gone (another worker took the job over): record nothing.
    Lost,
}

#[derive(Debug)]
struct Held {
    attempt: i64,
    queue: QueueName,
    /// The generation of the queue's worker that claimed it (see [`Running::next_generation`]).
    generation: u64,
    signal: watch::Sender<Signal>,
}

#[derive(Debug, Default)]
pub struct Running {
    held: Mutex<HashMap<JobId, Held>>,
    /// Claims under way: their jobs are not held yet.
    claims: AtomicUsize,
    claims_done: Notify,
    /// Per queue, how many times its worker was restarted.
    generations: [AtomicU64; 3],
}

/// A claim under way (see [`Running::claim_started`]).
#[derive(Debug)]
pub struct ClaimGuard(Arc<Running>);

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.0.claims.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.claims_done.notify_waiters();
        }
    }
}

impl Running {
    /// Marks a claim as under way until the guard drops, so that a shutdown waits for the
    /// jobs it takes to be held (and so handed back) rather than leaving them to their lease.
    pub fn claim_started(self: &Arc<Self>) -> ClaimGuard {
        self.claims.fetch_add(1, Ordering::AcqRel);
        ClaimGuard(self.clone())
    }

    /// Waits until no claim is under way.
    pub async fn claims_finished(&self) {
        loop {
            let notified = self.claims_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.claims.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Records an attempt claimed by generation `generation` of `queue`'s worker; the
    /// receiver sees its signals.
    pub fn hold(&self, queue: QueueName, generation: u64, job: &Job) -> watch::Receiver<Signal> {
        let (signal, rx) = watch::channel(Signal::Run);
        self.lock().insert(job.id, Held { attempt: job.attempts, queue, generation, signal });
        rx
    }

    /// The generation of `queue`'s worker now running.
    pub fn generation(&self, queue: QueueName) -> u64 {
        self.generations[queue.index()].load(Ordering::Acquire)
    }

    /// `queue`'s worker is being restarted: the attempts its earlier generations held were
    /// dropped with it. Returns the new generation.
    pub fn next_generation(&self, queue: QueueName) -> u64 {
        self.generations[queue.index()].fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Takes the attempts of `queue` held by generations before `generation` (dropped with
    /// a worker that ended), to hand them back.
    pub fn drain_older(&self, queue: QueueName, generation: u64) -> Vec<(JobId, i64)> {
        let mut held = self.lock();
        let old: Vec<JobId> =
            held.iter().filter(|(_, h)| h.queue == queue && h.generation < generation).map(|(id, _)| *id).collect();
        old.into_iter().filter_map(|id| held.remove(&id).map(|h| (id, h.attempt))).collect()
    }

    /// Forgets a finished attempt.
    pub fn release(&self, job: JobId, attempt: i64) {
        let mut held = self.lock();
        if held.get(&job).is_some_and(|h| h.attempt == attempt) {
            held.remove(&job);
        }
    }

    /// Attempts held for `queue`.
    pub fn count(&self, queue: QueueName) -> usize {
        self.lock().values().filter(|h| h.queue == queue).count()
    }

    /// Every held attempt: `(job, attempt)`.
    pub fn snapshot(&self) -> Vec<(JobId, i64)> {
        self.lock().iter().map(|(id, h)| (*id, h.attempt)).collect()
    }

    /// Signals the holder of `job` (if it holds attempt `attempt`, or any attempt when `None`).
    pub fn signal(&self, job: JobId, attempt: Option<i64>, signal: Signal) {
        if let Some(held) = self.lock().get(&job).filter(|h| attempt.is_none_or(|a| a == h.attempt)) {
            held.signal.send_replace(signal);
        }
    }

    /// Takes every attempt still held (at shutdown, to hand them back).
    pub fn drain(&self) -> Vec<(JobId, i64)> {
        self.lock().drain().map(|(id, h)| (id, h.attempt)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.held.lock().expect("running lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_shared::jobs::{JobKind, JobStatus};
    use parley_shared::time::Timestamp;

    fn job(queue: QueueName) -> Job {
        let now = Timestamp::now();
        Job {
            id: JobId::new(),
            kind: JobKind::Noop,
            queue,
            owner_id: None,
            payload: "{}".into(),
            status: JobStatus::Running,
            attempts: 1,
            max_attempts: 5,
            progress: None,
            result: None,
            error: None,
            error_detail: None,
            run_after: now,
            lease_until: Some(now),
            cancel_requested: false,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            updated_at: now,
            request_id: None,
        }
    }

    #[test]
    fn a_restart_takes_only_what_the_ended_generations_of_that_queue_held() {
        let running = Running::default();
        let (old_a, old_b, other) = (job(QueueName::Default), job(QueueName::Default), job(QueueName::Bulk));
        for j in [&old_a, &old_b] {
            let _ = running.hold(QueueName::Default, running.generation(QueueName::Default), j);
        }
        let _ = running.hold(QueueName::Bulk, running.generation(QueueName::Bulk), &other);
        let generation = running.next_generation(QueueName::Default);
        assert_eq!((generation, running.generation(QueueName::Default)), (1, 1));
        let new = job(QueueName::Default);
        let _ = running.hold(QueueName::Default, generation, &new);

        let mut orphans: Vec<JobId> =
            running.drain_older(QueueName::Default, generation).into_iter().map(|h| h.0).collect();
        orphans.sort_by_key(|id| id.to_string());
        let mut expected = vec![old_a.id, old_b.id];
        expected.sort_by_key(|id| id.to_string());
        assert_eq!(orphans, expected);
        // The new generation's attempt and the other queue's stay held.
        let mut left: Vec<JobId> = running.snapshot().into_iter().map(|h| h.0).collect();
        left.sort_by_key(|id| id.to_string());
        let mut kept = vec![new.id, other.id];
        kept.sort_by_key(|id| id.to_string());
        assert_eq!(left, kept);
    }
}
