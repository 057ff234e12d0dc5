//! User management for admins: search and filter accounts, deactivate one (which ends its
//! sessions at once), grant or take admin rights, delete an account.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::views::UserProfile;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use parley_shared::ids::{LlmConfigId, UserId};
use parley_shared::store::quotas::{self, Quota};
use parley_shared::store::sessions;
use parley_shared::store::users::{self, User, UserFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/users", get(list_users))
        .route("/api/admin/users/{id}", get(get_user).patch(update_user).delete(delete_user))
}

/// An account as admins see it: the profile and whether it may sign in (and, from one
/// account's routes, its quota).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    #[serde(flatten)]
    pub profile: UserProfile,
    pub is_active: bool,
    /// The account's own budgets and allowed models (on `GET` and `PATCH` of one account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaView>,
}

/// An account's quota as set by admins.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    /// Tokens per UTC day; `null`: the default (`PARLEY_TOKEN_BUDGET_DAILY`, else no limit).
    pub token_budget_daily: Option<i64>,
    /// Tokens per UTC month; `null`: the default (`PARLEY_TOKEN_BUDGET_MONTHLY`, else no limit).
    pub token_budget_monthly: Option<i64>,
    /// The configs the account may chat with; `null`: every enabled one.
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_config_ids: Option<Vec<LlmConfigId>>,
}

impl From<Quota> for QuotaView {
    fn from(q: Quota) -> Self {
        Self {
            token_budget_daily: q.token_budget_daily,
            token_budget_monthly: q.token_budget_monthly,
            allowed_config_ids: q.allowed_config_ids,
        }
    }
}

impl AdminUserView {
    fn new(user: &User, state: &AppState) -> Self {
        Self { profile: UserProfile::new(user, &state.config), is_active: user.is_active, quota: None }
    }

    fn with_quota(user: &User, state: &AppState, quota: Quota) -> Self {
        Self { quota: Some(quota.into()), ..Self::new(user, state) }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct UserListFilter {
    /// Part of the email, username or display name.
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub is_admin: Option<bool>,
}

/// Longest `?search=`.
const MAX_SEARCH_CHARS: usize = 200;

/// Every account, newest first.
#[utoipa::path(get, path = "/api/admin/users/", tag = "admin", params(PageQuery, UserListFilter), security(("bearer" = [])), responses(
    (status = 200, body = Page<AdminUserView>), (status = 403, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(page): Query<PageQuery>,
    Query(filter): Query<UserListFilter>,
) -> ApiResult<Json<Page<AdminUserView>>> {
    let (limit, cursor) = page.parse::<UserId>()?;
    let search = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
        return Err(ApiError::field("search", format!("must be at most {MAX_SEARCH_CHARS} characters")));
    }
    let filter = UserFilter { search, is_active: filter.is_active, is_admin: filter.is_admin };
    let rows = users::list(&state.db.pool, &filter, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |u| u.id.to_string(), |u| AdminUserView::new(&u, &state))))
}

async fn find(state: &AppState, id: &str) -> ApiResult<User> {
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound)?;
    users::by_id(&state.db.pool, id).await?.ok_or(ApiError::NotFound)
}

/// One account.
#[utoipa::path(get, path = "/api/admin/users/{id}/", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = AdminUserView), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminUserView>> {
    let user = find(&state, &id).await?;
    let quota = quotas::get(&state.db.pool, user.id).await?;
    Ok(Json(AdminUserView::with_quota(&user, &state, quota)))
}

/// What an admin may change about an account; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUserUpdate {
    /// `false` deactivates the account: it cannot sign in, and every session ends at once.
    pub is_active: Option<bool>,
    pub is_admin: Option<bool>,
    /// Tokens per UTC day; `null` returns the account to the default.
    #[serde(default, deserialize_with = "parley_shared::domain::numbers::present_integer")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000000_i64)]
    pub token_budget_daily: Option<Option<i64>>,
    /// Tokens per UTC month; `null` returns the account to the default.
    #[serde(default, deserialize_with = "parley_shared::domain::numbers::present_integer")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000000_i64)]
    pub token_budget_monthly: Option<Option<i64>>,
    /// The configs the account may chat with (ids of `GET /api/llm/configs/`); `null`: all.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<uuid::Uuid>>, max_items = 100)]
    pub allowed_config_ids: Option<Option<Vec<LlmConfigId>>>,
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::deserialize(d).map(Some)
}

/// Highest token budget.
const MAX_BUDGET: i64 = 1_000_000_000_000_000;
/// Most configs an account may be limited to.
const MAX_ALLOWED_CONFIGS: usize = 100;

