//! A closed-loop load generator: each of N clients sends one request at a time, the next as
//! soon as the previous one answers, until a deadline; successes are timed.

use futures::future::BoxFuture;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One request in flight, as the request functions of the scenarios return it.
pub type Request = BoxFuture<'static, anyhow::Result<()>>;

/// What one load phase achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (error statuses, transport errors).
    pub failed: u64,
    /// The first failure, to show what went wrong.
    pub first_error: Option<String>,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    /// From the start until the last client's last request answered.
    pub elapsed: Duration,
}

impl Outcome {
    /// Successful requests per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The `p`-th percentile (0 < p ≤ 100) of successful latencies, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let index = rank_index(p, self.latencies.len());
        index.map_or(f64::NAN, |i| self.latencies[i].as_secs_f64() * 1000.0)
    }

    /// Fails if nothing succeeded; warns on stderr if anything failed.
    pub fn check(&self, label: &str) -> anyhow::Result<()> {
        let first = self.first_error.as_deref().unwrap_or("no error recorded");
        if self.ok == 0 {
            anyhow::bail!("{label}: no request succeeded ({} failed; first: {first})", self.failed);
        }
        if self.failed > 0 {
            eprintln!("warning: {label}: {} of {} requests failed; first: {first}", self.failed, self.ok + self.failed);
        }
        Ok(())
    }

    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latencies.extend(other.latencies);
    }
}

/// The `p`-th percentile (0 < p ≤ 100, nearest rank) of `sorted`; NaN if it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    rank_index(p, sorted.len()).map_or(f64::NAN, |i| sorted[i])
}

/// The index of the `p`-th percentile by nearest rank among `len` sorted values.
fn rank_index(p: f64, len: usize) -> Option<usize> {
    let rank = (p / 100.0 * len as f64).ceil() as usize;
    (len > 0).then(|| rank.clamp(1, len) - 1)
}

/// Runs `clients` concurrent clients for `duration`. `request(client, iteration)` makes one
/// request; it is cloned into every client.
pub async fn run<F, Fut>(clients: usize, duration: Duration, request: F) -> anyhow::Result<Outcome>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        tasks.spawn(run_client(client, deadline, request.clone()));
    }
    let mut total = Outcome::default();
    while let Some(outcome) = tasks.join_next().await {
        total.merge(outcome?);
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}

async fn run_client<F, Fut>(client: usize, deadline: Instant, request: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut outcome = Outcome::default();
    let mut iteration = 0;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match request(client, iteration).await {
            Ok(()) => {
                outcome.ok += 1;
                outcome.latencies.push(sent.elapsed());
            }
            Err(e) => {
                outcome.failed += 1;
                outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        iteration += 1;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_successes_and_failures_and_ranks_latencies() {
        let outcome = run(3, Duration::from_millis(50), |_, i| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if i % 2 == 0 { Ok(()) } else { Err(anyhow::anyhow!("odd")) }
        })
        .await
        .unwrap();
        assert!(outcome.ok > 0 && outcome.failed > 0);
        assert_eq!(outcome.first_error.as_deref(), Some("odd"));
        assert!(outcome.per_sec() > 0.0);
        assert!(outcome.percentile_ms(50.0) >= 1.0);
        assert!(outcome.percentile_ms(99.0) >= outcome.percentile_ms(50.0));
        assert!(outcome.check("test").is_ok());
        assert!(Outcome::default().check("empty").is_err());
    }

    #[test]
    fn percentiles_are_nearest_ranks() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 100.0);
        assert_eq!(percentile(&values, 99.0), 198.0);
        assert_eq!(percentile(&values[..1], 99.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
