//! Log set-up: human-readable text by default, JSON with `PARLEY_LOG_FORMAT=json`;
//! the filter comes from `RUST_LOG` (default `info`).
//!
//! The API's log lines of a request carry its `request.id` (the `X-Request-Id`); a job
//! enqueued while serving it records that id ([`request_id`]), and the worker's log lines
//! of the job carry both `job.id` and `request.id`.

use crate::config::LogFormat;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` (a request's handling) with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: Option<String>, work: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, work).await,
        None => work.await,
    }
}

/// The id of the request being served by this task, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Installs the log output and the layer that turns the database pool's acquire events
/// into the `parley_db_pool_acquire_wait_seconds` histogram (each filtered on its own, so
/// `RUST_LOG` does not turn the histogram off).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let output = tracing_subscriber::fmt::layer();
    let output = match format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Text => output.boxed(),
    };
    let _ = tracing_subscriber::registry().with(output.with_filter(filter)).with(pool_wait_layer()).try_init();
}

/// What sqlx reports after each connection it hands out (see `Db::connect`).
const ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

/// The layer recording how long each database query or transaction waited for a pool
/// connection, from sqlx's acquire events.
pub fn pool_wait_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    PoolWait.with_filter(Targets::new().with_target(ACQUIRE_TARGET, tracing::Level::TRACE))
}

struct PoolWait;

impl<S: tracing::Subscriber> Layer<S> for PoolWait {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Waited(Option<f64>);
        impl Visit for Waited {
            fn record_f64(&mut self, field: &Field, value: f64) {
                if field.name() == "acquired_after_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
        }
        let mut waited = Waited(None);
        event.record(&mut waited);
        if let Some(secs) = waited.0 {
            crate::metrics::pool_acquired(secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn every_connection_a_pool_hands_out_records_its_wait() {
        let handle = crate::metrics::install();
        let count = || {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with("parley_db_pool_acquire_wait_seconds_count"))
                .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(pool_wait_layer()));
        let path = std::env::temp_dir().join(format!("parley-pool-wait-{}.db", std::process::id()));
        let db = crate::db::Db::connect(&format!("sqlite://{}", path.display()), 2).await.unwrap();
        for _ in 0..3 {
            sqlx::query("select 1").execute(&db.pool).await.unwrap();
        }
        db.pool.close().await;
        db.writer.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(count() >= before + 3, "three queries, three acquires: {} then {}", before, count());
    }
}
