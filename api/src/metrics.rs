//! HTTP metrics and the `/metrics` route of `parley-api`.
//!
//! [`track`] is one layer on the router: it counts every answer by method, matched route
//! template (`unmatched` when no route matched: the raw path never becomes a label) and
//! status, with its latency. Sign-in results and rate-limit rejections are read off the
//! same answers, so the handlers carry no metrics code. It also makes the request's
//! `X-Request-Id` the current one, so that the jobs the request enqueues record it.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parley_shared::metrics;

/// The sign-in route, whose answers count as sign-in successes and failures.
const LOGIN_ROUTE: &str = "/api/auth/login";

/// The layer: `axum::middleware::from_fn(track)`.
pub async fn track(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = parley_shared::telemetry::with_request_id(request_id, next.run(request)).await;
    let status = response.status();
    metrics::http_request(&method, &route, status.as_u16(), started.elapsed());
    if route == LOGIN_ROUTE && (status == StatusCode::OK || status == StatusCode::UNAUTHORIZED) {
        metrics::sign_in(status == StatusCode::OK);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics::rate_limited(&route);
    }
    response
}

/// Prometheus metrics of this process (and its in-process workers).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "the Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "`PARLEY_METRICS_TOKEN` is set and the request does not carry it", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`PARLEY_METRICS_BIND` is set: metrics are served on that address only", body = crate::error::ErrorEnvelope)))]
pub async fn public_metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.config.metrics_bind.is_some() {
        return ApiError::NotFound.into_response();
    }
    metrics_page(State(state), headers).await
}

/// The same page, on the `PARLEY_METRICS_BIND` listener.
pub async fn metrics_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !metrics::authorized(state.config.metrics_token.as_ref(), authorization) {
        return ApiError::Unauthorized.into_response();
    }
    let body = metrics::render(&state.db).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The router of the `PARLEY_METRICS_BIND` listener.
pub fn private_router(state: AppState) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(metrics_page)).with_state(state)
}
