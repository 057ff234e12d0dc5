//! Liveness (with the in-process queue workers), readiness, and the metrics page.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::public_metrics))
}

/// The process is up, and so is every queue worker it runs in-process (`PARLEY_WORKERS`).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "alive"),
    (status = 503, description = "an in-process queue worker is dead: restart the process")))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.config.workers == 0 {
        return (StatusCode::OK, Json(json!({"status": "ok"})));
    }
    let report = state.worker_health.report();
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if report.healthy { "ok" } else { "unhealthy" }, "workers": report.queues})))
}

/// The database and the queue answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"), (status = 503, description = "a dependency is unreachable")))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (database, queue) = tokio::join!(state.db.ping(), state.queue.ping());
    let ready = database && queue;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ready { "ok" } else { "unavailable" }, "database": database, "queue": queue})))
}
