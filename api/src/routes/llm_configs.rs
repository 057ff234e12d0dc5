//! LLM configurations (admin) and the list of models users may pick.

use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AdminUser, AuthUser, Json};
use crate::pagination::Page;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use parley_shared::crypto;
use parley_shared::ids::LlmConfigId;
use parley_shared::llm::Provider;
use parley_shared::store::llm_configs::{self, ConfigFields, LlmConfig};
use parley_shared::time::from_ms;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub const DEFAULT_CONTEXT_WINDOW: i64 = 8192;

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
            created_at: from_ms(c.created_at),
            updated_at: from_ms(c.updated_at),
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

/// The enabled models.
#[utoipa::path(get, path = "/api/llm/models/", tag = "llm", security(("bearer" = [])), responses((status = 200, body = Page<ModelView>)))]
pub async fn list_models(State(state): State<AppState>, _auth: AuthUser) -> ApiResult<Json<Page<ModelView>>> {
    let configs = llm_configs::list(&state.db.pool, true).await?;
    Ok(Json(Page::whole(
        configs
            .into_iter()
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

/// A config to create, or the fields to change (PATCH). `api_key: null` removes the key.
/// Its `Debug` output hides the key.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    pub name: Option<String>,
    /// `openai`, `openai_compatible` or `anthropic`.
    pub provider: Option<String>,
    pub model: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, write_only)]
    pub api_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub temperature: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    pub max_tokens: Option<Option<i64>>,
    pub context_window: Option<i64>,
    pub system_prompt: Option<String>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
}

impl std::fmt::Debug for ConfigRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRequest")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|k| k.as_ref().map(|_| "[redacted]")))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("context_window", &self.context_window)
            .field("system_prompt", &self.system_prompt)
            .field("is_default", &self.is_default)
            .field("enabled", &self.enabled)
            .finish()
    }
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Applies `req` over `base` (the current config, or defaults) and validates the result.
fn merge(state: &AppState, base: ConfigFields, req: ConfigRequest) -> ApiResult<ConfigFields> {
    let mut errors = FieldErrors::default();
    let mut f = base;
    // The stored key was given for one endpoint: it is not sent anywhere else unless the
    // admin gives it again.
    let endpoint_changed = req.base_url.as_ref().is_some_and(|u| u.as_deref() != f.base_url.as_deref())
        || req.provider.as_ref().is_some_and(|p| *p != f.provider);
    if endpoint_changed && req.api_key.is_none() {
        f.api_key_enc = None;
    }
    if let Some(name) = req.name {
        f.name = name.trim().to_owned();
    }
    if let Some(p) = req.provider {
        f.provider = p;
    }
    if let Some(m) = req.model {
        f.model = m.trim().to_owned();
    }
    if let Some(url) = req.base_url {
        f.base_url = url.map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty());
    }
    if let Some(key) = req.api_key {
        f.api_key_enc = match key.filter(|k| !k.is_empty()) {
            Some(k) => Some(crypto::encrypt(&state.keys.encryption, &k)?),
            None => None,
        };
    }
    if let Some(t) = req.temperature {
        f.temperature = t;
    }
    if let Some(t) = req.max_tokens {
        f.max_tokens = t;
    }
    if let Some(c) = req.context_window {
        f.context_window = c;
    }
    if let Some(s) = req.system_prompt {
        f.system_prompt = s;
    }
    if let Some(d) = req.is_default {
        f.is_default = d;
    }
    if let Some(e) = req.enabled {
        f.enabled = e;
    }
    if f.name.is_empty() || f.name.chars().count() > 100 {
        errors.add("name", "must be 1 to 100 characters");
    }
    match Provider::parse(&f.provider) {
        None => errors.add("provider", "must be openai, openai_compatible or anthropic"),
        Some(Provider::OpenaiCompatible) if f.base_url.is_none() => {
            errors.add("base_url", "is required for openai_compatible")
        }
        Some(_) => {}
    }
    if let Some(url) = &f.base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.add("base_url", "must be an http:// or https:// URL");
    }
    if f.model.is_empty() {
        errors.add("model", "is required");
    }
    // Anthropic's Messages API takes at most 1; OpenAI-style APIs at most 2.
    let max_temperature = if f.provider == "anthropic" { 1.0 } else { 2.0 };
    if f.temperature.is_some_and(|t| !(0.0..=max_temperature).contains(&t)) {
        errors.add("temperature", format!("must be between 0 and {max_temperature} for this provider"));
    }
    if f.max_tokens.is_some_and(|t| !(1..=1_000_000).contains(&t)) {
        errors.add("max_tokens", "must be between 1 and 1000000");
    }
    if !(256..=10_000_000).contains(&f.context_window) {
        errors.add("context_window", "must be between 256 and 10000000");
    }
    errors.finish()?;
    Ok(f)
}

