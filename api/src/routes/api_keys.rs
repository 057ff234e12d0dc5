//! Personal API keys for the OpenAI-compatible `/v1` endpoints: users create, list and revoke
//! their own; admins list and revoke anyone's. These routes take a signed-in user's access
//! token, never an API key.

use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AdminUser, AuthUser, Json, Query};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use parley_shared::audit::AuditAction;
use parley_shared::auth::api_keys::{self, Scope};
use parley_shared::ids::{ApiKeyId, UserId};
use parley_shared::store::api_keys::{self as store, ApiKey, NewApiKey};
use parley_shared::store::users;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const MAX_NAME_CHARS: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users/me/api-keys", get(list_keys).post(create_key))
        .route("/api/users/me/api-keys/{id}", delete(revoke_key))
        .route("/api/admin/users/{id}/api-keys", get(admin_list_keys))
        .route("/api/admin/api-keys/{id}", delete(admin_revoke_key))
}

/// A key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    #[schema(value_type = String)]
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters (`sk-parley-` and four more), to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.0,
            created_at: k.created_at.0,
            last_used_at: k.last_used_at.map(|t| t.0),
            expires_at: k.expires_at.map(|t| t.0),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// 1 to 100 characters, not blank, one line.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// When the key stops working; never when absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// `chat` (every `/v1` endpoint) and/or `read` (the read-only ones); both when absent.
    #[schema(value_type = Option<Vec<parley_shared::auth::api_keys::Scope>>)]
    pub scopes: Option<Vec<String>>,
}

/// A new key: the only time `key` is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// `sk-parley-...`: keep it now, it cannot be shown again.
    pub key: String,
}

/// Creates a key; the answer holds the key, once.
#[utoipa::path(post, path = "/api/users/me/api-keys/", tag = "api-keys", request_body = CreateApiKeyRequest, security(("bearer" = [])), responses(
    (status = 201, body = CreatedApiKey), (status = 401, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: crate::audit::RequestMeta,
    Json(req): Json<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let mut errors = FieldErrors::default();
    let name = req.name.trim();
    if name.is_empty() || req.name.chars().count() > MAX_NAME_CHARS {
        errors.add("name", format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if let Err(e) = parley_shared::domain::check_line(&req.name) {
        errors.add("name", e.0);
    }
    if req.expires_at.is_some_and(|t| t <= Utc::now()) {
        errors.add("expires_at", "must be in the future");
    }
    let mut scopes = Vec::new();
    for name in req.scopes.unwrap_or_else(|| vec!["chat".into(), "read".into()]) {
        match Scope::parse(&name) {
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => {}
            None => errors.add("scopes", format!("unknown scope {name:?}: expected chat or read")),
        }
    }
    if scopes.is_empty() {
        errors.add("scopes", "must hold at least one scope");
    }
    errors.finish()?;
    let generated = api_keys::generate();
    let new = NewApiKey {
        user: auth.user.id,
        name,
        prefix: &generated.prefix,
        hash: &generated.hash,
        scopes: &scopes,
        expires_at: req.expires_at.map(|t| t.timestamp_millis()),
    };
    let key = store::insert(&state.db.writer, new).await?;
    tracing::info!(user.id = %auth.user.id, api_key.id = %key.id, "API key created");
    let details = serde_json::json!({"api_key_id": key.id.to_string(), "prefix": key.prefix, "name": key.name});
    meta.event(AuditAction::ApiKeyCreate)
        .actor(auth.user.id)
        .target(auth.user.id)
        .details(details)
        .record(&state.db.writer)
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { view: key.into(), key: generated.secret })))
}

/// The caller's keys that are not revoked, newest first.
#[utoipa::path(get, path = "/api/users/me/api-keys/", tag = "api-keys", params(PageQuery), security(("bearer" = [])), responses(
    (status = 200, body = Page<ApiKeyView>), (status = 401, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    page_of_keys(&state, auth.user.id, &page).await
}

async fn page_of_keys(state: &AppState, user: UserId, page: &PageQuery) -> ApiResult<Json<Page<ApiKeyView>>> {
    let (limit, cursor) = page.parse::<ApiKeyId>()?;
    let rows = store::list(&state.db.pool, user, cursor, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |k| k.id.to_string(), ApiKeyView::from)))
}

fn key_id(id: &str) -> ApiResult<ApiKeyId> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// Revokes one of the caller's keys; the next request with it is refused.
#[utoipa::path(delete, path = "/api/users/me/api-keys/{id}/", tag = "api-keys", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "revoked"), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = key_id(&id)?;
    store::revoke(&state.db.writer, id, Some(auth.user.id)).await?;
    tracing::info!(user.id = %auth.user.id, api_key.id = %id, "API key revoked");
    let details = serde_json::json!({"api_key_id": id.to_string()});
    meta.event(AuditAction::ApiKeyRevoke)
        .actor(auth.user.id)
        .target(auth.user.id)
        .details(details)
        .record(&state.db.writer)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's keys that are not revoked (admin).
#[utoipa::path(get, path = "/api/admin/users/{id}/api-keys/", tag = "admin", params(("id" = String, Path), PageQuery), security(("bearer" = [])), responses(
    (status = 200, body = Page<ApiKeyView>), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    (status = 422, body = ErrorEnvelope)))]
pub async fn admin_list_keys(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    let user: UserId = id.parse().map_err(|_| ApiError::NotFound)?;
    users::by_id(&state.db.pool, user).await?.ok_or(ApiError::NotFound)?;
    page_of_keys(&state, user, &page).await
}

/// Revokes anyone's key (admin).
#[utoipa::path(delete, path = "/api/admin/api-keys/{id}/", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "revoked"), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn admin_revoke_key(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = key_id(&id)?;
    store::revoke(&state.db.writer, id, None).await?;
    tracing::info!(user.id = %admin.0.user.id, api_key.id = %id, "API key revoked by an admin");
    let details = serde_json::json!({"api_key_id": id.to_string()});
    meta.admin_action(&state, &admin, AuditAction::AdminApiKeyRevoke, None, details).await?;
    Ok(StatusCode::NO_CONTENT)
}
