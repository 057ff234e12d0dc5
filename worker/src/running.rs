//! The attempts a worker set holds (claimed, running, or waiting for a free slot): what its
//! lease renewals cover, where cancel requests and lost leases are signalled, and what is
//! handed back when the shutdown grace runs out.

use parley_shared::ids::JobId;
use parley_shared::jobs::QueueName;
use parley_shared::store::jobs::Job;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    signal: watch::Sender<Signal>,
}

#[derive(Debug, Default)]
pub struct Running {
    held: Mutex<HashMap<JobId, Held>>,
    /// Claims under way: their jobs are not held yet.
    claims: AtomicUsize,
    claims_done: Notify,
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

    /// Records a claimed attempt; the receiver sees its signals.
    pub fn hold(&self, queue: QueueName, job: &Job) -> watch::Receiver<Signal> {
        let (signal, rx) = watch::channel(Signal::Run);
        self.lock().insert(job.id, Held { attempt: job.attempts, queue, signal });
        rx
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
