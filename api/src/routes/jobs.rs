//! Jobs: list, detail, the resumable SSE event stream, and cancellation.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures::Stream;
use parley_shared::ids::JobId;
use parley_shared::jobs::lifecycle;
use parley_shared::jobs::{JobKind, JobStatus};
use parley_shared::store::job_events::{self, JobEvent};
use parley_shared::store::jobs::{self, Job};
use parley_shared::time::{from_ms, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
}

/// A job was accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
}

/// A job as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let json = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        Self {
            id: job.id,
            status: job.status(),
            progress: json(&job.progress),
            result: json(&job.result),
            kind: job.kind,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error: job.error,
            created_at: from_ms(job.created_at),
            started_at: job.started_at.map(from_ms),
            finished_at: job.finished_at.map(from_ms),
        }
    }
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

#[derive(Debug, Deserialize, IntoParams)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<String>,
}

impl JobFilter {
    pub fn parse(&self) -> ApiResult<Option<JobStatus>> {
        match self.status.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => JobStatus::parse(s).map(Some).ok_or_else(|| {
                ApiError::field("status", "must be one of queued, running, retrying, succeeded, failed, cancelled")
            }),
        }
    }
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
    if job.status().is_terminal() {
        return Err(ApiError::BadRequest {
            code: "job_finished",
            message: format!("the job already finished ({})", job.status().as_str()),
            status: StatusCode::CONFLICT,
        });
    }
    cancel(&state, &job).await?;
    let job = jobs::get(&state.db.pool, job.id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Cancels `job`; a job that was still waiting ends here, so its end is announced here.
pub async fn cancel(state: &AppState, job: &Job) -> ApiResult<()> {
    lifecycle::cancel(&state.db, &state.bus, job.id).await?;
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

/// How often a stream re-reads the table even without a live notification (covers a lost
/// pub/sub message).
const RESYNC: Duration = Duration::from_secs(1);

/// The SSE stream of `job` after `after`: stored events first, then live ones, in `seq`
/// order without gaps or repeats.
pub fn event_stream(state: AppState, job: JobId, after: i64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let mut live = state.bus.subscribe(job);
        let mut last = after;
        let job_key = job.to_string();
        loop {
            let backlog = match job_events::after(&state.db.pool, job, last, 500).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "reading job events failed");
                    return;
                }
            };
            let full = backlog.len() == 500;
            if backlog.is_empty() && stream_over(&state, job, last).await {
                return;
            }
            for event in backlog {
                last = event.seq;
                let terminal = event.is_terminal();
                if tx.send(sse_event(&event)).await.is_err() || terminal {
                    return;
                }
            }
            if full {
                continue;
            }
            // Wait for the next event of this job, or resync from the table.
            let deadline = tokio::time::Instant::now() + RESYNC;
            loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Ok(Ok(event)) if event.job_id == job_key && event.seq == last + 1 => {
                        last = event.seq;
                        let terminal = event.is_terminal();
                        if tx.send(sse_event(&event)).await.is_err() || terminal {
                            return;
                        }
                    }
                    Ok(Ok(event)) if event.job_id == job_key && event.seq > last + 1 => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep(RESYNC).await;
                        break;
                    }
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Sse::new(futures::StreamExt::map(stream, Ok)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Whether nothing can follow event `last`: it was the final event (a resume after the
/// end), or the job is gone or ended a while ago without one.
async fn stream_over(state: &AppState, job: JobId, last: i64) -> bool {
    if last > 0 && matches!(job_events::at(&state.db.pool, job, last).await, Ok(Some(e)) if e.is_terminal()) {
        return true;
    }
    // The final event is written just after the status changes: allow for that gap.
    match jobs::get(&state.db.pool, job).await {
        Ok(Some(j)) => j.status().is_terminal() && j.finished_at.is_some_and(|t| now_ms() - t > 5_000),
        Ok(None) => true,
        Err(_) => false,
    }
}

fn sse_event(event: &JobEvent) -> Event {
    Event::default().id(event.seq.to_string()).event(event.event.clone()).data(event.data.clone())
}
