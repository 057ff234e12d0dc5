//! Scheduled jobs: two processes (each with its workers and scheduler) on one database run
//! each tick of each schedule exactly once; the admin list shows the last and next runs.

mod common;

use common::{Backend, TestApp, assert_error, spawn_app_with, spawn_peer};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("root@example.com", "admin passphrase 1");

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&app.state.db.pool).await.unwrap()
}

both_backends! {
    async fn each_tick_of_a_schedule_runs_once_across_two_worker_processes(backend: Backend) {
        let vars = [
            ("PARLEY_ADMIN_EMAIL", ADMIN.0),
            ("PARLEY_ADMIN_PASSWORD", ADMIN.1),
            ("PARLEY_SCHEDULES", "prune_job_events=1,prune_email_tokens=1"),
        ];
        let app = spawn_app_with(backend, &vars).await;
        let peer = spawn_peer(&app).await;
        let user = app.signup("tokens@example.com").await;
        // An expired verification token: the next prune_email_tokens tick deletes it.
        sqlx::query("insert into email_tokens (token_hash, user_id, purpose, expires_at, created_at, updated_at) values ('old', $1, 'verify_email', 1, 1, 1)")
            .bind(&user.id).execute(&app.state.db.writer).await.unwrap();

        tokio::time::sleep(Duration::from_millis(3500)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while scalar(&app, "select count(*) from parley_jobs where kind = 'scheduled' and status <> 'succeeded'").await > 0 {
            assert!(Instant::now() < deadline, "scheduled jobs never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let runs = scalar(&app, "select count(*) from schedule_runs where schedule = 'prune_job_events'").await;
        let jobs = scalar(&app, "select count(*) from parley_jobs where kind = 'scheduled' and payload like '%prune_job_events%'").await;
        assert!(runs >= 3, "a tick a second for 3.5 s: {runs}");
        assert_eq!(jobs, runs, "one job per tick, however many processes look");
        for hourly in ["prune_exports", "prune_audit", "prune_sessions", "rollup_usage"] {
            let sql = format!("select count(*) from parley_jobs where kind = 'scheduled' and payload like '%{hourly}%'");
            assert_eq!(scalar(&app, &sql).await, 1, "{hourly} ran once for its current tick");
        }
        assert_eq!(scalar(&app, "select count(*) from email_tokens where token_hash = 'old'").await, 0, "the expired token was pruned");

        let admin = peer.signin(ADMIN.0, ADMIN.1).await;
        let res = peer.client.get(peer.url("/api/admin/schedules/")).bearer_auth(&admin.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let list: Value = res.json().await.unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        let events = items.iter().find(|s| s["name"] == "prune_job_events").unwrap();
        assert_eq!(events["every_secs"], 1);
        assert_eq!(events["last_run"]["status"], "succeeded", "{events}");
        let sessions = items.iter().find(|s| s["name"] == "prune_sessions").unwrap();
        assert_eq!(sessions["every_secs"], 21600);
        let next: chrono::DateTime<chrono::Utc> = sessions["next_run_at"].as_str().unwrap().parse().unwrap();
        assert!(next > chrono::Utc::now());
        let last: chrono::DateTime<chrono::Utc> = sessions["last_run"]["tick_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(next - last, chrono::Duration::hours(6));

        let res = app.client.get(app.url("/api/admin/schedules/")).bearer_auth(&user.access).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
}
