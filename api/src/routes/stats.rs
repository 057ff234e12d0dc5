//! Admin stats per UTC day: new accounts, active users, sessions, messages, tokens per
//! model, and jobs per kind and final status with run-time percentiles; and the queues'
//! depth now. Days without any activity are left out.

use crate::error::{ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, Json, Query};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{Days, NaiveDate, Utc};
use parley_shared::store::stats::{self, BUCKETS_MS, Counted, DAY_MS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/stats", get(admin_stats))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct StatsRange {
    /// The first UTC day (default: 29 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// The last UTC day, included (default: today).
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelTokens {
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Jobs of one kind that ended with one status on the day.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStats {
    pub kind: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub count: i64,
    /// Run time (start to end of the last attempt) that half of them stayed within, as the
    /// upper bound of its bucket (10 ms, 25 ms, 50 ms, 100 ms, ... 30 min).
    pub p50_ms: i64,
    pub p95_ms: i64,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DayStats {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub new_accounts: i64,
    /// Users who sent or got a message.
    pub active_users: i64,
    /// Chat sessions started.
    pub sessions: i64,
    pub messages: i64,
    pub tokens: Vec<ModelTokens>,
    pub jobs: Vec<JobStats>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDepth {
    pub queue: String,
    /// Jobs queued or waiting to retry.
    pub waiting: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminStats {
    /// Days with any activity, oldest first.
    pub days: Vec<DayStats>,
    pub queue_depth: Vec<QueueDepth>,
}

fn entry(days: &mut BTreeMap<String, DayStats>, day: String) -> &mut DayStats {
    days.entry(day.clone()).or_insert_with(|| DayStats { day, ..DayStats::default() })
}

fn day_name(day: i64) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_days(Days::new(u64::try_from(day).unwrap_or(0))))
        .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis())
}

/// Stats per UTC day from `from` to `to`, and the queues' depth now.
#[utoipa::path(get, path = "/api/admin/stats/", tag = "admin", params(StatsRange), security(("bearer" = [])), responses(
    (status = 200, body = AdminStats), (status = 403, body = ErrorEnvelope)))]
pub async fn admin_stats(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(range): Query<StatsRange>,
) -> ApiResult<Json<AdminStats>> {
    let to = range.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = range.from.unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    let (from_ms, to_ms) = (day_start_ms(from), day_start_ms(to).saturating_add(DAY_MS));
    let pool = &state.db.pool;
    let mut days: BTreeMap<String, DayStats> = BTreeMap::new();
    for (d, n) in stats::per_day(pool, Counted::NewAccounts, from_ms, to_ms).await? {
        entry(&mut days, day_name(d)).new_accounts = n;
    }
    for (d, n) in stats::per_day(pool, Counted::Sessions, from_ms, to_ms).await? {
        entry(&mut days, day_name(d)).sessions = n;
    }
    for (d, messages, users) in stats::messages_per_day(pool, from_ms, to_ms).await? {
        let day = entry(&mut days, day_name(d));
        (day.messages, day.active_users) = (messages, users);
    }
    let (from_day, to_day) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
    for (d, model, prompt_tokens, completion_tokens) in stats::tokens_per_day(pool, &from_day, &to_day).await? {
        entry(&mut days, d).tokens.push(ModelTokens { model, prompt_tokens, completion_tokens });
    }
    let mut jobs: BTreeMap<(String, String, String), Vec<i64>> = BTreeMap::new();
    for (d, kind, status, bucket, n) in stats::jobs_per_day(pool, from_ms, to_ms).await? {
        let counts = jobs.entry((day_name(d), kind, status)).or_insert_with(|| vec![0; BUCKETS_MS.len() + 1]);
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| counts.get_mut(b)) {
            *slot += n;
        }
    }
    for ((d, kind, status), counts) in jobs {
        let job = JobStats {
            kind,
            status,
            count: counts.iter().sum(),
            p50_ms: stats::quantile_ms(&counts, 0.5),
            p95_ms: stats::quantile_ms(&counts, 0.95),
        };
        entry(&mut days, d).jobs.push(job);
    }
    let queue_depth =
        stats::queue_depth(pool).await?.into_iter().map(|(queue, waiting)| QueueDepth { queue, waiting }).collect();
    Ok(Json(AdminStats { days: days.into_values().collect(), queue_depth }))
}
