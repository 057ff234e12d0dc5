//! Each job's ordered event stream (`seq` 1, 2, 3, ...), kept so a client can resume.

use super::Exec;
use crate::error::StoreError;
use crate::ids::JobId;
use crate::time::now_ms;
use serde::{Deserialize, Serialize};

/// The type of a job event (the SSE `event:` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// `running`, `retrying`, `restarted` (an LLM reply starts over) or `cancelled`.
    Status,
    /// A piece of an LLM reply's text.
    Delta,
    Progress,
    /// The job succeeded; carries its result.
    Done,
    /// The job failed.
    Error,
}

impl EventType {
    pub const ALL: [EventType; 5] =
        [EventType::Status, EventType::Delta, EventType::Progress, EventType::Done, EventType::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Status => "status",
            EventType::Delta => "delta",
            EventType::Progress => "progress",
            EventType::Done => "done",
            EventType::Error => "error",
        }
    }
}

impl TryFrom<String> for EventType {
    type Error = crate::jobs::UnknownValue;
    fn try_from(value: String) -> Result<Self, crate::jobs::UnknownValue> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == value)
            .ok_or(crate::jobs::UnknownValue { what: "job event type", value })
    }
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct JobEvent {
    pub job_id: String,
    pub seq: i64,
    #[sqlx(try_from = "String")]
    pub event: EventType,
    pub data: String,
    pub created_at: i64,
}

impl JobEvent {
    /// `done`, `error` and cancellation end a stream.
    pub fn is_terminal(&self) -> bool {
        match self.event {
            EventType::Done | EventType::Error => true,
            EventType::Status => serde_json::from_str::<serde_json::Value>(&self.data)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "cancelled"))
                .unwrap_or(false),
            EventType::Delta | EventType::Progress => false,
        }
    }
}

/// Appends one event to each of several jobs, in one statement of the caller's transaction,
/// which must own those jobs' streams (it holds their rows).
pub async fn append_in(
    conn: &mut sqlx::AnyConnection,
    events: &[(JobId, EventType, serde_json::Value)],
) -> Result<Vec<JobEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let n = 2 + i * 3;
            format!(
                "(${a}, (select coalesce(max(seq), 0) + 1 from job_events where job_id = ${a}), ${b}, ${c}, $1)",
                a = n,
                b = n + 1,
                c = n + 2
            )
        })
        .collect();
    let sql = format!(
        "insert into job_events (job_id, seq, event, data, created_at) values {} returning job_id, seq",
        rows.join(", ")
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now);
    for (job, event, data) in events {
        query = query.bind(job.to_string()).bind(event.as_str()).bind(data.to_string());
    }
    let seqs: Vec<(String, i64)> = query.fetch_all(&mut *conn).await?;
    Ok(events
        .iter()
        .map(|(job, event, data)| {
            let job_id = job.to_string();
            let seq = seqs.iter().find(|(id, _)| *id == job_id).map_or(0, |(_, seq)| *seq);
            JobEvent { job_id, seq, event: *event, data: data.to_string(), created_at: now }
        })
        .collect())
}

/// Deletes a job's whole event stream (an admin retry starts a fresh one).
pub async fn delete_all<'e, E: Exec<'e>>(ex: E, job: JobId) -> Result<(), StoreError> {
    sqlx::query("delete from job_events where job_id = $1").bind(job.to_string()).execute(ex).await?;
    Ok(())
}

/// Stores events at `seq`s the caller owns, in one statement.
pub async fn insert_many<'e, E: Exec<'e>>(ex: E, events: &[JobEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..events.len())
        .map(|i| {
            let n = i * 5;
            format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5)
        })
        .collect();
    let sql = format!("insert into job_events (job_id, seq, event, data, created_at) values {}", rows.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for event in events {
        query = query
            .bind(&event.job_id)
            .bind(event.seq)
            .bind(event.event.as_str())
            .bind(&event.data)
            .bind(event.created_at);
    }
    query.execute(ex).await?;
    Ok(())
}

/// The newest `seq` of a job (0 when it has none).
pub async fn last_seq<'e, E: Exec<'e>>(ex: E, job: JobId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("select coalesce(max(seq), 0) from job_events where job_id = $1")
        .bind(job.to_string())
        .fetch_one(ex)
        .await?)
}

/// Whether the job's stream holds text (`delta` events) since its last `restarted` status:
/// watchers then hold text of an attempt that a new one replaces.
pub async fn has_text_since_restart<'e, E: Exec<'e>>(ex: E, job: JobId) -> Result<bool, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "select count(*) from job_events where job_id = $1 and event = 'delta' and seq > coalesce(
             (select max(seq) from job_events where job_id = $1 and event = 'status' and data like '%\"restarted\"%'), 0)",
    )
    .bind(job.to_string())
    .fetch_one(ex)
    .await?;
    Ok(count > 0)
}

/// Deletes the event streams of jobs that finished before `before` (ms); returns how many
/// events went.
pub async fn prune_finished<'e, E: Exec<'e>>(ex: E, before: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "delete from job_events where job_id in (
             select id from parley_jobs where finished_at is not null and finished_at < $1)",
    )
    .bind(before)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// The event `seq` of a job.
pub async fn at<'e, E: Exec<'e>>(ex: E, job: JobId, seq: i64) -> Result<Option<JobEvent>, StoreError> {
    Ok(sqlx::query_as("select job_id, seq, event, data, created_at from job_events where job_id = $1 and seq = $2")
        .bind(job.to_string())
        .bind(seq)
        .fetch_optional(ex)
        .await?)
}

/// Events after `seq`, in order.
pub async fn after<'e, E: Exec<'e>>(ex: E, job: JobId, seq: i64, limit: i64) -> Result<Vec<JobEvent>, StoreError> {
    Ok(sqlx::query_as(
        "select job_id, seq, event, data, created_at from job_events where job_id = $1 and seq > $2
         order by seq limit $3",
    )
    .bind(job.to_string())
    .bind(seq)
    .bind(limit)
    .fetch_all(ex)
    .await?)
}
