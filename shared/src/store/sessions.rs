//! Sessions and their rotating refresh tokens.

use super::Exec;
use super::users::User;
use crate::error::StoreError;
use crate::ids::{SessionId, UserId};
use crate::time::{Timestamp, now_ms};

/// How a session signed in: RFC 8176 method names, stored space-separated (`pwd otp`).
pub const AMR_PASSWORD: &str = "pwd";
pub const AMR_OTP: &str = "otp";
pub const AMR_OAUTH: &str = "oauth";

pub async fn create<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    expires_at: i64,
    user_agent: &str,
    ip: &str,
    amr: &[&str],
) -> Result<SessionId, StoreError> {
    let id = SessionId::new();
    let now = now_ms();
    sqlx::query(
        "insert into sessions (id, user_id, user_agent, ip, expires_at, last_used_at, created_at, updated_at, amr)
         values ($1, $2, $3, $4, $5, $6, $6, $6, $7)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(user_agent.chars().take(255).collect::<String>())
    .bind(ip)
    .bind(expires_at)
    .bind(now)
    .bind(amr.join(" "))
    .execute(ex)
    .await?;
    Ok(id)
}

/// The user behind a live session: not revoked, not expired, and the account active.
pub async fn active_user<'e, E: Exec<'e>>(
    ex: E,
    session: SessionId,
    user: UserId,
) -> Result<Option<ActiveUser>, StoreError> {
    Ok(sqlx::query_as(
        "select u.id, u.email, u.username, u.display_name, u.bio, u.avatar_key, u.password_hash,
                u.email_verified, u.is_admin, u.is_active, u.date_joined, u.last_login, u.created_at, u.updated_at,
                s.last_used_at as session_last_used_at
         from sessions s join users u on u.id = s.user_id
         where s.id = $1 and s.user_id = $2 and s.revoked_at is null and s.expires_at > $3 and u.is_active = true",
    )
    .bind(session.to_string())
    .bind(user.to_string())
    .bind(now_ms())
    .fetch_optional(ex)
    .await?)
}

/// A signed-in user, with when their session was last used.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveUser {
    #[sqlx(flatten)]
    pub user: User,
    pub session_last_used_at: i64,
}

/// Ends one session.
pub async fn revoke<'e, E: Exec<'e>>(ex: E, session: SessionId, reason: &str) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "update sessions set revoked_at = $2, revoke_reason = $3, updated_at = $2 where id = $1 and revoked_at is null",
    )
    .bind(session.to_string())
    .bind(now)
    .bind(reason)
    .execute(ex)
    .await?;
    Ok(())
}

/// Ends every session of a user, but `keep` if given. Returns how many ended.
pub async fn revoke_all<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    keep: Option<SessionId>,
    reason: &str,
) -> Result<u64, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update sessions set revoked_at = $2, revoke_reason = $3, updated_at = $2
         where user_id = $1 and revoked_at is null and ($4 is null or id <> $4)",
    )
    .bind(user.to_string())
    .bind(now)
    .bind(reason)
    .bind(keep.map(|s| s.to_string()))
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// A refresh token with what is needed to judge it.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshRecord {
    #[sqlx(try_from = "String")]
    pub session_id: SessionId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub rotated_at: Option<i64>,
    pub session_revoked_at: Option<i64>,
    pub session_expires_at: i64,
    pub session_last_used_at: i64,
    /// How the session signed in (space-separated).
    pub session_amr: String,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub user_active: bool,
}

pub async fn insert_refresh<'e, E: Exec<'e>>(ex: E, token_hash: &str, session: SessionId) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "insert into refresh_tokens (token_hash, session_id, created_at, updated_at) values ($1, $2, $3, $3)
         on conflict (token_hash) do nothing",
    )
    .bind(token_hash)
    .bind(session.to_string())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn find_refresh<'e, E: Exec<'e>>(ex: E, token_hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
    Ok(sqlx::query_as(
        "select t.session_id, s.user_id, t.rotated_at, s.revoked_at as session_revoked_at,
                s.expires_at as session_expires_at, s.last_used_at as session_last_used_at,
                s.amr as session_amr, u.is_active as user_active
         from refresh_tokens t join sessions s on s.id = t.session_id join users u on u.id = s.user_id
         where t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(ex)
    .await?)
}

/// Marks a token rotated; false when another request rotated it first.
pub async fn mark_rotated<'e, E: Exec<'e>>(ex: E, token_hash: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update refresh_tokens set rotated_at = $2, updated_at = $2 where token_hash = $1 and rotated_at is null",
    )
    .bind(token_hash)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a session's last use to now, if it is older than `stale_ms` (one write a minute per
/// busy session, not one per request).
pub async fn touch_if_stale<'e, E: Exec<'e>>(ex: E, session: SessionId, stale_ms: i64) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query("update sessions set last_used_at = $2 where id = $1 and last_used_at < $3")
        .bind(session.to_string())
        .bind(now)
        .bind(now - stale_ms)
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn touch<'e, E: Exec<'e>>(ex: E, session: SessionId) -> Result<(), StoreError> {
    sqlx::query("update sessions set last_used_at = $2, updated_at = $2 where id = $1")
        .bind(session.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

/// A session as its owner sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    #[sqlx(try_from = "String")]
    pub id: SessionId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub user_agent: String,
    pub ip: String,
    pub amr: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub expires_at: Timestamp,
}

const INFO_COLUMNS: &str = "id, user_id, user_agent, ip, amr, created_at, last_used_at, expires_at";

/// One session, live or not.
pub async fn get<'e, E: Exec<'e>>(ex: E, session: SessionId) -> Result<Option<SessionInfo>, StoreError> {
    let sql = format!("select {INFO_COLUMNS} from sessions where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(session.to_string()).fetch_optional(ex).await?)
}

/// A user's live sessions (not ended, not expired), newest first, after `cursor`.
pub async fn list_live<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    cursor: Option<SessionId>,
    limit: i64,
) -> Result<Vec<SessionInfo>, StoreError> {
    let sql = format!(
        "select {INFO_COLUMNS} from sessions
         where user_id = $1 and revoked_at is null and expires_at > $2 and ($3 is null or id < $3)
         order by id desc limit $4"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(now_ms())
        .bind(cursor.map(|c| c.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Ends one of `user`'s live sessions; false when it is not theirs or already over.
pub async fn revoke_owned<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    session: SessionId,
    reason: &str,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "update sessions set revoked_at = $3, revoke_reason = $4, updated_at = $3
         where id = $1 and user_id = $2 and revoked_at is null and expires_at > $3",
    )
    .bind(session.to_string())
    .bind(user.to_string())
    .bind(now)
    .bind(reason)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}
