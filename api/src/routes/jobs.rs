//! Jobs: list, detail, the resumable SSE event stream, and cancellation.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::sse::event_stream;
use crate::state::AppState;
use crate::views::{JobFilter, JobView};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use futures::Stream;
use parley_shared::ids::JobId;
use parley_shared::jobs::lifecycle;
use parley_shared::store::jobs::{self, Job};
use serde::Deserialize;
use std::convert::Infallible;
use utoipa::IntoParams;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
}

/// A job the caller may see: its own, or any for an admin. Anything else is a 404.
pub async fn visible_job(state: &AppState, auth: &AuthUser, id: &str) -> ApiResult<Job> {
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
    let job = jobs::get(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    if job.owner() != Some(auth.user.id) && !auth.user.is_admin {
        return Err(ApiError::NotFound);
    }
    Ok(job)
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/api/jobs/", tag = "jobs", params(PageQuery, JobFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<JobView>), (status = 401, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(page): Query<PageQuery>,
    Query(filter): Query<JobFilter>,
) -> ApiResult<Json<Page<JobView>>> {
    let status = filter.parse()?;
    let (limit, cursor) = page.parse::<JobId>()?;
    let rows = jobs::list(&state.db.pool, Some(auth.user.id), status, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |j| j.id.to_string(), JobView::from)))
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{id}/", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = JobView), (status = 404, body = ErrorEnvelope)))]
pub async fn get_job(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(visible_job(&state, &auth, &id).await?.into()))
}

/// Cancels a job: a waiting one at once, a running one within a second.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel/", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 202, body = JobView), (status = 404, body = ErrorEnvelope), (status = 409, description = "the job already finished", body = ErrorEnvelope)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = visible_job(&state, &auth, &id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::StateConflict {
            code: "job_finished",
            message: format!("the job already finished ({})", job.status.as_str()),
        });
    }
    cancel(&state, &job).await?;
    let job = jobs::get(&state.db.pool, job.id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Cancels `job`; a job that was still waiting ends here, so its end is announced here.
pub async fn cancel(state: &AppState, job: &Job) -> ApiResult<()> {
    lifecycle::cancel(&state.job_env(), job.id).await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Resume after this event (like `Last-Event-ID`).
    pub starting_after: Option<i64>,
}

/// The job's events as Server-Sent Events (`id: seq`, `event: status|delta|progress|done|error`,
/// `data: json`). Resume with `Last-Event-ID` or `?starting_after=N`: every later event
/// arrives exactly once, then live ones. The stream ends after `done`, `error` or
/// cancellation.
#[utoipa::path(get, path = "/api/jobs/{id}/events/", tag = "jobs", params(("id" = String, Path), StreamQuery), security(("bearer" = [])), responses(
    (status = 200, description = "an SSE stream", content_type = "text/event-stream"), (status = 404, body = ErrorEnvelope)))]
pub async fn job_events(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = visible_job(&state, &auth, &id).await?;
    let after = match query.starting_after {
        Some(n) => n,
        None => {
            headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        }
    };
    Ok(event_stream(state, job.id, after))
}
