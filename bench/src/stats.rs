//! The `stats` scenario: `GET /api/admin/stats/` over a database holding `--messages`
//! messages (a million by default), written straight into the app database over 30 days,
//! with `--users` accounts, one session per 100 messages, one finished job and one usage row
//! per 10 messages. Then `--requests` sequential requests for the default 30-day range and as
//! many for one day are timed: p50 and p99.

use crate::backend::{self, Backend, Deployment};
use crate::cli::{Common, Flags};
use crate::client::{ADMIN_EMAIL, Client};
use crate::load::percentile;
use crate::server;
use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug)]
pub struct Options {
    backend: backend::Options,
    messages: usize,
    users: usize,
    requests: usize,
}

impl Options {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        Ok(Self {
            backend: backend::Options::from_flags(flags)?,
            messages: flags.take_count("messages", "PARLEY_BENCH_MESSAGES", 1_000_000)?,
            users: flags.take_count("users", "PARLEY_BENCH_USERS", 1000)?,
            requests: flags.take_count("requests", "PARLEY_BENCH_REQUESTS", 20)?,
        })
    }
}

pub async fn run(common: &Common, options: &Options) -> anyhow::Result<()> {
    let binary = server::locate_binary(common.server.clone())?;
    let backend = options.backend.backend;
    eprintln!("starting {} ({} backend)", binary.display(), backend.as_str());
    let mut deployment = Deployment::start(&binary, &options.backend, &[]).await?;
    let result = measure(&deployment, options).await;
    if result.is_err()
        && let Err(dead) = deployment.server.check_running()
    {
        eprintln!("{dead:#}");
    }
    let stopped = deployment.stop().await;
    let (fill_s, month, day) = result?;
    stopped?;
    println!(
        "stats backend={} messages={} fill_s={fill_s:.1} month_ms_p50={:.1} month_ms_p99={:.1} \
         day_ms_p50={:.1} day_ms_p99={:.1}",
        backend.as_str(),
        options.messages,
        percentile(&month, 50.0),
        percentile(&month, 99.0),
        percentile(&day, 50.0),
        percentile(&day, 99.0),
    );
    Ok(())
}

async fn measure(deployment: &Deployment, options: &Options) -> anyhow::Result<(f64, Vec<f64>, Vec<f64>)> {
    let started = Instant::now();
    fill(deployment, options).await?;
    let fill_s = started.elapsed().as_secs_f64();
    eprintln!("filled in {fill_s:.1} s");
    let client = Client::new(deployment.server.base_url())?;
    let admin = client.login(ADMIN_EMAIL).await?;
    let check: serde_json::Value = client.get("/api/admin/stats/", &admin).await?;
    let messages: i64 =
        check["days"].as_array().context("stats has days")?.iter().filter_map(|d| d["messages"].as_i64()).sum();
    anyhow::ensure!(
        messages as usize == options.messages,
        "stats counted {messages} messages, not {}",
        options.messages
    );
    let today = chrono_day(now_ms());
    let mut month = Vec::new();
    let mut day = Vec::new();
    for _ in 0..options.requests {
        month.push(timed(&client, &admin, "/api/admin/stats/").await?);
        day.push(timed(&client, &admin, &format!("/api/admin/stats/?from={today}&to={today}")).await?);
    }
    month.sort_by(f64::total_cmp);
    day.sort_by(f64::total_cmp);
    Ok((fill_s, month, day))
}

async fn timed(client: &Client, token: &str, path: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let _: serde_json::Value = client.get(path, token).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}

