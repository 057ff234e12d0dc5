//! Prometheus metrics: one process-wide registry (the `metrics` facade with the Prometheus
//! exporter's recorder), the series Parley records, and [`render`] for the `/metrics`
//! routes of `parley-api` and `parley-worker`.
//!
//! Every label value comes from a bounded set: HTTP routes are the matched route templates
//! (`/api/jobs/{id}/`), never the raw path; jobs are labelled by kind and queue; LLM series
//! by config name and provider; never by user, email or job id.

use crate::db::Db;
use crate::jobs::{JobKind, QueueName};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets of the latency histograms, in seconds (5 ms to 5 min).
const SECONDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Installs the process's recorder (once; later calls return the same handle). Series
/// recorded before it are lost, so both binaries call it first thing.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
            }
            // Histograms drain their samples into buckets on upkeep.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("the upkeep thread starts");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("parley_http_requests_total", "HTTP requests answered, by method, matched route and status");
    describe_histogram!(
        "parley_http_request_duration_seconds",
        "HTTP request latency, by method, matched route and status"
    );
    describe_counter!("parley_jobs_enqueued_total", "Jobs written to the queue, by kind");
    describe_counter!("parley_jobs_started_total", "Job attempts started, by kind");
    describe_counter!("parley_jobs_succeeded_total", "Jobs succeeded, by kind");
    describe_counter!("parley_jobs_failed_total", "Jobs failed for good, by kind");
    describe_counter!("parley_jobs_retried_total", "Job attempts that failed and were scheduled again, by kind");
    describe_counter!("parley_jobs_cancelled_total", "Jobs cancelled, by kind");
    describe_histogram!("parley_job_run_duration_seconds", "Job attempt run time, by kind");
    describe_histogram!(
        "parley_job_queue_wait_seconds",
        "Time from a job falling due to its attempt starting, by kind"
    );
    describe_gauge!("parley_queue_depth", "Jobs waiting (queued or retrying), by queue");
    describe_gauge!("parley_queue_oldest_due_age_seconds", "Age of the oldest due job not started yet, by queue");
    describe_gauge!("parley_sse_streams_open", "Open SSE streams");
    describe_counter!("parley_llm_requests_total", "LLM requests, by config and provider");
    describe_counter!("parley_llm_tokens_in_total", "LLM prompt tokens, by config and provider");
    describe_counter!("parley_llm_tokens_out_total", "LLM completion tokens, by config and provider");
    describe_histogram!("parley_llm_first_token_seconds", "Time to the first LLM token, by config and provider");
    describe_counter!("parley_llm_provider_errors_total", "LLM provider errors, by provider and class");
    describe_counter!("parley_sign_ins_total", "Sign-in attempts, by result (success or failure)");
    describe_counter!("parley_rate_limited_total", "Requests refused by a rate limit (429), by matched route");
    describe_gauge!("parley_db_pool_connections", "App database pool connections, by pool and state (in_use, idle)");
    describe_gauge!("parley_db_pool_max_connections", "App database pool size limit, by pool");
    describe_histogram!(
        "parley_db_pool_acquire_wait_seconds",
        "Time each app database query or transaction waited for a pool connection"
    );
    describe_counter!("parley_worker_restarts_total", "Queue workers restarted after ending, by queue");
}

/// A database pool handed out a connection after `secs` of waiting.
pub fn pool_acquired(secs: f64) {
    histogram!("parley_db_pool_acquire_wait_seconds").record(secs);
}

/// One answered HTTP request; `route` is the matched route template.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
    counter!("parley_http_requests_total", &labels).increment(1);
    histogram!("parley_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

pub fn job_enqueued(kind: JobKind) {
    counter!("parley_jobs_enqueued_total", "kind" => kind.as_str()).increment(1);
}

/// An attempt started `waited` after its job fell due.
pub fn job_started(kind: JobKind, waited: Duration) {
    counter!("parley_jobs_started_total", "kind" => kind.as_str()).increment(1);
    histogram!("parley_job_queue_wait_seconds", "kind" => kind.as_str()).record(waited.as_secs_f64());
}

/// How an attempt ended, for [`job_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Succeeded,
    Failed,
    Retried,
    Cancelled,
}

/// An attempt ended after `ran` (`None`: the job never ran, a cancel of a waiting job).
pub fn job_ended(kind: JobKind, end: JobOutcome, ran: Option<Duration>) {
    let name = match end {
        JobOutcome::Succeeded => "parley_jobs_succeeded_total",
        JobOutcome::Failed => "parley_jobs_failed_total",
        JobOutcome::Retried => "parley_jobs_retried_total",
        JobOutcome::Cancelled => "parley_jobs_cancelled_total",
    };
    counter!(name, "kind" => kind.as_str()).increment(1);
    if let Some(ran) = ran {
        histogram!("parley_job_run_duration_seconds", "kind" => kind.as_str()).record(ran.as_secs_f64());
    }
}

