//! The schedules of periodic work, for admins: each with its interval, its last run (the
//! tick and the job that ran it) and its next.

use crate::error::{ApiResult, ErrorEnvelope};
use crate::extract::{AdminUser, Json};
use crate::pagination::Page;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use parley_shared::schedules::{self, Schedule};
use parley_shared::store::jobs;
use serde::Serialize;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/admin/schedules", get(list_schedules))
}

/// A schedule's last run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleRun {
    /// The tick it ran for.
    pub tick_at: DateTime<Utc>,
    pub job_id: String,
    /// The job's status (`null` once the job itself is gone).
    pub status: Option<String>,
}

/// A schedule of periodic work.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: Schedule,
    pub every_secs: u64,
    pub last_run: Option<ScheduleRun>,
    /// When the next tick starts (a worker enqueues its job then).
    pub next_run_at: DateTime<Utc>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Every schedule, with its last and next run.
#[utoipa::path(get, path = "/api/admin/schedules/", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = Page<ScheduleView>), (status = 403, body = ErrorEnvelope)))]
pub async fn list_schedules(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<Page<ScheduleView>>> {
    let now = parley_shared::time::now_ms();
    let mut items = Vec::new();
    for schedule in Schedule::ALL {
        let every = schedule.every(&state.config);
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let last_run = match schedules::last_run(&state.db, schedule).await? {
            None => None,
            Some(run) => {
                let status = match run.job_id.parse() {
                    Ok(id) => jobs::get(&state.db.pool, id).await?.map(|j| j.status.as_str().to_owned()),
                    Err(_) => None,
                };
                Some(ScheduleRun { tick_at: at(run.tick), job_id: run.job_id, status })
            }
        };
        let next = schedules::tick_of(now, every).saturating_add(every_ms);
        items.push(ScheduleView { name: schedule, every_secs: every.as_secs(), last_run, next_run_at: at(next) });
    }
    Ok(Json(Page::whole(items)))
}