/// Deactivates or reactivates an account, grants or takes admin rights, or sets its token
/// budgets and the models it may use.
#[utoipa::path(patch, path = "/api/admin/users/{id}/", tag = "admin", params(("id" = String, Path)), request_body = AdminUserUpdate, security(("bearer" = [])), responses(
    (status = 200, body = AdminUserView), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    (status = 409, description = "`own_account`: an admin cannot deactivate or demote their own account", body = ErrorEnvelope)))]
pub async fn update_user(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
    Json(req): Json<AdminUserUpdate>,
) -> ApiResult<Json<AdminUserView>> {
    let mut user = find(&state, &id).await?;
    let mut errors = crate::error::FieldErrors::default();
    for (field, value) in
        [("token_budget_daily", req.token_budget_daily), ("token_budget_monthly", req.token_budget_monthly)]
    {
        if value.flatten().is_some_and(|v| !(0..=MAX_BUDGET).contains(&v)) {
            errors.add(field, format!("must be between 0 and {MAX_BUDGET}"));
        }
    }
    if req.allowed_config_ids.as_ref().and_then(Option::as_ref).is_some_and(|ids| ids.len() > MAX_ALLOWED_CONFIGS) {
        errors.add("allowed_config_ids", format!("must hold at most {MAX_ALLOWED_CONFIGS} ids"));
    }
    errors.finish()?;
    if user.id == admin.0.user.id {
        if req.is_active == Some(false) {
            return Err(own_account("you cannot deactivate your own account"));
        }
        if req.is_admin == Some(false) {
            return Err(own_account("you cannot take your own admin rights"));
        }
    }
    let mut tx = state.db.begin_write().await?;
    if let Some(active) = req.is_active {
        users::set_active(&mut *tx, user.id, active).await?;
        if !active {
            let ended = sessions::revoke_all(&mut *tx, user.id, None, "deactivated").await?;
            let keys = parley_shared::store::api_keys::revoke_all(&mut *tx, user.id).await?;
            tracing::info!(user.id = %user.id, sessions = ended, api_keys = keys, "account deactivated");
        }
    }
    if let Some(is_admin) = req.is_admin {
        users::set_admin(&mut *tx, user.id, is_admin).await?;
    }
    let mut quota = quotas::get(&mut *tx, user.id).await?;
    let quota_changes =
        req.token_budget_daily.is_some() || req.token_budget_monthly.is_some() || req.allowed_config_ids.is_some();
    if quota_changes {
        if let Some(daily) = req.token_budget_daily {
            quota.token_budget_daily = daily;
        }
        if let Some(monthly) = req.token_budget_monthly {
            quota.token_budget_monthly = monthly;
        }
        if let Some(allowed) = req.allowed_config_ids.clone() {
            quota.allowed_config_ids = allowed.map(|mut ids| {
                ids.sort();
                ids.dedup();
                ids
            });
        }
        quotas::set(&mut *tx, user.id, &quota).await?;
    }
    meta.event(parley_shared::audit::AuditAction::AdminUserUpdate)
        .actor(admin.0.user.id)
        .target(user.id)
        .details(serde_json::json!({
            "is_active": req.is_active,
            "is_admin": req.is_admin,
            "token_budget_daily": req.token_budget_daily,
            "token_budget_monthly": req.token_budget_monthly,
            "allowed_config_ids": req.allowed_config_ids,
        }))
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    user.is_active = req.is_active.unwrap_or(user.is_active);
    user.is_admin = req.is_admin.unwrap_or(user.is_admin);
    Ok(Json(AdminUserView::with_quota(&user, &state, quota)))
}

/// Deletes an account and everything it owns; every session ends.
#[utoipa::path(delete, path = "/api/admin/users/{id}/", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "deleted"), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    (status = 409, description = "`own_account`: an admin deletes their own account with DELETE /api/users/me/", body = ErrorEnvelope)))]
pub async fn delete_user(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user = find(&state, &id).await?;
    if user.id == admin.0.user.id {
        return Err(own_account("delete your own account with DELETE /api/users/me/"));
    }
    parley_shared::usecases::accounts::delete(
        &state.db,
        state.media.as_ref(),
        parley_shared::exports::store(&state.config).as_ref(),
        &user,
    )
    .await?;
    meta.admin_action(
        &state,
        &admin,
        parley_shared::audit::AuditAction::AdminUserDelete,
        Some(user.id),
        serde_json::json!({}),
    )
    .await?;
    tracing::info!(user.id = %user.id, "account deleted by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// What an admin may not do to their own account through these routes.
fn own_account(message: &str) -> ApiError {
    ApiError::StateConflict { code: "own_account", message: message.to_owned() }
}
