//! The worker process's operations listener, on `PARLEY_METRICS_BIND`: `GET /metrics`
//! (Prometheus text; `PARLEY_METRICS_TOKEN` restricts it) and `GET /healthz` (503 when a
//! queue worker is dead, so an orchestrator restarts the process).

use crate::WorkerContext;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;

/// Binds `PARLEY_METRICS_BIND` (when set) and serves there until the process ends; returns
/// the bound address.
pub async fn spawn(ctx: &WorkerContext) -> anyhow::Result<Option<SocketAddr>> {
    let Some(bind) = ctx.config.metrics_bind else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("binding {bind} (PARLEY_METRICS_BIND): {e}"))?;
    let address = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(ctx.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    tracing::info!(%address, "metrics and health listening");
    Ok(Some(address))
}

async fn metrics(State(ctx): State<WorkerContext>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !parley_shared::metrics::authorized(ctx.config.metrics_token.as_ref(), authorization) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n").into_response();
    }
    let body = parley_shared::metrics::render(&ctx.db).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn healthz(State(ctx): State<WorkerContext>) -> Response {
    let report = ctx.health.report();
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({"status": if report.healthy { "ok" } else { "unhealthy" }, "queues": report.queues});
    (status, axum::Json(body)).into_response()
}
