//! LLM configurations (admin) and the list of models users may pick.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, AuthUser, Json};
use crate::pagination::Page;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use parley_shared::ids::LlmConfigId;
use parley_shared::llm::HostPolicy;
use parley_shared::store::llm_configs::{self, ConfigFields, LlmConfig};
use parley_shared::usecases::llm_config::{self, ConfigChanges, ConfigError, NewConfig};
use serde::Serialize;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/llm/models", get(list_models))
        .route("/api/llm/configs", get(list_configs).post(create_config))
        .route("/api/llm/configs/{id}", get(get_config).patch(update_config).delete(delete_config))
}

/// A config as admins see it: the API key is write-only (`has_api_key` tells if one is set).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    #[schema(value_type = String)]
    pub id: LlmConfigId,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub has_api_key: bool,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub context_window: i64,
    pub system_prompt: String,
    pub is_default: bool,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<LlmConfig> for ConfigView {
    fn from(c: LlmConfig) -> Self {
        Self {
            has_api_key: c.api_key_enc.is_some(),
            id: c.id,
            name: c.name,
            provider: c.provider,
            model: c.model,
            base_url: c.base_url,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            context_window: c.context_window,
            system_prompt: c.system_prompt,
            is_default: c.is_default,
            enabled: c.enabled,
            created_at: c.created_at.0,
            updated_at: c.updated_at.0,
        }
    }
}

/// A model users can chat with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    /// Pass as `config_id` to the chat endpoint.
    #[schema(value_type = String)]
    pub id: LlmConfigId,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub context_window: i64,
    pub is_default: bool,
}

/// The enabled models the caller may use (an admin can limit a user to some of them).
#[utoipa::path(get, path = "/api/llm/models/", tag = "llm", security(("bearer" = [])), responses((status = 200, body = Page<ModelView>)))]
pub async fn list_models(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<Page<ModelView>>> {
    let configs = llm_configs::list(&state.db.pool, true).await?;
    let quota = parley_shared::store::quotas::get(&state.db.pool, auth.user.id).await?;
    Ok(Json(Page::whole(
        configs
            .into_iter()
            .filter(|c| quota.allows(c.id))
            .map(|c| ModelView {
                id: c.id,
                name: c.name,
                provider: c.provider,
                model: c.model,
                context_window: c.context_window,
                is_default: c.is_default,
            })
            .collect(),
    )))
}

/// All configs.
#[utoipa::path(get, path = "/api/llm/configs/", tag = "llm", security(("bearer" = [])), responses(
    (status = 200, body = Page<ConfigView>), (status = 403, body = ErrorEnvelope)))]
pub async fn list_configs(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Page<ConfigView>>> {
    Ok(Json(Page::whole(llm_configs::list(&state.db.pool, false).await?.into_iter().map(ConfigView::from).collect())))
}

#[utoipa::path(get, path = "/api/llm/configs/{id}/", tag = "llm", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = ConfigView), (status = 404, body = ErrorEnvelope)))]
pub async fn get_config(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigView>> {
    Ok(Json(llm_configs::get(&state.db.pool, config_id(&id)?).await?.ok_or(ApiError::NotFound)?.into()))
}

/// A config id from the path; text that is not an id names no config.
fn config_id(id: &str) -> ApiResult<LlmConfigId> {
    id.parse().map_err(|_| ApiError::NotFound)
}

/// Creates a config.
#[utoipa::path(post, path = "/api/llm/configs/", tag = "llm", request_body = NewConfig, security(("bearer" = [])), responses(
    (status = 201, body = ConfigView), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_config(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Json(req): Json<NewConfig>,
) -> ApiResult<(StatusCode, Json<ConfigView>)> {
    let fields = merge(&state, llm_config::defaults(), req.into())?;
    let config = llm_config::save(&state.db, None, &fields).await?;
    let details = serde_json::json!({"config_id": config.id, "name": config.name});
    meta.admin_action(&state, &admin, parley_shared::audit::AuditAction::AdminLlmConfigCreate, None, details).await?;
    Ok((StatusCode::CREATED, Json(config.into())))
}

/// Changes a config.
#[utoipa::path(patch, path = "/api/llm/configs/{id}/", tag = "llm", params(("id" = String, Path)), request_body = ConfigChanges, security(("bearer" = [])), responses(
    (status = 200, body = ConfigView), (status = 404, body = ErrorEnvelope),
    (status = 409, description = "the name is taken", body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn update_config(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
    Json(req): Json<ConfigChanges>,
) -> ApiResult<Json<ConfigView>> {
    let id = config_id(&id)?;
    let current = llm_configs::get(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    let base = ConfigFields {
        name: current.name,
        provider: current.provider,
        model: current.model,
        base_url: current.base_url,
        api_key_enc: current.api_key_enc,
        temperature: current.temperature,
        max_tokens: current.max_tokens,
        context_window: current.context_window,
        system_prompt: current.system_prompt,
        is_default: current.is_default,
        enabled: current.enabled,
    };
    let fields = merge(&state, base, req)?;
    let config = llm_config::save(&state.db, Some(id), &fields).await?;
    let details = serde_json::json!({"config_id": id, "name": config.name});
    meta.admin_action(&state, &admin, parley_shared::audit::AuditAction::AdminLlmConfigUpdate, None, details).await?;
    Ok(Json(config.into()))
}

/// Deletes a config (sessions that used it fall back to the default).
#[utoipa::path(delete, path = "/api/llm/configs/{id}/", tag = "llm", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "deleted"), (status = 404, body = ErrorEnvelope)))]
pub async fn delete_config(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: crate::audit::RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = config_id(&id)?;
    llm_configs::delete(&state.db.writer, id).await?;
    let details = serde_json::json!({"config_id": id});
    meta.admin_action(&state, &admin, parley_shared::audit::AuditAction::AdminLlmConfigDelete, None, details).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Validates `req` over `base` with the library's rules.
fn merge(state: &AppState, base: ConfigFields, req: ConfigChanges) -> ApiResult<ConfigFields> {
    llm_config::merge(&state.keys, HostPolicy { allow_private: state.config.llm_allow_private_hosts }, base, req)
        .map_err(|e| match e {
            ConfigError::Invalid(errors) => errors.into(),
            ConfigError::Other(e) => ApiError::Internal(e),
        })
}
