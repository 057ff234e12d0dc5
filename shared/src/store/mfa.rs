//! Second factors: a user's TOTP factor, their recovery codes, and sign-ins waiting for a
//! second factor (challenges).

use super::Exec;
use crate::error::StoreError;
use crate::ids::UserId;
use crate::time::{Timestamp, now_ms};

/// A TOTP factor; unconfirmed until a first code is accepted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpFactor {
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    /// The base32 secret, sealed with the server's encryption key.
    pub secret: String,
    pub confirmed_at: Option<Timestamp>,
    /// The last time step a code was accepted for: a code of that step or earlier is a replay.
    pub last_used_step: Option<i64>,
}

pub async fn get_totp<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<Option<TotpFactor>, StoreError> {
    Ok(sqlx::query_as("select user_id, secret, confirmed_at, last_used_step from mfa_totp where user_id = $1")
        .bind(user.to_string())
        .fetch_optional(ex)
        .await?)
}

/// Sets a new unconfirmed factor, replacing an unconfirmed one; false when a confirmed factor
/// is in place.
pub async fn put_pending_totp<'e, E: Exec<'e>>(ex: E, user: UserId, sealed_secret: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "insert into mfa_totp (user_id, secret, confirmed_at, last_used_step, created_at, updated_at)
         values ($1, $2, null, null, $3, $3)
         on conflict (user_id) do update set secret = excluded.secret, last_used_step = null,
             created_at = excluded.created_at, updated_at = excluded.updated_at
         where mfa_totp.confirmed_at is null",
    )
    .bind(user.to_string())
    .bind(sealed_secret)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Confirms the pending factor with the step of the code that was accepted; false when there
/// is no pending factor.
pub async fn confirm_totp<'e, E: Exec<'e>>(ex: E, user: UserId, step: i64) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update mfa_totp set confirmed_at = $2, last_used_step = $3, updated_at = $2
         where user_id = $1 and confirmed_at is null",
    )
    .bind(user.to_string())
    .bind(now)
    .bind(step)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes `step` as used; false when a code of this step or a later one was accepted already
/// (a replay), or the factor is not confirmed.
pub async fn use_step<'e, E: Exec<'e>>(ex: E, user: UserId, step: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "update mfa_totp set last_used_step = $2, updated_at = $3
         where user_id = $1 and confirmed_at is not null and (last_used_step is null or last_used_step < $2)",
    )
    .bind(user.to_string())
    .bind(step)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the factor and the recovery codes; false when there was no factor.
pub async fn delete_totp(conn: &mut sqlx::AnyConnection, user: UserId) -> Result<bool, StoreError> {
    sqlx::query("delete from mfa_recovery_codes where user_id = $1").bind(user.to_string()).execute(&mut *conn).await?;
    let done =
        sqlx::query("delete from mfa_totp where user_id = $1").bind(user.to_string()).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces every recovery code of `user` with `hashes`.
pub async fn replace_recovery_codes(
    conn: &mut sqlx::AnyConnection,
    user: UserId,
    hashes: &[String],
) -> Result<(), StoreError> {
    sqlx::query("delete from mfa_recovery_codes where user_id = $1").bind(user.to_string()).execute(&mut *conn).await?;
    let now = now_ms();
    for hash in hashes {
        sqlx::query(
            "insert into mfa_recovery_codes (id, user_id, code_hash, used_at, created_at, updated_at)
             values ($1, $2, $3, null, $4, $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(user.to_string())
        .bind(hash)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Spends a recovery code; false when `user` has no unused code with this hash.
pub async fn use_recovery_code<'e, E: Exec<'e>>(ex: E, user: UserId, hash: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update mfa_recovery_codes set used_at = $3, updated_at = $3
         where user_id = $1 and code_hash = $2 and used_at is null",
    )
    .bind(user.to_string())
    .bind(hash)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() >= 1)
}

pub async fn recovery_codes_left<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<i64, StoreError> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from mfa_recovery_codes where user_id = $1 and used_at is null")
        .bind(user.to_string())
        .fetch_one(ex)
        .await?;
    Ok(n)
}

/// Records a first sign-in step (`amr`: `pwd` or `oauth`) waiting for its second factor.
pub async fn create_challenge<'e, E: Exec<'e>>(
    ex: E,
    token_hash: &str,
    user: UserId,
    amr: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into mfa_challenges (token_hash, user_id, amr, expires_at, used_at, created_at, updated_at)
         values ($1, $2, $3, $4, null, $5, $5)",
    )
    .bind(token_hash)
    .bind(user.to_string())
    .bind(amr)
    .bind(expires_at)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// The user of a challenge that is unused and unexpired, and how its first step signed in.
pub async fn live_challenge<'e, E: Exec<'e>>(ex: E, token_hash: &str) -> Result<Option<(UserId, String)>, StoreError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "select user_id, amr from mfa_challenges where token_hash = $1 and used_at is null and expires_at > $2",
    )
    .bind(token_hash)
    .bind(now_ms())
    .fetch_optional(ex)
    .await?;
    row.map(|(id, amr)| id.parse().map(|id| (id, amr)).map_err(|e: uuid::Error| StoreError::Other(e.into())))
        .transpose()
}

/// Uses a challenge up; false when it was used (or expired) meanwhile.
pub async fn consume_challenge<'e, E: Exec<'e>>(ex: E, token_hash: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update mfa_challenges set used_at = $2, updated_at = $2
         where token_hash = $1 and used_at is null and expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes challenges that ended before `before` (ms).
pub async fn delete_challenges_before<'e, E: Exec<'e>>(ex: E, before: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("delete from mfa_challenges where expires_at < $1").bind(before).execute(ex).await?.rows_affected())
}
