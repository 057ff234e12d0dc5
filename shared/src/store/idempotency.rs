//! Stored first answers of requests sent with an `Idempotency-Key`.

use super::Exec;
use crate::error::StoreError;
use crate::time::now_ms;

/// The stored `(status, body)` for `key` in `scope`, if any.
pub async fn get<'e, E: Exec<'e>>(ex: E, scope: &str, key: &str) -> Result<Option<(i64, String)>, StoreError> {
    Ok(sqlx::query_as("select status, body from idempotency_keys where scope = $1 and key = $2")
        .bind(scope)
        .bind(key)
        .fetch_optional(ex)
        .await?)
}

/// Stores the answer; false if one was stored first (a concurrent retry).
pub async fn put<'e, E: Exec<'e>>(ex: E, scope: &str, key: &str, status: i64, body: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "insert into idempotency_keys (scope, key, status, body, created_at, updated_at) values ($1, $2, $3, $4, $5, $5)
         on conflict (scope, key) do nothing",
    )
    .bind(scope)
    .bind(key)
    .bind(status)
    .bind(body)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}
