//! `Idempotency-Key` on job-creating POSTs: a retried request (same key, same user, same
//! endpoint) gets the first answer instead of creating a second job. The answer is stored
//! in the transaction that creates the job, so the two cannot disagree.

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_shared::store::{Exec, idempotency};
use serde::Serialize;

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 200;
/// The key's format in the OpenAPI document: what [`is_valid_key`] accepts.
pub const KEY_PATTERN: &str = "^[!-~]{1,200}$";

/// 1 to [`MAX_KEY_LEN`] visible ASCII characters (no spaces or controls).
fn is_valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// An idempotency key in a scope (the user and the endpoint).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
}

impl IdempotencyKey {
    /// The request's key, if it sent one, scoped to `scope`.
    pub fn from_headers(headers: &HeaderMap, scope: String) -> ApiResult<Option<Self>> {
        let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
        let key = value.to_str().ok().filter(|k| is_valid_key(k));
        let key = key.ok_or_else(|| ApiError::BadRequest {
            code: "invalid_idempotency_key",
            message: format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        })?;
        Ok(Some(Self { scope, key: key.to_owned() }))
    }

    /// The stored first answer, if there is one.
    pub async fn replay<'e>(&self, ex: impl Exec<'e>) -> ApiResult<Option<Response>> {
        let stored = idempotency::get(ex, &self.scope, &self.key).await?;
        Ok(stored.map(|(status, body)| {
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::ACCEPTED);
            let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            (status, Json(body)).into_response()
        }))
    }

    /// The stored first answer's body, if there is one (for an endpoint that answers a
    /// retry with more than the stored JSON, such as a stream of the first request's job).
    pub async fn first_body<'e>(&self, ex: impl Exec<'e>) -> ApiResult<Option<serde_json::Value>> {
        let stored = idempotency::get(ex, &self.scope, &self.key).await?;
        Ok(stored.map(|(_, body)| serde_json::from_str(&body).unwrap_or_default()))
    }

    /// Stores the answer in the request's transaction; false when a concurrent retry with
    /// the same key stored its answer first.
    pub async fn store<'e>(&self, ex: impl Exec<'e>, status: StatusCode, body: &impl Serialize) -> ApiResult<bool> {
        let json = serde_json::to_string(body).map_err(anyhow::Error::from)?;
        Ok(idempotency::put(ex, &self.scope, &self.key, i64::from(status.as_u16()), &json).await?)
    }
}

/// Commits the request's transaction with its answer stored under `key` (if any). When a
/// concurrent retry with the same key stored its answer first, rolls back and returns that
/// answer instead (`Some`): the caller answers it and does nothing else.
pub async fn commit(
    key: Option<&IdempotencyKey>,
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    pool: &sqlx::AnyPool,
    status: StatusCode,
    body: &impl Serialize,
) -> ApiResult<Option<Response>> {
    if let Some(key) = key
        && !key.store(&mut *tx, status, body).await?
    {
        tx.rollback().await?;
        let first = key.replay(pool).await?.ok_or(ApiError::Conflict { field: "idempotency_key" })?;
        return Ok(Some(first));
    }
    tx.commit().await?;
    Ok(None)
}