/// Counts an open SSE stream until dropped.
#[derive(Debug)]
pub struct SseStream(());

impl SseStream {
    pub fn open() -> Self {
        gauge!("parley_sse_streams_open").increment(1.0);
        Self(())
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        gauge!("parley_sse_streams_open").decrement(1.0);
    }
}

/// One LLM request through config `config` of `provider`.
pub fn llm_request(config: &str, provider: &str) {
    counter!("parley_llm_requests_total", "config" => config.to_owned(), "provider" => provider.to_owned())
        .increment(1);
}

pub fn llm_first_token(config: &str, provider: &str, after: Duration) {
    histogram!("parley_llm_first_token_seconds", "config" => config.to_owned(), "provider" => provider.to_owned())
        .record(after.as_secs_f64());
}

pub fn llm_tokens(config: &str, provider: &str, prompt: u64, completion: u64) {
    let labels = [("config", config.to_owned()), ("provider", provider.to_owned())];
    counter!("parley_llm_tokens_in_total", &labels).increment(prompt);
    counter!("parley_llm_tokens_out_total", &labels).increment(completion);
}

/// A provider error of `class` (a fixed set: `rate_limited`, `timeout`, `server`, ...).
pub fn provider_error(provider: &str, class: &'static str) {
    counter!("parley_llm_provider_errors_total", "provider" => provider.to_owned(), "class" => class).increment(1);
}

pub fn sign_in(success: bool) {
    counter!("parley_sign_ins_total", "result" => if success { "success" } else { "failure" }).increment(1);
}

/// A request refused by a rate limit, by matched route.
pub fn rate_limited(route: &str) {
    counter!("parley_rate_limited_total", "route" => route.to_owned()).increment(1);
}

pub fn worker_restarted(queue: QueueName) {
    counter!("parley_worker_restarts_total", "queue" => queue.as_str()).increment(1);
}

/// The registry in the Prometheus text format, with the queue and pool gauges read now.
/// The queue gauges are left as they were when the database does not answer in time.
pub async fn render(db: &Db) -> String {
    let handle = install();
    let depth = tokio::time::timeout(Duration::from_secs(2), crate::store::jobs::queue_depths(&db.pool)).await;
    match depth {
        Ok(Ok(depths)) => {
            let now = crate::time::now_ms();
            for queue in QueueName::ALL {
                let (waiting, oldest) = depths.iter().find(|d| d.0 == queue.as_str()).map_or((0, None), |d| (d.1, d.2));
                gauge!("parley_queue_depth", "queue" => queue.as_str()).set(waiting as f64);
                let age = oldest.map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
                gauge!("parley_queue_oldest_due_age_seconds", "queue" => queue.as_str()).set(age);
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "reading queue depths for /metrics failed"),
        Err(_) => tracing::debug!("reading queue depths for /metrics timed out"),
    }
    let pools: &[(&str, &sqlx::AnyPool)] = if db.backend == crate::db::Backend::Sqlite {
        &[("read", &db.pool), ("write", &db.writer)]
    } else {
        &[("main", &db.pool)]
    };
    for (name, pool) in pools {
        let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
        gauge!("parley_db_pool_connections", "pool" => *name, "state" => "in_use").set(size - idle);
        gauge!("parley_db_pool_connections", "pool" => *name, "state" => "idle").set(idle);
        gauge!("parley_db_pool_max_connections", "pool" => *name).set(f64::from(pool.options().get_max_connections()));
    }
    handle.render()
}

/// Whether a `/metrics` request may read the registry: always when no token is configured,
/// else only with `Authorization: Bearer <token>` (digests compared, so the time taken
/// tells nothing of the token).
pub fn authorized(token: Option<&secrecy::SecretString>, authorization: Option<&str>) -> bool {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let Some(token) = token else { return true };
    let Some(given) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
    Sha256::digest(given.trim().as_bytes()) == Sha256::digest(token.expose_secret().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_is_required_only_when_configured() {
        let token = secrecy::SecretString::from("s3cret-scrape-token");
        assert!(authorized(None, None));
        assert!(authorized(Some(&token), Some("Bearer s3cret-scrape-token")));
        assert!(!authorized(Some(&token), None));
        assert!(!authorized(Some(&token), Some("Bearer wrong")));
        assert!(!authorized(Some(&token), Some("s3cret-scrape-token")));
    }
}
