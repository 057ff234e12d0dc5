//! The activity log's rows: appended, listed with filters, deleted by age. Nothing updates
//! an entry.

use super::Exec;
use crate::audit::{AuditAction, AuditEvent, AuditResult};
use crate::error::StoreError;
use crate::ids::{AuditEventId, UserId};
use crate::time::{Timestamp, now_ms};

/// The start of an entry's insert; its values follow, in this order.
pub(crate) const INSERT: &str = "insert into audit_events \
    (id, actor_id, target_id, action, result, ip, user_agent, details, created_at, updated_at)";

pub async fn insert<'e, E: Exec<'e>>(ex: E, event: &AuditEvent) -> Result<(), StoreError> {
    let sql = format!("{INSERT} values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)");
    bind_event(sqlx::query(sqlx::AssertSqlSafe(sql)), event).bind(now_ms()).execute(ex).await?;
    Ok(())
}

/// Binds an entry's id and fields (eight values, in the column order of [`INSERT`]).
pub(crate) fn bind_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    event: &AuditEvent,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(AuditEventId::new().to_string())
        .bind(event.actor.map(|u| u.to_string()))
        .bind(event.target.map(|u| u.to_string()))
        .bind(event.action.as_str())
        .bind(event.result.as_str())
        .bind(event.ip.clone())
        .bind(event.user_agent.clone())
        .bind(event.details.as_ref().map(|d| d.to_string()))
}

/// An entry as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    #[sqlx(try_from = "String")]
    pub id: AuditEventId,
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub actor_id: Option<UserId>,
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub target_id: Option<UserId>,
    #[sqlx(try_from = "String")]
    pub action: AuditAction,
    #[sqlx(try_from = "String")]
    pub result: AuditResult,
    pub ip: String,
    pub user_agent: String,
    pub details: Option<String>,
    pub created_at: Timestamp,
}

/// Which entries to list; every set field must match.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<UserId>,
    pub target: Option<UserId>,
    /// Entries where this user is the actor or the target.
    pub involving: Option<UserId>,
    pub action: Option<AuditAction>,
    pub result: Option<AuditResult>,
    /// At or after (ms).
    pub since: Option<i64>,
    /// Before (ms).
    pub until: Option<i64>,
}

/// Newest first, after `cursor`.
pub async fn list<'e, E: Exec<'e>>(
    ex: E,
    filter: &AuditFilter,
    cursor: Option<AuditEventId>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(sqlx::query_as(
        "select id, actor_id, target_id, action, result, ip, user_agent, details, created_at from audit_events
         where ($1 is null or actor_id = $1) and ($2 is null or target_id = $2)
           and ($3 is null or actor_id = $3 or target_id = $3) and ($4 is null or action = $4)
           and ($5 is null or result = $5) and ($6 is null or created_at >= $6)
           and ($7 is null or created_at < $7) and ($8 is null or id < $8)
         order by id desc limit $9",
    )
    .bind(filter.actor.map(|u| u.to_string()))
    .bind(filter.target.map(|u| u.to_string()))
    .bind(filter.involving.map(|u| u.to_string()))
    .bind(filter.action.map(|a| a.as_str()))
    .bind(filter.result.map(|r| r.as_str()))
    .bind(filter.since)
    .bind(filter.until)
    .bind(cursor.map(|c| c.to_string()))
    .bind(limit)
    .fetch_all(ex)
    .await?)
}

/// How many `action` entries with `result` target `user` since `since` (ms), and the time of
/// the oldest of them.
pub async fn count_since<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    action: AuditAction,
    result: AuditResult,
    since: i64,
) -> Result<(i64, Option<i64>), StoreError> {
    let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
        "select count(*), min(created_at) from audit_events
         where target_id = $1 and action = $2 and result = $3 and created_at >= $4",
    )
    .bind(user.to_string())
    .bind(action.as_str())
    .bind(result.as_str())
    .bind(since)
    .fetch_one(ex)
    .await?;
    Ok((count, oldest))
}

/// Deletes entries made before `before` (ms); how many went.
pub async fn delete_before<'e, E: Exec<'e>>(ex: E, before: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("delete from audit_events where created_at < $1").bind(before).execute(ex).await?.rows_affected())
}
