//! Exports: one's own data (a zip written by an `export` job), an admin's lists (CSV or JSON,
//! by a job too), a conversation (answered directly: it is small), and the download of an
//! export's file until it expires.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, AuthUser, Json, Query};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::exports::{self, ExportFilters};
use parley_shared::ids::{ChatSessionId, ExportId, JobId};
use parley_shared::jobs::{ExportData, JobSpec};
use parley_shared::store::chat;
use parley_shared::store::exports::{self as export_store, ExportFormat, ExportKind};
use parley_shared::usecases;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users/me/export", post(export_me))
        .route("/api/admin/exports", post(admin_export))
        .route("/api/exports/{id}/download", get(download))
        .route("/api/llm/sessions/{id}/export", get(export_session))
}

/// An export started: its job, and where its file will be.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportAccepted {
    #[schema(value_type = String)]
    pub job_id: JobId,
    #[schema(value_type = String)]
    pub export_id: ExportId,
    pub status_url: String,
    pub stream_url: String,
    pub download_url: String,
}

/// Starts an export; an `Idempotency-Key` makes a retried request answer the first one's
/// export instead of starting another.
async fn start(
    state: &AppState,
    headers: &HeaderMap,
    user: parley_shared::ids::UserId,
    kind: ExportKind,
    format: ExportFormat,
    filters: &ExportFilters,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(headers, format!("user:{user}:export"))?;
    if let Some(key) = &key
        && let Some(first) = key.replay(&state.db.pool).await?
    {
        return Ok(first);
    }
    let mut tx = state.db.begin_write().await?;
    let (export, job) = usecases::exports::start(&mut tx, user, kind, format, filters).await?;
    let body = ExportAccepted {
        job_id: job,
        export_id: export,
        status_url: format!("/api/jobs/{job}/"),
        stream_url: format!("/api/jobs/{job}/events/"),
        download_url: format!("/api/exports/{export}/download/"),
    };
    if let Some(first) = idempotency::commit(key.as_ref(), tx, &state.db.pool, StatusCode::ACCEPTED, &body).await? {
        return Ok(first);
    }
    state.queue.wake(ExportData::QUEUE);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Starts an export of one's own data: a zip of `profile.json`, `sessions/<id>.json` and
/// `.md` for each conversation, the avatar and `activity.json`. The job's result names the
/// download URL.
#[utoipa::path(post, path = "/api/users/me/export/", tag = "accounts", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key answers the first request's export")),
    responses((status = 202, body = ExportAccepted)))]
pub async fn export_me(State(state): State<AppState>, auth: AuthUser, headers: HeaderMap) -> ApiResult<Response> {
    start(&state, &headers, auth.user.id, ExportKind::Personal, ExportFormat::Zip, &ExportFilters::default()).await
}

/// What an admin exports.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminExportKind {
    Users,
    Usage,
    Audit,
}

/// A list's file format.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListFormat {
    Csv,
    Json,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminExportRequest {
    pub kind: AdminExportKind,
    pub format: ListFormat,
    /// The matching admin list's filters; those of other kinds are ignored.
    #[serde(default)]
    pub filters: Option<ExportFilters>,
}

/// Starts an export of accounts, token usage or the activity log, in CSV (cells a
/// spreadsheet would run as formulas are escaped) or JSON.
#[utoipa::path(post, path = "/api/admin/exports/", tag = "admin", request_body = AdminExportRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key answers the first request's export")),
    responses((status = 202, body = ExportAccepted)))]
pub async fn admin_export(
    State(state): State<AppState>,
    admin: AdminUser,
    headers: HeaderMap,
    Json(req): Json<AdminExportRequest>,
) -> ApiResult<Response> {
    let filters = req.filters.unwrap_or_default();
    filters.check().finish()?;
    let kind = match req.kind {
        AdminExportKind::Users => ExportKind::Users,
        AdminExportKind::Usage => ExportKind::Usage,
        AdminExportKind::Audit => ExportKind::Audit,
    };
    let format = match req.format {
        ListFormat::Csv => ExportFormat::Csv,
        ListFormat::Json => ExportFormat::Json,
    };
    start(&state, &headers, admin.0.user.id, kind, format, &filters).await
}

