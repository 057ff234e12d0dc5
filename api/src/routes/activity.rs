//! The activity log, read-only: one's own events, and every event for admins.

use crate::audit::truncate_ip;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use parley_shared::audit::{AuditAction, AuditResult};
use parley_shared::ids::{AuditEventId, UserId};
use parley_shared::store::audit::{self, AuditEntry, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/users/me/activity", get(my_activity)).route("/api/admin/audit", get(audit_log))
}

/// One entry of the activity log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    #[schema(value_type = String, format = Uuid)]
    pub id: AuditEventId,
    pub occurred_at: DateTime<Utc>,
    /// Who acted (none for an anonymous attempt).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub actor_id: Option<UserId>,
    /// The account acted on.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub target_id: Option<UserId>,
    #[schema(value_type = String, example = "auth.login")]
    pub action: AuditAction,
    pub result: AuditResult,
    /// The client's address (cut to its network in one's own activity).
    pub client_address: String,
    pub user_agent: String,
    /// Ids and reasons, never a secret.
    pub details: Option<serde_json::Value>,
}

impl AuditEntryView {
    fn new(e: AuditEntry, full_address: bool) -> Self {
        Self {
            id: e.id,
            occurred_at: e.created_at.0,
            actor_id: e.actor_id,
            target_id: e.target_id,
            action: e.action,
            result: e.result,
            client_address: if full_address { e.ip } else { truncate_ip(&e.ip) },
            user_agent: e.user_agent,
            details: e.details.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        }
    }
}

/// Filters shared by both lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ActivityFilter {
    /// An action name, e.g. `auth.login`.
    #[param(value_type = Option<AuditAction>)]
    pub action: Option<String>,
    /// `success` or `failure`.
    #[param(value_type = Option<AuditResult>)]
    pub result: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
}

impl ActivityFilter {
    fn parse(&self) -> ApiResult<AuditFilter> {
        let time = |field: &str, value: &Option<String>| -> ApiResult<Option<i64>> {
            match value.as_deref() {
                None => Ok(None),
                Some(s) => DateTime::parse_from_rfc3339(s)
                    .map(|t| Some(t.timestamp_millis()))
                    .map_err(|_| ApiError::field(field, "must be an RFC 3339 date-time")),
            }
        };
        let action = match self.action.as_deref() {
            None => None,
            Some(a) => Some(AuditAction::parse(a).ok_or_else(|| ApiError::field("action", "is not a known action"))?),
        };
        let result = match self.result.as_deref() {
            None => None,
            Some(r) => Some(
                AuditResult::try_from(r.to_owned())
                    .map_err(|_| ApiError::field("result", "must be success or failure"))?,
            ),
        };
        Ok(AuditFilter {
            action,
            result,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            ..AuditFilter::default()
        })
    }
}

/// The caller's own activity: events they did and events done to their account, newest first.
#[utoipa::path(get, path = "/api/users/me/activity/", tag = "accounts", params(PageQuery, ActivityFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<AuditEntryView>),
    (status = 400, description = "a query that does not parse", body = ErrorEnvelope),
    (status = 401, body = ErrorEnvelope),
    (status = 422, description = "a bad filter, limit or cursor", body = ErrorEnvelope)))]
pub async fn my_activity(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(page): Query<PageQuery>,
    Query(filter): Query<ActivityFilter>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let (limit, cursor) = page.parse::<AuditEventId>()?;
    let filter = AuditFilter { involving: Some(auth.user.id), ..filter.parse()? };
    let rows = audit::list(&state.db.pool, &filter, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |e| e.id.to_string(), |e| AuditEntryView::new(e, false))))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct AdminAuditFilter {
    /// Only events done by this user.
    pub actor: Option<String>,
    /// Only events done to this user.
    pub target: Option<String>,
}

/// Every event, newest first, for admins. Entries cannot be changed.
#[utoipa::path(get, path = "/api/admin/audit/", tag = "admin", params(PageQuery, ActivityFilter, AdminAuditFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<AuditEntryView>),
    (status = 400, description = "a query that does not parse", body = ErrorEnvelope),
    (status = 401, body = ErrorEnvelope),
    (status = 403, body = ErrorEnvelope),
    (status = 422, description = "a bad filter, limit or cursor", body = ErrorEnvelope)))]
pub async fn audit_log(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<PageQuery>,
    Query(filter): Query<ActivityFilter>,
    Query(who): Query<AdminAuditFilter>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let (limit, cursor) = page.parse::<AuditEventId>()?;
    let user = |field: &str, value: &Option<String>| -> ApiResult<Option<UserId>> {
        match value.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| ApiError::field(field, "is not a user id")),
        }
    };
    let filter =
        AuditFilter { actor: user("actor", &who.actor)?, target: user("target", &who.target)?, ..filter.parse()? };
    let rows = audit::list(&state.db.pool, &filter, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |e| e.id.to_string(), |e| AuditEntryView::new(e, true))))
}
