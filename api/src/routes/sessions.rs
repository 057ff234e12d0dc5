//! The signed-in user's own sessions: list them, end one.

use crate::audit::{RequestMeta, truncate_ip};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use parley_shared::audit::AuditAction;
use parley_shared::ids::SessionId;
use parley_shared::store::sessions::{self, SessionInfo};
use serde::Serialize;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/auth/sessions", get(list_sessions)).route("/api/auth/sessions/{id}", delete(end_session))
}

/// A live session of the caller.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuthSessionView)]
pub struct SessionView {
    #[schema(value_type = String, format = Uuid)]
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    /// When its tokens were last refreshed (or when it began).
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: String,
    /// The client's network: IPv4 to its /24, IPv6 to its /48.
    #[schema(example = "203.0.113.0/24")]
    pub client_address: String,
    /// How it signed in (RFC 8176 names): `pwd`, `otp`.
    #[schema(example = json!(["pwd", "otp"]))]
    pub amr: Vec<String>,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

impl SessionView {
    fn new(s: SessionInfo, current: SessionId) -> Self {
        Self {
            current: s.id == current,
            id: s.id,
            created_at: s.created_at.0,
            last_used_at: s.last_used_at.0,
            expires_at: s.expires_at.0,
            client_address: truncate_ip(&s.ip),
            amr: s.amr.split_whitespace().map(str::to_owned).collect(),
            user_agent: s.user_agent,
        }
    }
}

/// The caller's live sessions, newest first.
#[utoipa::path(get, path = "/api/auth/sessions/", tag = "accounts", params(PageQuery), security(("bearer" = [])), responses(
    (status = 200, body = Page<SessionView>),
    (status = 400, description = "a query that does not parse", body = ErrorEnvelope),
    (status = 401, body = ErrorEnvelope),
    (status = 422, description = "a bad limit or cursor", body = ErrorEnvelope)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<SessionView>>> {
    let (limit, cursor) = page.parse::<SessionId>()?;
    let rows = sessions::list_live(&state.db.pool, auth.user.id, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |s| s.id.to_string(), |s| SessionView::new(s, auth.session))))
}

/// Ends one of the caller's sessions at once: its access and refresh tokens stop working.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}/", tag = "accounts", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "ended"),
    (status = 401, body = ErrorEnvelope),
    (status = 404, description = "no live session of the caller has this id", body = ErrorEnvelope)))]
pub async fn end_session(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: SessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin_write().await?;
    if !sessions::revoke_owned(&mut *tx, auth.user.id, id, "ended_by_user").await? {
        return Err(ApiError::NotFound);
    }
    meta.event(AuditAction::SessionEnd)
        .by(auth.user.id)
        .details(serde_json::json!({"session_id": id, "current": id == auth.session}))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user.id = %auth.user.id, session.id = %id, "session ended by its owner");
    Ok(StatusCode::NO_CONTENT)
}
