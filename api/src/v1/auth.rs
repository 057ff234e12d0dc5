//! Authentication by personal API key, accepted on the `/v1` endpoints only (the account,
//! admin and key-management routes take access tokens alone).

use super::OpenAiError;
use crate::state::AppState;
use axum::http::header;
use axum::http::request::Parts;
use parley_shared::auth::api_keys::{self, Scope};
use parley_shared::store::api_keys::{self as key_store, ApiKey};

/// A request authenticated by a live personal API key (not revoked, not expired, its
/// account active), within the key's rate limit.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub key: ApiKey,
}

impl ApiKeyAuth {
    /// `Err` (403) unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), OpenAiError> {
        if self.key.allows(scope) {
            return Ok(());
        }
        Err(OpenAiError::forbidden(
            "insufficient_scope",
            format!("This API key lacks the `{}` scope this endpoint needs.", scope.as_str()),
        ))
    }
}

impl axum::extract::FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| api_keys::is_api_key(t))
            .ok_or_else(|| {
                tracing::debug!("no personal API key in the request");
                OpenAiError::unauthorized()
            })?;
        let key = key_store::find_live(&state.db.pool, &api_keys::hash_key(token)).await?.ok_or_else(|| {
            tracing::debug!("unknown, revoked or expired API key, or inactive account");
            OpenAiError::unauthorized()
        })?;
        tracing::Span::current().record("user.id", tracing::field::display(key.user_id));
        state.api_key_limiter.check(key.id).map_err(|wait| {
            tracing::info!(api_key.id = %key.id, "API key rate limited");
            OpenAiError::rate_limited(wait)
        })?;
        if !key_store::used_recently(&key) {
            key_store::mark_used(&state.db.writer, key.id).await?;
        }
        Ok(ApiKeyAuth { key })
    }
}
