//! Token usage: one row per finished attempt of a chat reply, a title or a `/v1` call, with
//! the UTC day it ended on, so that usage reads per user, model and day (or month) and
//! budgets check against a day's or a month's sum through the `(user_id, day)` index.

use super::Exec;
use crate::error::StoreError;
use crate::ids::{JobId, LlmConfigId, UserId};
use crate::time::now_ms;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;

/// What the tokens were spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// A chat reply.
    Chat,
    /// A generated session title.
    Title,
    /// A call of `/v1/chat/completions`.
    Api,
}

impl UsageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Chat => "chat",
            UsageKind::Title => "title",
            UsageKind::Api => "api",
        }
    }
}

impl TryFrom<String> for UsageKind {
    type Error = crate::jobs::UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "chat" => Ok(UsageKind::Chat),
            "title" => Ok(UsageKind::Title),
            "api" => Ok(UsageKind::Api),
            _ => Err(crate::jobs::UnknownValue { what: "usage kind", value }),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    Complete,
    Failed,
    Cancelled,
}

impl UsageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Complete => "complete",
            UsageOutcome::Failed => "failed",
            UsageOutcome::Cancelled => "cancelled",
        }
    }
}

/// One attempt's tokens.
#[derive(Debug, Clone)]
pub struct NewUsage<'a> {
    pub user: UserId,
    pub job: JobId,
    pub attempt: i64,
    pub kind: UsageKind,
    pub config: Option<LlmConfigId>,
    pub model: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Whether the provider reported the figures (else Parley counted them).
    pub from_provider: bool,
    pub outcome: UsageOutcome,
}