fn attachment(content_type: &str, file_name: &str, length: Option<u64>, body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // Server-made names: ASCII letters, digits, `-` and `.` only.
    let disposition = format!("attachment; filename=\"{file_name}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Downloads an export's file: its owner or an admin. 409 until it is written; 410 once it
/// expired (the file is then deleted).
#[utoipa::path(get, path = "/api/exports/{id}/download/", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, description = "the file, with its content type and a `Content-Disposition` file name",
        content(("application/zip"), ("text/csv"), ("application/json"))),
    (status = 409, description = "`export_not_ready`: the job has not written it yet", body = ErrorEnvelope),
    (status = 410, description = "`export_expired`: the file expired and was deleted", body = ErrorEnvelope)))]
pub async fn download(State(state): State<AppState>, auth: AuthUser, Path(id): Path<String>) -> ApiResult<Response> {
    let id: ExportId = id.parse().map_err(|_| ApiError::NotFound)?;
    let export = export_store::get(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    if export.user_id != auth.user.id && !auth.user.is_admin {
        return Err(ApiError::NotFound);
    }
    let store = exports::store(&state.config);
    let expired = ApiError::Gone { code: "export_expired", message: "this export expired; start a new one".into() };
    let (Some(key), Some(expires_at)) = (&export.storage_key, export.expires_at) else {
        if export.expires_at.is_some() {
            return Err(expired);
        }
        return Err(ApiError::StateConflict {
            code: "export_not_ready",
            message: "the export is not written yet".into(),
        });
    };
    if expires_at.millis() <= parley_shared::time::now_ms() {
        usecases::exports::forget(&state.db, store.as_ref(), &export).await?;
        return Err(expired);
    }
    let Some((reader, length)) = store.open(key).await? else { return Err(expired) };
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    let file_name = export.file_name.as_deref().unwrap_or("parley-export");
    Ok(attachment(export.format.content_type(), file_name, Some(length), Body::from_stream(stream)))
}

/// A conversation's file format.
#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationFormat {
    #[default]
    Md,
    Json,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ConversationExportQuery {
    /// `md` (default) or `json`.
    #[param(inline)]
    pub format: Option<ConversationFormat>,
}

/// One's conversation as a file: Markdown or JSON (title, tags, and the messages with their
/// roles, models and times).
#[utoipa::path(get, path = "/api/llm/sessions/{id}/export/", tag = "llm", params(("id" = String, Path), ConversationExportQuery), security(("bearer" = [])), responses(
    (status = 200, description = "the conversation, with a `Content-Disposition` file name",
        content(("text/markdown"), ("application/json")))))]
pub async fn export_session(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<ConversationExportQuery>,
) -> ApiResult<Response> {
    let id: ChatSessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let session = chat::get_session(&state.db.pool, id, auth.user.id).await?.ok_or(ApiError::NotFound)?;
    let format = q.format.unwrap_or_default();
    let mut json_messages = Vec::new();
    let mut markdown = exports::session_markdown(&session);
    let mut after = None;
    loop {
        let page = chat::list_messages(&state.db.pool, session.id, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for m in &page {
            match format {
                ConversationFormat::Md => markdown.push_str(&exports::message_markdown(m)),
                ConversationFormat::Json => json_messages.push(exports::message_json(m)),
            }
        }
    }
    let (content_type, ext, body) = match format {
        ConversationFormat::Md => ("text/markdown; charset=utf-8", "md", markdown),
        ConversationFormat::Json => {
            let mut head = exports::session_json(&session);
            head["messages"] = serde_json::Value::Array(json_messages);
            ("application/json", "json", head.to_string())
        }
    };
    Ok(attachment(content_type, &format!("conversation-{}.{ext}", session.id), None, Body::from(body)))
}
