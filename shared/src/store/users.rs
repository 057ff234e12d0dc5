//! The users aggregate.

use super::Exec;
use crate::domain::{Bio, DisplayName, Email, Username};
use crate::error::StoreError;
use crate::ids::UserId;
use crate::time::{Timestamp, now_ms};

const COLUMNS: &str = "id, email, username, display_name, bio, avatar_key, password_hash, \
    email_verified, is_admin, is_active, date_joined, last_login, created_at, updated_at";

/// A user account as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    #[sqlx(try_from = "String")]
    pub id: UserId,
    pub email: String,
    pub username: Option<String>,
    pub display_name: String,
    pub bio: String,
    pub avatar_key: Option<String>,
    pub password_hash: String,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub email_verified: bool,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub is_admin: bool,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub is_active: bool,
    pub date_joined: Timestamp,
    pub last_login: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a registration writes.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub email: &'a Email,
    pub username: Option<&'a Username>,
    pub display_name: Option<&'a DisplayName>,
    pub password_hash: &'a str,
    pub is_admin: bool,
}

/// A partial profile update; `None` leaves a field alone, `Some(None)` clears the username.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub username: Option<Option<Username>>,
    pub display_name: Option<DisplayName>,
    pub bio: Option<Bio>,
}

pub async fn create<'e, E: Exec<'e>>(ex: E, new: NewUser<'_>) -> Result<User, StoreError> {
    let now = now_ms();
    let sql = format!(
        "insert into users (id, email, email_lower, username, username_lower, display_name, password_hash,
             is_admin, date_joined, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(UserId::new().to_string())
        .bind(new.email.as_str())
        .bind(new.email.normalized())
        .bind(new.username.map(|u| u.as_str().to_owned()))
        .bind(new.username.map(|u| u.as_str().to_lowercase()))
        .bind(new.display_name.map_or("", |d| d.as_str()))
        .bind(new.password_hash)
        .bind(new.is_admin)
        .bind(now)
        .fetch_one(ex)
        .await?)
}

