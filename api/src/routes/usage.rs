//! Token usage: one's own per day and model, with what is left of one's budgets; everyone's
//! for admins, grouped by user, model and day or month.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, AuthUser, Json, Query};
use crate::pagination::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Days, NaiveDate, Utc};
use parley_shared::ids::UserId;
use parley_shared::store::usage::{self, Period, UsageFilter, UsageKind, UsageRow};
use parley_shared::usecases::quota::{self, BudgetUse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/users/me/usage", get(my_usage)).route("/api/admin/usage", get(all_usage))
}

/// Days without `from` start this many days before `to`.
const DEFAULT_DAYS: u64 = 29;
/// The longest cursor (a row's position: period, user id, kind and model name).
const MAX_CURSOR_CHARS: usize = 400;
/// The longest `?model=`.
const MAX_MODEL_CHARS: usize = 200;

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct UsageRange {
    /// The first UTC day (default: 29 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// The last UTC day, included (default: today).
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1, max_length = 400)]
    pub cursor: Option<String>,
}

impl UsageRange {
    /// `(from, to, limit, cursor)`, or a validation error naming the parameter.
    fn parse(&self) -> ApiResult<(String, String, i64, Option<&str>)> {
        let to = self.to.unwrap_or_else(|| Utc::now().date_naive());
        let from = self.from.unwrap_or_else(|| to.checked_sub_days(Days::new(DEFAULT_DAYS)).unwrap_or(to));
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let cursor = self.cursor.as_deref();
        if cursor.is_some_and(|c| c.is_empty() || c.chars().count() > MAX_CURSOR_CHARS) {
            return Err(ApiError::field("cursor", "is not a valid cursor"));
        }
        Ok((from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string(), limit, cursor))
    }
}

/// Tokens of one user, model and kind in one day or month.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// The day (`YYYY-MM-DD`) or month (`YYYY-MM`).
    pub period: String,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The model that answered.
    pub model: String,
    /// `chat` (replies), `title` (generated session titles) or `api` (`/v1` calls).
    pub kind: UsageKind,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Attempts recorded (a retried reply counts each attempt).
    pub requests: i64,
}

impl From<UsageRow> for UsageView {
    fn from(r: UsageRow) -> Self {
        Self {
            period: r.period,
            user_id: r.user_id,
            model: r.model,
            kind: r.kind,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.prompt_tokens + r.completion_tokens,
            requests: r.requests,
        }
    }
}

/// A budget and what is used of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    /// `null`: no limit.
    pub budget: Option<i64>,
    pub used: i64,
    pub resets_at: DateTime<Utc>,
}

impl From<BudgetUse> for BudgetView {
    fn from(b: BudgetUse) -> Self {
        Self { budget: b.budget, used: b.used, resets_at: b.resets_at }
    }
}

/// One's usage, a page of it, and one's budgets now.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyUsage {
    pub items: Vec<UsageView>,
    pub next_cursor: Option<String>,
    pub daily: BudgetView,
    pub monthly: BudgetView,
}

/// A page of usage rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePage {
    pub items: Vec<UsageView>,
    pub next_cursor: Option<String>,
}

fn page(mut rows: Vec<UsageRow>, limit: i64) -> (Vec<UsageView>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r.position.clone()) } else { None };
    (rows.into_iter().map(UsageView::from).collect(), next)
}

/// One's token usage per UTC day, model and kind, oldest first, with the daily and monthly
/// budgets and what is used of them.
#[utoipa::path(get, path = "/api/users/me/usage/", tag = "accounts", params(UsageRange), security(("bearer" = [])), responses(
    (status = 200, body = MyUsage), (status = 422, body = ErrorEnvelope)))]
pub async fn my_usage(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(range): Query<UsageRange>,
) -> ApiResult<Json<MyUsage>> {
    let (from, to, limit, cursor) = range.parse()?;
    let filter = UsageFilter { user: Some(auth.user.id), model: None, from: &from, to: &to, period: Period::Day };
    let rows = usage::grouped(&state.db.pool, &filter, cursor, limit + 1).await?;
    let (items, next_cursor) = page(rows, limit);
    let mut conn = state.db.pool.acquire().await?;
    let status = quota::status(&mut conn, auth.user.id, state.config.token_budgets).await?;
    Ok(Json(MyUsage { items, next_cursor, daily: status.daily.into(), monthly: status.monthly.into() }))
}

/// How admin usage is grouped in time.
#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Day,
    Month,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct UsageFilterQuery {
    /// Only this account's usage.
    #[param(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<UserId>,
    /// Only this model's usage.
    #[param(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// `day` (default) or `month`.
    #[param(inline)]
    pub group_by: Option<GroupBy>,
}

/// Everyone's token usage, grouped by day or month, user, kind and model, oldest first.
#[utoipa::path(get, path = "/api/admin/usage/", tag = "admin", params(UsageRange, UsageFilterQuery), security(("bearer" = [])), responses(
    (status = 200, body = UsagePage), (status = 403, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn all_usage(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(range): Query<UsageRange>,
    Query(q): Query<UsageFilterQuery>,
) -> ApiResult<Json<UsagePage>> {
    let (from, to, limit, cursor) = range.parse()?;
    if q.model.as_deref().is_some_and(|m| m.is_empty() || m.chars().count() > MAX_MODEL_CHARS) {
        return Err(ApiError::field("model", format!("must be 1 to {MAX_MODEL_CHARS} characters")));
    }
    let period = match q.group_by.unwrap_or_default() {
        GroupBy::Day => Period::Day,
        GroupBy::Month => Period::Month,
    };
    let filter = UsageFilter { user: q.user_id, model: q.model.as_deref(), from: &from, to: &to, period };
    let rows = usage::grouped(&state.db.pool, &filter, cursor, limit + 1).await?;
    let (items, next_cursor) = page(rows, limit);
    Ok(Json(UsagePage { items, next_cursor }))
}
