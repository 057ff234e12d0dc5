//! An export of 100,000 messages streams them a page at a time (and stops at a cancel): the process's memory,
//! sampled while it runs, grows by less than the messages' size, and every message is in the zip. Its own
//! test binary, so that no other test moves the peak.

mod common;

use common::{Backend, TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Read;

const MESSAGES: i64 = 100_000;
/// Text per message: 100,000 of them hold 100 MB.
const TEXT_BYTES: usize = 1000;

/// Resident memory of this process now, in KiB.
fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A session of `user` with MESSAGES messages, written in one statement.
async fn fill(app: &TestApp, backend: Backend, user: &str) -> String {
    let session = uuid::Uuid::now_v7().to_string();
    sqlx::query("insert into chat_sessions (id, user_id, title, created_at, updated_at) values ($1, $2, 'Big', 1, 1)")
        .bind(&session)
        .bind(user)
        .execute(&app.state.db.writer)
        .await
        .unwrap();
    // Ids `00000000-0000-7000-8000-<12 digits>` sort in insertion order.
    let pad = match backend {
        Backend::Sqlite => "substr('000000000000' || i, -12)",
        Backend::Postgres => "right('000000000000' || i, 12)",
    };
    let text = "x".repeat(TEXT_BYTES);
    let sql = format!(
        "insert into chat_messages (id, session_id, user_id, role, content, status, created_at, updated_at)
         with recursive n(i) as (select 1 union all select i + 1 from n where i < {MESSAGES})
         select '00000000-0000-7000-8000-' || {pad}, $1, $2, 'user', $3, 'complete', i, i from n"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&session)
        .bind(user)
        .bind(text)
        .execute(&app.state.db.writer)
        .await
        .unwrap();
    session
}

/// The two variants take turns: each measures the process's peak alone.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

both_backends! {
    async fn an_export_of_100_000_messages_keeps_memory_flat(backend: Backend) {
        let _alone = ALONE.lock().await;
        let app = spawn_app(backend).await;
        let user = app.signup("big@example.com").await;
        let session = fill(&app, backend, &user.id).await;

        let before = rss_kib();
        // The most memory the process holds while the export runs, sampled every 5 ms.
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(async move {
            let mut peak = rss_kib();
            while !*stopped.borrow() {
                peak = peak.max(rss_kib());
                let _ = tokio::time::timeout(std::time::Duration::from_millis(5), stopped.changed()).await;
            }
            peak
        });
        let res = app.post_json("/api/users/me/export/", &json!({}), Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let accepted: Value = res.json().await.unwrap();
        let job = app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
        stop.send(true).unwrap();
        let grown_mib = (sampler.await.unwrap() - before) / 1024;
        let content_mib = (MESSAGES as usize * TEXT_BYTES / (1024 * 1024)) as i64;
        // Holding the messages would take more than their text (and the JSON and Markdown
        // files each write every message).
        eprintln!("{backend:?}: memory grew at most {grown_mib} MiB for {content_mib} MiB of messages");
        assert!(grown_mib < content_mib / 2, "peak memory grew {grown_mib} MiB for {content_mib} MiB of messages");

        let res = app.client.get(app.url(job["result"]["download_url"].as_str().unwrap())).bearer_auth(&user.access).send().await.unwrap();
        let bytes = res.bytes().await.unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut json = String::new();
        archive.by_name(&format!("sessions/{session}.json")).unwrap().read_to_string(&mut json).unwrap();
        let convo: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(convo["messages"].as_array().unwrap().len() as i64, MESSAGES);
    }
}

both_backends! {
    async fn a_cancel_stops_a_running_export_and_removes_its_partial_file(backend: Backend) {
        let _alone = ALONE.lock().await;
        let app = spawn_app(backend).await;
        let user = app.signup("cancelled@example.com").await;
        fill(&app, backend, &user.id).await;

        let res = app.post_json("/api/users/me/export/", &json!({}), Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let accepted: Value = res.json().await.unwrap();
        let job_id = accepted["job_id"].as_str().unwrap();
        app.wait_for_status(&user.access, job_id, "running").await;
        let res = app.post_json(&format!("/api/jobs/{job_id}/cancel/"), &json!({}), Some(&user.access)).await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        let job = app.wait_for_status(&user.access, job_id, "cancelled").await;
        assert!(job["result"].is_null(), "{job}");

        // Nothing was stored, and the scratch file is gone.
        let key: Option<String> = sqlx::query_scalar("select storage_key from exports where id = $1")
            .bind(accepted["export_id"].as_str().unwrap())
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
        assert!(key.is_none(), "a cancelled export stores no file");
        let dir = std::path::Path::new(&app.vars["PARLEY_EXPORT_DIR"]);
        let files: Vec<_> = walk(dir);
        assert!(files.is_empty(), "no file is left behind: {files:?}");
        let res = app.client.get(app.url(&format!("/api/exports/{}/download/", accepted["export_id"].as_str().unwrap())))
            .bearer_auth(&user.access).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] }).collect()
}
