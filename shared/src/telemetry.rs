//! Log set-up: human-readable text by default, JSON with `PARLEY_LOG_FORMAT=json`;
//! the filter comes from `RUST_LOG` (default `info`).
//!
//! The API's log lines of a request carry its `request.id` (the `X-Request-Id`); a job
//! enqueued while serving it records that id ([`request_id`]), and the worker's log lines
//! of the job carry both `job.id` and `request.id`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

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

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