fn defaults() -> ConfigFields {
    ConfigFields {
        name: String::new(),
        provider: String::new(),
        model: String::new(),
        base_url: None,
        api_key_enc: None,
        temperature: None,
        max_tokens: None,
        context_window: DEFAULT_CONTEXT_WINDOW,
        system_prompt: String::new(),
        is_default: false,
        enabled: true,
    }
}

/// Creates a config.
#[utoipa::path(post, path = "/api/llm/configs/", tag = "llm", request_body = ConfigRequest, security(("bearer" = [])), responses(
    (status = 201, body = ConfigView), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn create_config(
    State(state): State<AppState>,
    _admin: AdminUser,
    Json(req): Json<ConfigRequest>,
) -> ApiResult<(StatusCode, Json<ConfigView>)> {
    let fields = merge(&state, defaults(), req)?;
    let config = save(&state, None, &fields).await?;
    Ok((StatusCode::CREATED, Json(config.into())))
}

/// Changes a config.
#[utoipa::path(patch, path = "/api/llm/configs/{id}/", tag = "llm", params(("id" = String, Path)), request_body = ConfigRequest, security(("bearer" = [])), responses(
    (status = 200, body = ConfigView), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn update_config(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    Json(req): Json<ConfigRequest>,
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
    Ok(Json(save(&state, Some(id), &fields).await?.into()))
}

/// Writes a config; a new default unsets the old one in the same transaction.
pub async fn save(state: &AppState, id: Option<LlmConfigId>, fields: &ConfigFields) -> ApiResult<LlmConfig> {
    let mut tx = state.db.writer.begin().await?;
    let config = match id {
        Some(id) => llm_configs::update(&mut *tx, id, fields).await?,
        None => llm_configs::insert(&mut *tx, fields).await?,
    };
    if config.is_default {
        llm_configs::clear_other_defaults(&mut *tx, config.id).await?;
    }
    tx.commit().await?;
    Ok(config)
}

/// Deletes a config (sessions that used it fall back to the default).
#[utoipa::path(delete, path = "/api/llm/configs/{id}/", tag = "llm", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "deleted"), (status = 404, body = ErrorEnvelope)))]
pub async fn delete_config(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    llm_configs::delete(&state.db.pool, config_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates the `PARLEY_LLM_*` quick-start config (named "default") if it does not exist.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<()> {
    let Some(b) = &state.config.llm_bootstrap else { return Ok(()) };
    if llm_configs::by_name(&state.db.pool, "default").await?.is_some() {
        return Ok(());
    }
    let req = ConfigRequest {
        name: Some("default".into()),
        provider: Some(b.provider.clone()),
        model: Some(b.model.clone()),
        base_url: Some(b.base_url.clone()),
        api_key: Some(b.api_key.as_ref().map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned())),
        is_default: Some(true),
        ..ConfigRequest::default()
    };
    let fields = merge(state, defaults(), req).map_err(|e| anyhow::anyhow!("PARLEY_LLM_* settings: {e}"))?;
    match save(state, None, &fields).await {
        Ok(_) | Err(ApiError::Conflict { .. }) => {}
        Err(e) => anyhow::bail!("creating the default LLM config: {e}"),
    }
    tracing::info!(provider = %b.provider, model = %b.model, "default LLM config created");
    Ok(())
}
