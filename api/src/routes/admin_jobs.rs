//! Queue operations for admins: counts per status, each queue's load and the last hour's
//! outcomes, every job, retrying a failed one, and a no-op job to check the pipeline end to end.

use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AdminUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::views::{JobAccepted, JobFilter, JobView};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::ids::JobId;
use parley_shared::jobs::{JobKind, JobSpec, JobStatus, Noop, QueueName};
use parley_shared::store::jobs;
use parley_shared::time::now_ms;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/queues", get(queue_stats))
        .route("/api/admin/jobs", get(list_all_jobs))
        .route("/api/admin/jobs/noop", post(create_noop))
        .route("/api/admin/jobs/{id}/retry", post(retry_job))
}

/// Jobs per status, and whether the queue answers; each queue's load now, and what jobs came
/// to in the last hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    pub queue_reachable: bool,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed`, `cancelled` → count.
    pub jobs: BTreeMap<String, i64>,
    /// Every queue (`interactive`, `default`, `bulk`, in that order), an idle one too.
    pub queues: Vec<QueueLoad>,
    /// Per kind and queue, the jobs that ended or were set to retry in the last 60 minutes;
    /// kinds without any are left out.
    pub last_hour: Vec<jobs::RecentOutcomes>,
}

/// One queue's load now.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueLoad {
    /// `interactive`, `default` or `bulk`.
    pub name: String,
    /// Jobs queued or waiting to retry (including those scheduled for later).
    pub waiting: i64,
    /// Jobs a worker is running.
    pub running: i64,
    /// Seconds since the oldest waiting job that is due fell due (was enqueued, or its
    /// retry time came); `null` when no waiting job is due. The same figure as the
    /// `parley_queue_oldest_due_age_seconds` metric.
    pub oldest_waiting_secs: Option<i64>,
}

/// The window of [`QueueStats::last_hour`].
const LAST_HOUR_MS: i64 = 3_600_000;

#[utoipa::path(get, path = "/api/admin/queues/", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = QueueStats), (status = 403, body = ErrorEnvelope)))]
pub async fn queue_stats(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<QueueStats>> {
    let pool = &state.db.pool;
    let mut counts: BTreeMap<String, i64> = JobStatus::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    let rows = jobs::count_by_queue_and_status(pool).await?;
    for row in &rows {
        *counts.entry(row.status.clone()).or_default() += row.count;
    }
    let now = now_ms();
    let queues = QueueName::ALL
        .iter()
        .map(|q| {
            let name = q.as_str();
            let count = |statuses: &[JobStatus]| -> i64 {
                rows.iter()
                    .filter(|r| r.queue == name && statuses.iter().any(|s| s.as_str() == r.status))
                    .map(|r| r.count)
                    .sum()
            };
            let oldest_due = rows.iter().filter(|r| r.queue == name).filter_map(|r| r.oldest_due).min();
            QueueLoad {
                name: name.to_owned(),
                waiting: count(&[JobStatus::Queued, JobStatus::Retrying]),
                running: count(&[JobStatus::Running]),
                oldest_waiting_secs: oldest_due.map(|due| (now - due).max(0) / 1000),
            }
        })
        .collect();
    let last_hour = jobs::outcomes_since(pool, now - LAST_HOUR_MS).await?;
    Ok(Json(QueueStats { queue_reachable: state.queue.ping().await, jobs: counts, queues, last_hour }))
}

/// Every user's jobs, newest first.
#[utoipa::path(get, path = "/api/admin/jobs/", tag = "admin", params(PageQuery, JobFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<JobView>), (status = 403, body = ErrorEnvelope)))]
pub async fn list_all_jobs(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<PageQuery>,
    Query(filter): Query<JobFilter>,
) -> ApiResult<Json<Page<JobView>>> {
    let status = filter.parse()?;
    let (limit, cursor) = page.parse::<JobId>()?;
    let rows = jobs::list(&state.db.pool, None, status, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |j| j.id.to_string(), JobView::for_admin)))
}

/// Runs a failed or cancelled job again, with a fresh attempt budget.
#[utoipa::path(post, path = "/api/admin/jobs/{id}/retry/", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 202, body = JobView), (status = 404, body = ErrorEnvelope), (status = 409, description = "the job is not failed or cancelled", body = ErrorEnvelope)))]
pub async fn retry_job(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
    let job = jobs::get(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    if job.kind == JobKind::SendEmail && matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
        // An admin's retry is the decision to send an email whose earlier send was cut off
        // (one that went out is still never sent twice). Before the requeue, so the new
        // attempt finds the claim gone.
        parley_shared::store::email_tokens::release_delivery(&state.db.writer, &id.to_string()).await?;
    }
    let mut tx = state.db.begin_write().await?;
    let requeued = jobs::requeue(&mut tx, id).await?;
    tx.commit().await?;
    if !requeued {
        return Err(ApiError::StateConflict {
            code: "not_retryable",
            message: format!("only failed or cancelled jobs can be retried; this one is {}", job.status.as_str()),
        });
    }
    state.queue.wake(job.kind.policy().queue);
    let details = serde_json::json!({"job_id": id, "kind": job.kind});
    meta.admin_action(&state, &admin, parley_shared::audit::AuditAction::AdminJobRetry, job.owner(), details).await?;
    let job = jobs::get(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// A no-op job (optionally sleeping or failing), to check the queue end to end. Answers 202
/// with the job's id, or, with `Accept: text/event-stream`, the job's event stream itself
/// (one request from the POST to `done`).
#[utoipa::path(post, path = "/api/admin/jobs/noop/", tag = "admin", request_body = Noop, security(("bearer" = [])), responses(
    (status = 202, body = JobAccepted),
    (status = 200, description = "with Accept: text/event-stream, the job's SSE stream", content_type = "text/event-stream"),
    (status = 422, body = ErrorEnvelope)))]
pub async fn create_noop(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    headers: HeaderMap,
    Json(noop): Json<Noop>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::default();
    if noop.sleep_ms > 600_000 {
        errors.add("sleep_ms", "must be at most 600000");
    }
    if noop.fail_times > 1000 {
        errors.add("fail_times", "must be at most 1000");
    }
    errors.finish()?;
    // The job and its audit entry together: one statement (PostgreSQL) or one transaction.
    let job_id = jobs::enqueue_recorded(&state.db, Some(admin.0.user.id), &noop, |job_id| {
        meta.event(parley_shared::audit::AuditAction::AdminJobCreate)
            .actor(admin.0.user.id)
            .details(serde_json::json!({"job_id": job_id, "kind": Noop::KIND}))
    })
    .await?;
    state.queue.wake(Noop::QUEUE);
    if crate::sse::wants_stream(&headers) {
        return Ok(crate::sse::event_stream(state, job_id, 0).into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id })).into_response())
}
