//! Accounts at identity providers linked to users, and the one-time codes a provider sign-in
//! hands the client.

use super::Exec;
use crate::error::StoreError;
use crate::ids::{IdentityId, UserId};
use crate::time::{Timestamp, now_ms};

/// A linked provider account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Identity {
    #[sqlx(try_from = "String")]
    pub id: IdentityId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub created_at: Timestamp,
}

const COLUMNS: &str = "id, user_id, provider, subject, email, created_at";

pub async fn find<'e, E: Exec<'e>>(ex: E, provider: &str, subject: &str) -> Result<Option<Identity>, StoreError> {
    let sql = format!("select {COLUMNS} from user_identities where provider = $1 and subject = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(provider).bind(subject).fetch_optional(ex).await?)
}

pub async fn insert<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    provider: &str,
    subject: &str,
    email: &str,
) -> Result<IdentityId, StoreError> {
    let id = IdentityId::new();
    sqlx::query(
        "insert into user_identities (id, user_id, provider, subject, email, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(provider)
    .bind(subject)
    .bind(email)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(id)
}

/// A user's identities, oldest first (a user has a handful at most).
pub async fn list<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<Vec<Identity>, StoreError> {
    let sql = format!("select {COLUMNS} from user_identities where user_id = $1 order by id limit 100");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user.to_string()).fetch_all(ex).await?)
}

/// Unlinks one of `user`'s identities; false when it is not theirs.
pub async fn delete<'e, E: Exec<'e>>(ex: E, user: UserId, id: IdentityId) -> Result<bool, StoreError> {
    let done = sqlx::query("delete from user_identities where id = $1 and user_id = $2")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from user_identities where user_id = $1")
        .bind(user.to_string())
        .fetch_one(ex)
        .await?;
    Ok(n)
}

pub async fn create_exchange_code<'e, E: Exec<'e>>(
    ex: E,
    code_hash: &str,
    user: UserId,
    provider: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into oauth_exchange_codes (code_hash, user_id, provider, expires_at, used_at, created_at, updated_at)
         values ($1, $2, $3, $4, null, $5, $5)",
    )
    .bind(code_hash)
    .bind(user.to_string())
    .bind(provider)
    .bind(expires_at)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Spends a one-time code: its user and provider, or `None` when it is unknown, used or
/// expired.
pub async fn consume_exchange_code<'e, E: Exec<'e>>(
    ex: E,
    code_hash: &str,
) -> Result<Option<(UserId, String)>, StoreError> {
    let now = now_ms();
    let row: Option<(String, String)> = sqlx::query_as(
        "update oauth_exchange_codes set used_at = $2, updated_at = $2
         where code_hash = $1 and used_at is null and expires_at > $2 returning user_id, provider",
    )
    .bind(code_hash)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    row.map(|(id, provider)| id.parse().map(|id| (id, provider)).map_err(|e: uuid::Error| StoreError::Other(e.into())))
        .transpose()
}
