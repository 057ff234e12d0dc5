//! Personal API keys (see [`crate::auth::api_keys`]): only each key's hash is stored.

use super::Exec;
use crate::auth::api_keys::{Scope, Scopes, scopes_to_text};
use crate::error::StoreError;
use crate::ids::{ApiKeyId, UserId};
use crate::time::{Timestamp, now_ms};

const COLUMNS: &str = "id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at, updated_at";

/// Marking a key used is skipped when its last use is more recent than this (ms): one write
/// a minute at most, not one per request.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A key as stored (without its hash). A stored scope the code does not know fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    #[sqlx(try_from = "String")]
    pub id: ApiKeyId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    #[sqlx(try_from = "String")]
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.0.contains(&scope) || (scope == Scope::Read && self.scopes.0.contains(&Scope::Chat))
    }
}

/// What creating a key writes.
#[derive(Debug)]
pub struct NewApiKey<'a> {
    pub user: UserId,
    pub name: &'a str,
    pub prefix: &'a str,
    pub hash: &'a str,
    pub scopes: &'a [Scope],
    pub expires_at: Option<i64>,
}

pub async fn insert<'e, E: Exec<'e>>(ex: E, new: NewApiKey<'_>) -> Result<ApiKey, StoreError> {
    let sql = format!(
        "insert into api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $8) returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ApiKeyId::new().to_string())
        .bind(new.user.to_string())
        .bind(new.name)
        .bind(new.prefix)
        .bind(new.hash)
        .bind(scopes_to_text(new.scopes))
        .bind(new.expires_at)
        .bind(now_ms())
        .fetch_one(ex)
        .await?)
}

/// The live key with this hash: not revoked, not expired, and its owner's account active.
pub async fn find_live<'e, E: Exec<'e>>(ex: E, hash: &str) -> Result<Option<ApiKey>, StoreError> {
    let sql = format!(
        "select {cols} from api_keys k join users u on u.id = k.user_id
         where k.key_hash = $1 and k.revoked_at is null and (k.expires_at is null or k.expires_at > $2)
           and u.is_active = true",
        cols = prefixed("k")
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(hash).bind(now_ms()).fetch_optional(ex).await?)
}

fn prefixed(alias: &str) -> String {
    COLUMNS.split(", ").map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
}

/// Records a use of the key (at most once a minute).
pub async fn mark_used<'e, E: Exec<'e>>(ex: E, id: ApiKeyId) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query("update api_keys set last_used_at = $2 where id = $1 and (last_used_at is null or last_used_at < $3)")
        .bind(id.to_string())
        .bind(now)
        .bind(now - LAST_USED_RESOLUTION_MS)
        .execute(ex)
        .await?;
    Ok(())
}

/// Whether a key's last use is recent enough that [`mark_used`] would write nothing.
pub fn used_recently(key: &ApiKey) -> bool {
    key.last_used_at.is_some_and(|t| now_ms() - t.millis() < LAST_USED_RESOLUTION_MS)
}

/// A page of `user`'s keys that are not revoked, newest first.
pub async fn list<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    before: Option<ApiKeyId>,
    limit: i64,
) -> Result<Vec<ApiKey>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from api_keys where user_id = $1 and revoked_at is null and ($2 is null or id < $2)
         order by id desc limit $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Revokes a key; `user` restricts it to that user's keys (another's is not found). Taking
/// effect at once: the next request with it is refused.
pub async fn revoke<'e, E: Exec<'e>>(ex: E, id: ApiKeyId, user: Option<UserId>) -> Result<(), StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update api_keys set revoked_at = $3, updated_at = $3
         where id = $1 and ($2 is null or user_id = $2) and revoked_at is null",
    )
    .bind(id.to_string())
    .bind(user.map(|u| u.to_string()))
    .bind(now)
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Revokes every key of `user` (a deactivated account); how many.
pub async fn revoke_all<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<u64, StoreError> {
    let now = now_ms();
    let done =
        sqlx::query("update api_keys set revoked_at = $2, updated_at = $2 where user_id = $1 and revoked_at is null")
            .bind(user.to_string())
            .bind(now)
            .execute(ex)
            .await?;
    Ok(done.rows_affected())
}
