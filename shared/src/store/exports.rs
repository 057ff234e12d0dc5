//! Export rows: what an export job writes, for whom, and where the file is kept until it
//! expires.

use super::Exec;
use crate::error::StoreError;
use crate::ids::{ExportId, JobId, UserId};
use crate::time::{Timestamp, now_ms};
use serde::{Deserialize, Serialize};

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportKind {
    /// One's own data: profile, conversations, avatar and activity, in a zip.
    Personal,
    /// Admin: accounts.
    Users,
    /// Admin: token usage.
    Usage,
    /// Admin: the activity log.
    Audit,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Personal => "personal",
            ExportKind::Users => "users",
            ExportKind::Usage => "usage",
            ExportKind::Audit => "audit",
        }
    }
}

impl TryFrom<String> for ExportKind {
    type Error = crate::jobs::UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        [ExportKind::Personal, ExportKind::Users, ExportKind::Usage, ExportKind::Audit]
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or(crate::jobs::UnknownValue { what: "export kind", value })
    }
}

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Zip,
    Csv,
    Json,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Zip => "zip",
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Zip => "application/zip",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
        }
    }
}

impl TryFrom<String> for ExportFormat {
    type Error = crate::jobs::UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        [ExportFormat::Zip, ExportFormat::Csv, ExportFormat::Json]
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or(crate::jobs::UnknownValue { what: "export format", value })
    }
}

const COLUMNS: &str = "id, user_id, kind, format, filters, job_id, storage_key, file_name, size_bytes, expires_at, \
    created_at, updated_at";

/// An export as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Export {
    #[sqlx(try_from = "String")]
    pub id: ExportId,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    #[sqlx(try_from = "String")]
    pub kind: ExportKind,
    #[sqlx(try_from = "String")]
    pub format: ExportFormat,
    /// The admin list's filters, in JSON.
    pub filters: String,
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub job_id: Option<JobId>,
    /// Set once the file is written; cleared when it expired and was deleted.
    pub storage_key: Option<String>,
    pub file_name: Option<String>,
    pub size_bytes: Option<i64>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub async fn insert<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    kind: ExportKind,
    format: ExportFormat,
    filters: &serde_json::Value,
) -> Result<ExportId, StoreError> {
    let id = ExportId::new();
    sqlx::query(
        "insert into exports (id, user_id, kind, format, filters, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(user.to_string())
    .bind(kind.as_str())
    .bind(format.as_str())
    .bind(filters.to_string())
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(id)
}

pub async fn set_job<'e, E: Exec<'e>>(ex: E, id: ExportId, job: JobId) -> Result<(), StoreError> {
    sqlx::query("update exports set job_id = $2, updated_at = $3 where id = $1")
        .bind(id.to_string())
        .bind(job.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn get<'e, E: Exec<'e>>(ex: E, id: ExportId) -> Result<Option<Export>, StoreError> {
    let sql = format!("select {COLUMNS} from exports where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

/// Records the written file.
pub async fn set_file<'e, E: Exec<'e>>(
    ex: E,
    id: ExportId,
    key: &str,
    file_name: &str,
    size_bytes: i64,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update exports set storage_key = $2, file_name = $3, size_bytes = $4, expires_at = $5, updated_at = $6
         where id = $1",
    )
    .bind(id.to_string())
    .bind(key)
    .bind(file_name)
    .bind(size_bytes)
    .bind(expires_at_ms)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Exports whose file expired before `now_ms` and is still stored (at most `limit`).
pub async fn expired<'e, E: Exec<'e>>(ex: E, now_ms: i64, limit: i64) -> Result<Vec<Export>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from exports where expires_at < $1 and storage_key is not null order by expires_at limit $2"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now_ms).bind(limit).fetch_all(ex).await?)
}

/// Forgets an expired export's file (after it was deleted from the storage).
pub async fn clear_file<'e, E: Exec<'e>>(ex: E, id: ExportId) -> Result<(), StoreError> {
    sqlx::query("update exports set storage_key = null, updated_at = $2 where id = $1")
        .bind(id.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

/// Storage keys of a user's stored exports (to delete with the account).
pub async fn keys_of<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("select storage_key from exports where user_id = $1 and storage_key is not null")
        .bind(user.to_string())
        .fetch_all(ex)
        .await?)
}

/// How many sessions a user has (the total of a personal export's progress).
pub async fn count_sessions<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("select count(*) from chat_sessions where user_id = $1")
        .bind(user.to_string())
        .fetch_one(ex)
        .await?)
}

/// How many accounts a users export holds (the filters of [`super::users::list`]).
pub async fn count_users<'e, E: Exec<'e>>(ex: E, filter: &super::users::UserFilter<'_>) -> Result<i64, StoreError> {
    let pattern = filter.search.map(|s| format!("%{}%", super::escape_like(&s.to_lowercase())));
    Ok(sqlx::query_scalar(
        "select count(*) from users
         where ($1 is null or email_lower like $1 escape '\\' or coalesce(username_lower, '') like $1 escape '\\'
                or lower(display_name) like $1 escape '\\')
           and ($2 is null or is_active = $2) and ($3 is null or is_admin = $3)",
    )
    .bind(pattern)
    .bind(filter.is_active)
    .bind(filter.is_admin)
    .fetch_one(ex)
    .await?)
}

/// How many entries an audit export holds (the filters of [`super::audit::list`]).
pub async fn count_audit<'e, E: Exec<'e>>(ex: E, filter: &super::audit::AuditFilter) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "select count(*) from audit_events
         where ($1 is null or actor_id = $1) and ($2 is null or target_id = $2)
           and ($3 is null or actor_id = $3 or target_id = $3) and ($4 is null or action = $4)
           and ($5 is null or result = $5) and ($6 is null or created_at >= $6)
           and ($7 is null or created_at < $7)",
    )
    .bind(filter.actor.map(|u| u.to_string()))
    .bind(filter.target.map(|u| u.to_string()))
    .bind(filter.involving.map(|u| u.to_string()))
    .bind(filter.action.map(|a| a.as_str()))
    .bind(filter.result.map(|r| r.as_str()))
    .bind(filter.since)
    .bind(filter.until)
    .fetch_one(ex)
    .await?)
}
