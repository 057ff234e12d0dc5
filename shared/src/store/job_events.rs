//! Each job's ordered event stream (`seq` 1, 2, 3, ...), kept so a client can resume.

use super::Exec;
use crate::error::StoreError;
use crate::ids::JobId;
use crate::time::now_ms;
use serde::{Deserialize, Serialize};

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct JobEvent {
    pub job_id: String,
    pub seq: i64,
    pub event: String,
    pub data: String,
    pub created_at: i64,
}

impl JobEvent {
    /// `done`, `error` and cancellation end a stream.
    pub fn is_terminal(&self) -> bool {
        match self.event.as_str() {
            "done" | "error" => true,
            "status" => serde_json::from_str::<serde_json::Value>(&self.data)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "cancelled"))
                .unwrap_or(false),
            _ => false,
        }
    }
}

/// Appends an event with the next `seq`.
pub async fn append<'e, E: Exec<'e> + Copy>(
    ex: E,
    job: JobId,
    event: &str,
    data: &serde_json::Value,
) -> Result<JobEvent, StoreError> {
    let data = data.to_string();
    let mut tries = 0;
    loop {
        let now = now_ms();
        let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
            "insert into job_events (job_id, seq, event, data, created_at)
             select $1, coalesce(max(seq), 0) + 1, $2, $3, $4 from job_events where job_id = $1
             returning seq",
        )
        .bind(job.to_string())
        .bind(event)
        .bind(&data)
        .bind(now)
        .fetch_one(ex)
        .await;
        match inserted {
            Ok((seq,)) => {
                return Ok(JobEvent { job_id: job.to_string(), seq, event: event.to_owned(), data, created_at: now });
            }
            // Two writers picked the same seq; the loser takes the next one.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && tries < 5 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends one event to each of several jobs, in one statement of the caller's transaction,
/// which must own those jobs' streams (it holds their rows).
pub async fn append_in(
    conn: &mut sqlx::AnyConnection,
    events: &[(JobId, &str, serde_json::Value)],
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
        query = query.bind(job.to_string()).bind(*event).bind(data.to_string());
    }
    let seqs: Vec<(String, i64)> = query.fetch_all(&mut *conn).await?;
    Ok(events
        .iter()
        .map(|(job, event, data)| {
            let job_id = job.to_string();
            let seq = seqs.iter().find(|(id, _)| *id == job_id).map_or(0, |(_, seq)| *seq);
            JobEvent { job_id, seq, event: (*event).to_owned(), data: data.to_string(), created_at: now }
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
        query = query.bind(&event.job_id).bind(event.seq).bind(&event.event).bind(&event.data).bind(event.created_at);
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