/// The stored form of a day: `YYYY-MM-DD`, which sorts and compares as text.
pub fn day_of(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The first day of `at`'s month.
pub fn month_start(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-01").to_string()
}

/// The next UTC midnight after `at`: when a daily budget resets.
pub fn next_day(at: DateTime<Utc>) -> DateTime<Utc> {
    let date = at.date_naive().succ_opt().unwrap_or(NaiveDate::MAX);
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The first instant of the month after `at`'s: when a monthly budget resets.
pub fn next_month(at: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if at.month() == 12 { (at.year() + 1, 1) } else { (at.year(), at.month() + 1) };
    let date = NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(NaiveDate::MAX);
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// Records an attempt's tokens once: the same attempt recorded again (a re-run after a
/// crash) changes nothing.
pub async fn record<'e, E: Exec<'e>>(ex: E, u: &NewUsage<'_>) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "insert into token_usage (id, user_id, job_id, attempt, kind, config_id, model, day, prompt_tokens,
             completion_tokens, counted_by, outcome, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
         on conflict (job_id, attempt) do nothing",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(u.user.to_string())
    .bind(u.job.to_string())
    .bind(u.attempt)
    .bind(u.kind.as_str())
    .bind(u.config.map(|c| c.to_string()))
    .bind(u.model)
    .bind(day_of(Utc::now()))
    .bind(u.prompt_tokens.max(0))
    .bind(u.completion_tokens.max(0))
    .bind(if u.from_provider { "provider" } else { "parley" })
    .bind(u.outcome.as_str())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// Days before this many days ago are rolled up (past any monthly budget's window).
pub const ROLLUP_AFTER_DAYS: u64 = 40;

/// Sums the attempt rows of days before `before_day` into one row per user, config, model,
/// kind and day (added to that day's rollup row if one exists), in one transaction; how
/// many attempt rows went. Every read sums rows, so it answers the same before and after.
pub async fn rollup(db: &crate::db::Db, before_day: &str) -> Result<u64, StoreError> {
    let mut tx = db.begin_write().await?;
    let now = now_ms();
    sqlx::query(
        "insert into token_usage (id, user_id, job_id, attempt, kind, config_id, model, day, prompt_tokens,
             completion_tokens, counted_by, outcome, requests, created_at, updated_at)
         select 'rollup ' || day || ' ' || user_id || ' ' || kind || ' ' || coalesce(config_id, '-') || ' ' || model,
                user_id, 'rollup ' || day || ' ' || user_id || ' ' || kind || ' ' || coalesce(config_id, '-') || ' ' || model,
                0, kind, config_id, model, day, cast(sum(prompt_tokens) as bigint), cast(sum(completion_tokens) as bigint),
                'rollup', 'rollup', cast(sum(requests) as bigint), $2, $2
         from token_usage where day < $1 and attempt > 0
         group by day, user_id, kind, config_id, model
         on conflict (job_id, attempt) do update set
             prompt_tokens = token_usage.prompt_tokens + excluded.prompt_tokens,
             completion_tokens = token_usage.completion_tokens + excluded.completion_tokens,
             requests = token_usage.requests + excluded.requests,
             updated_at = excluded.updated_at",
    )
    .bind(before_day)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let rolled = sqlx::query("delete from token_usage where day < $1 and attempt > 0")
        .bind(before_day)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(rolled)
}

/// A user's tokens (prompt and completion) from `first_day` on.
pub async fn total_since<'e, E: Exec<'e>>(ex: E, user: UserId, first_day: &str) -> Result<i64, StoreError> {
    let total: Option<i64> = sqlx::query_scalar(
        "select cast(sum(prompt_tokens + completion_tokens) as bigint) from token_usage where user_id = $1 and day >= $2",
    )
    .bind(user.to_string())
    .bind(first_day)
    .fetch_one(ex)
    .await?;
    Ok(total.unwrap_or(0))
}

/// How rows are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// Which usage to read: days from `from` to `to` (inclusive, `YYYY-MM-DD`).
#[derive(Debug, Clone)]
pub struct UsageFilter<'a> {
    pub user: Option<UserId>,
    pub model: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    pub period: Period,
}

/// Tokens of one user, model and kind in one day or month.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`) or month (`YYYY-MM`).
    pub period: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    pub model: String,
    #[sqlx(try_from = "String")]
    pub kind: UsageKind,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Attempts recorded.
    pub requests: i64,
    /// The row's place in the list: the cursor of the page after it.
    pub position: String,
}

/// Usage grouped by period, user, model and kind, in that order, after the position `after`
/// (any text is a position: the list is ordered by it).
pub async fn grouped<'e, E: Exec<'e>>(
    ex: E,
    filter: &UsageFilter<'_>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UsageRow>, StoreError> {
    let period = match filter.period {
        Period::Day => "day",
        Period::Month => "substr(day, 1, 7)",
    };
    // A period, user id and kind have fixed widths and no separator characters, so the
    // position orders rows as (period, user, kind, model) would.
    let sql = format!(
        "select period, user_id, model, kind, prompt_tokens, completion_tokens, requests, position from (
             select {period} as period, user_id, model, kind,
                    cast(sum(prompt_tokens) as bigint) as prompt_tokens,
                    cast(sum(completion_tokens) as bigint) as completion_tokens,
                    cast(sum(requests) as bigint) as requests,
                    {period} || ' ' || user_id || ' ' || kind || ' ' || model as position
             from token_usage
             where day >= $1 and day <= $2 and ($3 is null or user_id = $3) and ($4 is null or model = $4)
             group by {period}, user_id, model, kind
         ) grouped
         where ($5 is null or position > $5)
         order by position limit $6"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.user.map(|u| u.to_string()))
        .bind(filter.model)
        .bind(after)
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// How many rows [`grouped`] answers for `filter` in all.
pub async fn count_grouped<'e, E: Exec<'e>>(ex: E, filter: &UsageFilter<'_>) -> Result<i64, StoreError> {
    let period = match filter.period {
        Period::Day => "day",
        Period::Month => "substr(day, 1, 7)",
    };
    let sql = format!(
        "select count(*) from (
             select 1 from token_usage
             where day >= $1 and day <= $2 and ($3 is null or user_id = $3) and ($4 is null or model = $4)
             group by {period}, user_id, model, kind
         ) grouped"
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.user.map(|u| u.to_string()))
        .bind(filter.model)
        .fetch_one(ex)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_reset_at_the_next_utc_midnight_and_first_of_month() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(next_day(at), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(next_month(at), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        let at = Utc.with_ymd_and_hms(2026, 2, 10, 8, 0, 0).unwrap();
        assert_eq!(next_month(at), Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        assert_eq!(day_of(at), "2026-02-10");
        assert_eq!(month_start(at), "2026-02-01");
    }
}
