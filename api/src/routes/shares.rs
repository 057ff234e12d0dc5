//! Shared conversations: a read-only public link to a snapshot of one's session up to its
//! latest complete message, listed and revoked by its owner, read by anyone with the link.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use parley_shared::ids::{ChatSessionId, MessageId, ShareId};
use parley_shared::store::chat::{self, MessageRole};
use parley_shared::store::shares::{self, NewShare, Share};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/llm/sessions/{id}/share", post(create_share))
        .route("/api/llm/shares", get(list_shares))
        .route("/api/llm/shares/{id}", delete(revoke_share))
        .route("/api/shared/{share_id}", get(shared_snapshot))
}

/// Longest life of a link, in days.
const MAX_DAYS: i64 = 365;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The link stops working after this many days (1 to 365); without it, until revoked.
    #[serde(default, deserialize_with = "parley_shared::domain::numbers::optional_integer")]
    #[schema(minimum = 1, maximum = 365)]
    pub expires_in_days: Option<i64>,
}

/// A share link, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareView {
    /// The link's id in the owner's list (for `DELETE /api/llm/shares/{id}/`).
    #[schema(value_type = String)]
    pub id: ShareId,
    /// The public id (256 random bits).
    pub share_id: String,
    /// The public snapshot's address (JSON).
    pub url: String,
    /// The web page that shows the snapshot to anyone with the link.
    pub page_url: String,
    #[schema(value_type = String)]
    pub session_id: ChatSessionId,
    pub title: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ShareView {
    fn new(share: Share, state: &AppState) -> Self {
        Self {
            url: format!("{}/api/shared/{}/", state.config.public_url.trim_end_matches('/'), share.token),
            page_url: format!("{}/shared/{}", state.config.public_url.trim_end_matches('/'), share.token),
            id: share.id,
            share_id: share.token,
            session_id: share.session_id,
            title: share.title,
            expires_at: share.expires_at.map(|t| t.0),
            created_at: share.created_at.0,
        }
    }
}

/// Shares one's session: a read-only public link to its messages up to the latest complete
/// one (later messages are not shown).
#[utoipa::path(post, path = "/api/llm/sessions/{id}/share/", tag = "llm", params(("id" = String, Path)), request_body = ShareRequest,
    security(("bearer" = [])), responses(
    (status = 201, body = ShareView),
    (status = 404, description = "no such session of the caller's", body = ErrorEnvelope)))]
pub async fn create_share(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
    Json(req): Json<ShareRequest>,
) -> ApiResult<(StatusCode, Json<ShareView>)> {
    if req.expires_in_days.is_some_and(|d| !(1..=MAX_DAYS).contains(&d)) {
        return Err(ApiError::field("expires_in_days", format!("must be between 1 and {MAX_DAYS}")));
    }
    let id: ChatSessionId = id.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin_write().await?;
    let session = chat::get_session(&mut *tx, id, auth.user.id).await?.ok_or(ApiError::NotFound)?;
    // Every session holds its first message, which is complete.
    let last = shares::latest_complete(&mut *tx, session.id).await?.ok_or(ApiError::NotFound)?;
    let expires_at_ms = req.expires_in_days.map(|d| parley_shared::time::now_ms() + d * 86_400_000);
    let new =
        NewShare { user: auth.user.id, session: session.id, title: &session.title, last_message: last, expires_at_ms };
    let share = shares::create(&mut *tx, new).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(ShareView::new(share, &state))))
}

/// One's share links, newest first (expired ones too, until revoked).
#[utoipa::path(get, path = "/api/llm/shares/", tag = "llm", params(PageQuery), security(("bearer" = [])), responses(
    (status = 200, body = Page<ShareView>)))]
pub async fn list_shares(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<ShareView>>> {
    let (limit, cursor) = page.parse::<ShareId>()?;
    let rows = shares::list(&state.db.pool, auth.user.id, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |s| s.id.to_string(), |s| ShareView::new(s, &state))))
}

/// Revokes a link at once: its snapshot answers 404 from now on.
#[utoipa::path(delete, path = "/api/llm/shares/{id}/", tag = "llm", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "revoked")))]
pub async fn revoke_share(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: ShareId = id.parse().map_err(|_| ApiError::NotFound)?;
    shares::delete(&state.db.writer, id, auth.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A shared message: who wrote it, the text and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedMessage {
    /// `user` or `assistant`.
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// A shared conversation: its title and a page of its messages, oldest first. No owner,
/// model or token figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct SharedSnapshot {
    pub title: String,
    pub shared_at: DateTime<Utc>,
    pub items: Vec<SharedMessage>,
    /// The `cursor` of the next page of messages.
    pub next_cursor: Option<String>,
}

/// The public snapshot of a shared conversation; no authentication. A revoked or expired
/// link, or one of a deleted session, answers 404.
#[utoipa::path(get, path = "/api/shared/{share_id}/", tag = "llm", params(("share_id" = String, Path), PageQuery), responses(
    (status = 200, body = SharedSnapshot)))]
pub async fn shared_snapshot(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<SharedSnapshot>> {
    let (limit, cursor) = page.parse::<MessageId>()?;
    let share = shares::by_token(&state.db.pool, &token).await?.filter(Share::is_live).ok_or(ApiError::NotFound)?;
    let rows = shares::snapshot(&state.db.pool, &share, cursor, limit + 1).await?;
    let page = Page::from_rows(
        rows,
        limit,
        |m| m.id.to_string(),
        |m| SharedMessage { role: m.role, content: m.content, created_at: m.created_at.0 },
    );
    Ok(Json(SharedSnapshot {
        title: share.title,
        shared_at: share.created_at.0,
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}
