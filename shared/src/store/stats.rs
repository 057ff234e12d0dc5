//! Admin stats per UTC day, from indexed columns (`users.date_joined`,
//! `chat_sessions.created_at`, `chat_messages.created_at`, `parley_jobs.finished_at`,
//! `token_usage.day`): each query reads only the days asked for. Run times are counted in
//! buckets, so percentiles need no row in memory.

use super::Exec;
use crate::error::StoreError;

pub const DAY_MS: i64 = 86_400_000;

/// Upper bounds (ms) of the run-time buckets; the last bucket is everything above.
pub const BUCKETS_MS: [i64; 16] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000];

/// `(day number, count)` rows of a table's rows per day of `column`, in `[from_ms, to_ms)`.
pub async fn per_day<'e, E: Exec<'e>>(
    ex: E,
    table: Counted,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let (table, column) = match table {
        Counted::NewAccounts => ("users", "date_joined"),
        Counted::Sessions => ("chat_sessions", "created_at"),
    };
    let sql = format!(
        "select cast({column} / {DAY_MS} as bigint) as d, count(*) from {table}
         where {column} >= $1 and {column} < $2 group by d order by d"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from_ms).bind(to_ms).fetch_all(ex).await?)
}

/// What [`per_day`] counts.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    NewAccounts,
    Sessions,
}

/// `(day number, messages, distinct users)` per day.
pub async fn messages_per_day<'e, E: Exec<'e>>(
    ex: E,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let sql = format!(
        "select cast(created_at / {DAY_MS} as bigint) as d, count(*), count(distinct user_id) from chat_messages
         where created_at >= $1 and created_at < $2 group by d order by d"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from_ms).bind(to_ms).fetch_all(ex).await?)
}

/// `(day, model, prompt tokens, completion tokens)` for days `from..=to` (`YYYY-MM-DD`).
pub async fn tokens_per_day<'e, E: Exec<'e>>(
    ex: E,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "select day, model, cast(sum(prompt_tokens) as bigint), cast(sum(completion_tokens) as bigint) from token_usage
         where day >= $1 and day <= $2 group by day, model order by day, model",
    )
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?)
}

/// `(day number, kind, status, bucket, count)` of jobs that ended in `[from_ms, to_ms)`;
/// `bucket` indexes [`BUCKETS_MS`] (its length: above the last bound).
pub async fn jobs_per_day<'e, E: Exec<'e>>(
    ex: E,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, String, String, i64, i64)>, StoreError> {
    let mut bucket = String::from("case");
    for (i, bound) in BUCKETS_MS.iter().enumerate() {
        bucket.push_str(&format!(" when finished_at - coalesce(started_at, finished_at) <= {bound} then {i}"));
    }
    bucket.push_str(&format!(" else {} end", BUCKETS_MS.len()));
    let sql = format!(
        "select cast(finished_at / {DAY_MS} as bigint) as d, kind, status, cast({bucket} as bigint) as b, count(*)
         from parley_jobs
         where finished_at >= $1 and finished_at < $2 and status in ('succeeded', 'failed', 'cancelled')
         group by d, kind, status, b order by d, kind, status, b"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from_ms).bind(to_ms).fetch_all(ex).await?)
}

/// `(queue, waiting jobs)` now.
pub async fn queue_depth<'e, E: Exec<'e>>(ex: E) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "select queue, count(*) from parley_jobs where status in ('queued', 'retrying') group by queue order by queue",
    )
    .fetch_all(ex)
    .await?)
}

/// The upper bound (ms) of the bucket holding the `q` quantile of `counts` (per bucket);
/// for the open last bucket, its lower bound.
pub fn quantile_ms(counts: &[i64], q: f64) -> i64 {
    let total: i64 = counts.iter().sum();
    let rank = ((total as f64) * q).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return BUCKETS_MS.get(i).copied().unwrap_or(BUCKETS_MS[BUCKETS_MS.len() - 1]);
        }
    }
    BUCKETS_MS[BUCKETS_MS.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_name_the_bucket_that_holds_them() {
        let mut counts = vec![0; BUCKETS_MS.len() + 1];
        counts[0] = 50; // <= 10 ms
        counts[3] = 45; // <= 100 ms
        counts[6] = 5; // <= 1 s
        assert_eq!(quantile_ms(&counts, 0.5), 10);
        assert_eq!(quantile_ms(&counts, 0.95), 100);
        assert_eq!(quantile_ms(&counts, 0.99), 1_000);
    }
}