pub async fn by_id<'e, E: Exec<'e>>(ex: E, id: UserId) -> Result<Option<User>, StoreError> {
    let sql = format!("select {COLUMNS} from users where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

pub async fn by_email<'e, E: Exec<'e>>(ex: E, email: &Email) -> Result<Option<User>, StoreError> {
    let sql = format!("select {COLUMNS} from users where email_lower = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(email.normalized()).fetch_optional(ex).await?)
}

pub async fn update_profile<'e, E: Exec<'e>>(ex: E, id: UserId, changes: &ProfileChanges) -> Result<User, StoreError> {
    let (set_username, username) = match &changes.username {
        None => (false, None),
        Some(u) => (true, u.as_ref().map(|u| u.as_str().to_owned())),
    };
    let sql = format!(
        "update users set
             username = case when $2 then $3 else username end,
             username_lower = case when $2 then lower($3) else username_lower end,
             display_name = coalesce($4, display_name),
             bio = coalesce($5, bio),
             updated_at = $6
         where id = $1 returning {COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(set_username)
        .bind(username)
        .bind(changes.display_name.as_ref().map(|d| d.as_str().to_owned()))
        .bind(changes.bio.as_ref().map(|b| b.as_str().to_owned()))
        .bind(now_ms())
        .fetch_optional(ex)
        .await?
        .ok_or(StoreError::NotFound)
}

pub async fn set_password_hash<'e, E: Exec<'e>>(ex: E, id: UserId, hash: &str) -> Result<(), StoreError> {
    sqlx::query("update users set password_hash = $2, updated_at = $3 where id = $1")
        .bind(id.to_string())
        .bind(hash)
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn record_login<'e, E: Exec<'e>>(ex: E, id: UserId) -> Result<(), StoreError> {
    sqlx::query("update users set last_login = $2 where id = $1")
        .bind(id.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn set_admin<'e, E: Exec<'e>>(ex: E, id: UserId, is_admin: bool) -> Result<(), StoreError> {
    sqlx::query("update users set is_admin = $2, updated_at = $3 where id = $1")
        .bind(id.to_string())
        .bind(is_admin)
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn delete<'e, E: Exec<'e>>(ex: E, id: UserId) -> Result<(), StoreError> {
    let done = sqlx::query("delete from users where id = $1").bind(id.to_string()).execute(ex).await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn any_admin<'e, E: Exec<'e>>(ex: E) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("select count(*) from users where is_admin = true").fetch_one(ex).await?;
    Ok(n > 0)
}

pub async fn mark_email_verified<'e, E: Exec<'e>>(ex: E, id: UserId) -> Result<(), StoreError> {
    sqlx::query("update users set email_verified = true, updated_at = $2 where id = $1")
        .bind(id.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

/// Replaces the avatar; returns the previous key so its files can be removed. A
/// compare-and-set, so two uploads processed at once each learn the key they replaced.
pub async fn set_avatar<'e, E: Exec<'e> + Copy>(
    ex: E,
    id: UserId,
    key: Option<&str>,
) -> Result<Option<String>, StoreError> {
    for _ in 0..8 {
        let previous: Option<(Option<String>,)> = sqlx::query_as("select avatar_key from users where id = $1")
            .bind(id.to_string())
            .fetch_optional(ex)
            .await?;
        let Some((previous,)) = previous else { return Err(StoreError::NotFound) };
        let done = sqlx::query(
            "update users set avatar_key = $2, updated_at = $3 where id = $1 and coalesce(avatar_key, '') = $4",
        )
        .bind(id.to_string())
        .bind(key)
        .bind(now_ms())
        .bind(previous.clone().unwrap_or_default())
        .execute(ex)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(previous);
        }
    }
    Err(StoreError::Other(anyhow::anyhow!("the avatar kept changing under a concurrent update")))
}

/// Filters of the admin's user list.
#[derive(Debug, Default)]
pub struct UserFilter<'a> {
    /// Part of the email, username or display name (case-insensitive).
    pub search: Option<&'a str>,
    pub is_active: Option<bool>,
    pub is_admin: Option<bool>,
}

/// Users, newest first, before the cursor id `before`.
pub async fn list<'e, E: Exec<'e>>(
    ex: E,
    filter: &UserFilter<'_>,
    before: Option<UserId>,
    limit: i64,
) -> Result<Vec<User>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from users
         where ($1 is null or id < $1)
           and ($2 is null or email_lower like $2 escape '\\' or coalesce(username_lower, '') like $2 escape '\\'
                or lower(display_name) like $2 escape '\\')
           and ($3 is null or is_active = $3)
           and ($4 is null or is_admin = $4)
         order by id desc limit $5"
    );
    let pattern = filter.search.map(|s| format!("%{}%", super::escape_like(&s.to_lowercase())));
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(before.map(|b| b.to_string()))
        .bind(pattern)
        .bind(filter.is_active)
        .bind(filter.is_admin)
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Activates or deactivates an account (a deactivated one cannot sign in; its sessions are
/// ended by the caller in the same transaction).
pub async fn set_active<'e, E: Exec<'e>>(ex: E, id: UserId, is_active: bool) -> Result<(), StoreError> {
    let done = sqlx::query("update users set is_active = $2, updated_at = $3 where id = $1")
        .bind(id.to_string())
        .bind(is_active)
        .bind(now_ms())
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Takes the write lock on a user's row until the transaction ends (on SQLite, the
/// database's write lock), so per-user limits checked after it cannot be raced.
pub async fn lock<'e, E: Exec<'e>>(ex: E, id: UserId) -> Result<(), StoreError> {
    sqlx::query("update users set updated_at = updated_at where id = $1").bind(id.to_string()).execute(ex).await?;
    Ok(())
}