/// `YYYY-MM-DD` of a UTC time in milliseconds.
fn chrono_day(ms: i64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Writes the rows in a few set-based statements (rows numbered by a recursive CTE).
async fn fill(deployment: &Deployment, options: &Options) -> anyhow::Result<()> {
    let url = deployment.database_url()?;
    let now = now_ms();
    let (users, messages) = (options.users as i64, options.messages as i64);
    let sessions = (messages / 100).max(1);
    let jobs = (messages / 10).max(1);
    let sqlite = deployment_backend(&url) == Backend::Sqlite;
    let pad = |n: &str| {
        if sqlite {
            format!("substr('000000000000' || ({n}), -12)")
        } else {
            format!("right('000000000000' || ({n}), 12)")
        }
    };
    let (yes, no) = if sqlite { ("1", "0") } else { ("true", "false") };
    let day_of = |ms: &str| {
        if sqlite {
            format!("strftime('%Y-%m-%d', {ms} / 1000, 'unixepoch')")
        } else {
            format!("to_char(to_timestamp({ms} / 1000) at time zone 'UTC', 'YYYY-MM-DD')")
        }
    };
    let rows = |n: i64| {
        format!("with recursive n(i) as (select cast(1 as bigint) union all select i + 1 from n where i < {n})")
    };
    // Spread over the 30 days the default range covers (today and the 29 before it).
    let at = format!("({now} - (i % 29) * {DAY_MS} - (i % 86400) * 997 % {DAY_MS})");
    let user = |i: &str| format!("'00000000-0000-7000-9000-' || {}", pad(&format!("({i}) % {users} + 1")));
    let statements = [
        format!(
            "insert into users (id, email, email_lower, password_hash, email_verified, is_admin, is_active, \
             date_joined, created_at, updated_at)
             {} select '00000000-0000-7000-9000-' || {}, 'bench-' || i || '@example.com', \
             'bench-' || i || '@example.com', 'x', {yes}, {no}, {yes}, {at}, {at}, {at} from n",
            rows(users),
            pad("i")
        ),
        format!(
            "insert into chat_sessions (id, user_id, title, created_at, updated_at)
             {} select '00000000-0000-7000-a000-' || {}, {}, 'Bench', {at}, {at} from n",
            rows(sessions),
            pad("i"),
            user("i")
        ),
        format!(
            "insert into chat_messages (id, session_id, user_id, role, content, status, created_at, updated_at)
             {} select '00000000-0000-7000-8000-' || {}, '00000000-0000-7000-a000-' || {}, {}, \
             'user', 'x', 'complete', {at}, {at} from n",
            rows(messages),
            pad("i"),
            pad(&format!("i % {sessions} + 1")),
            // The session's own user.
            user(&format!("i % {sessions} + 1"))
        ),
        format!(
            "insert into parley_jobs (id, kind, queue, payload, status, attempts, max_attempts, run_after, \
             created_at, started_at, finished_at, updated_at)
             {} select '00000000-0000-7000-b000-' || {}, 'noop', 'default', '{{}}', 'succeeded', 1, 1, {at}, \
             {at}, {at} - i % 2000, {at}, {at} from n",
            rows(jobs),
            pad("i")
        ),
        format!(
            "insert into token_usage (id, user_id, job_id, attempt, kind, model, day, prompt_tokens, \
             completion_tokens, counted_by, outcome, created_at, updated_at)
             {} select '00000000-0000-7000-c000-' || {}, {}, '00000000-0000-7000-b000-' || {}, 1, 'chat', \
             'model-' || (i % 3), {}, 10, 20, 'provider', 'succeeded', {at}, {at} from n",
            rows(jobs),
            pad("i"),
            user("i"),
            pad("i"),
            day_of(&at)
        ),
    ];
    if sqlite {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.context("opening the SQLite database")?;
        for sql in &statements {
            sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut conn).await.with_context(|| sql.clone())?;
        }
        sqlx::query("analyze").execute(&mut conn).await?;
        let _ = conn.close().await;
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.context("connecting to PostgreSQL")?;
        for sql in &statements {
            sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut conn).await.with_context(|| sql.clone())?;
        }
        sqlx::query("analyze").execute(&mut conn).await?;
        let _ = conn.close().await;
    }
    Ok(())
}

fn deployment_backend(url: &str) -> Backend {
    if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Redis }
}
