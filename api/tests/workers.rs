//! Worker processes: a killed worker's job runs again elsewhere, SIGTERM lets running jobs
//! finish, and a job run by a worker process can be watched through another API process.

mod common;

use common::{Backend, TestApp, spawn_app, spawn_app_with, spawn_peer};
use parley_shared::ids::{JobId, UserId};
use parley_shared::jobs::{JobKind, Noop};
use parley_shared::store::jobs;
use std::process::Child;
use std::time::Duration;

async fn enqueue_noop(app: &TestApp, owner: &str, noop: Noop) -> JobId {
    let owner: UserId = owner.parse().unwrap();
    let id = jobs::enqueue(&app.state.db.pool, JobKind::Noop, Some(owner), &noop).await.unwrap();
    app.state.queue.notify_outbox();
    id
}

fn signal(child: &Child, sig: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

/// Waits for the child to exit (with a deadline) and returns whether it exited cleanly.
async fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        assert!(std::time::Instant::now() < deadline, "the worker process did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends! {
    async fn a_job_whose_push_was_lost_after_commit_still_runs(backend: Backend) {
        // The process that committed the job claimed it for dispatch and died before the
        // push: the sweep hands it over again.
        let app = spawn_app_with(backend, &[("PARLEY_JOB_LEASE_SECS", "1")]).await;
        let user = app.signup("lostpush@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut tx = app.state.db.pool.begin().await.unwrap();
        let id = jobs::enqueue(&mut *tx, JobKind::Noop, Some(owner), &Noop::default()).await.unwrap();
        sqlx::query("update parley_jobs set dispatched_at = $2 where id = $1")
            .bind(id.to_string())
            .bind(parley_shared::time::now_ms())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let job = app.wait_for_status(&user.access, id, "succeeded").await;
        assert_eq!(job["attempts"], 1);
    }

    async fn a_job_written_in_a_rolled_back_transaction_never_runs(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("rollback@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut tx = app.state.db.pool.begin().await.unwrap();
        let id = jobs::enqueue(&mut *tx, JobKind::Noop, Some(owner), &Noop::default()).await.unwrap();
        app.state.queue.notify_outbox();
        tx.rollback().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(jobs::get(&app.state.db.pool, id).await.unwrap().is_none());
        let res = app.client.get(app.url(&format!("/api/jobs/{id}/"))).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::NOT_FOUND);
    }

    async fn a_job_of_a_killed_worker_runs_again_on_another_worker(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0"), ("PARLEY_JOB_LEASE_SECS", "2")]).await;
        let user = app.signup("kill@example.com").await;
        let mut first = app.spawn_worker_process();
        let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 2_000, ..Noop::default() }).await;
        app.wait_for_status(&user.access, id, "running").await;
        signal(&first, "KILL");
        let _ = first.wait();
        let mut second = app.spawn_worker_process();
        let job = app.wait_for_status(&user.access, id, "succeeded").await;
        assert_eq!(job["attempts"], 2, "{job}");
        signal(&second, "KILL");
        let _ = second.wait();
    }

    async fn sigterm_lets_the_running_job_finish_before_the_worker_exits(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("term@example.com").await;
        let mut worker = app.spawn_worker_process();
        let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 1_500, ..Noop::default() }).await;
        app.wait_for_status(&user.access, id, "running").await;
        signal(&worker, "TERM");
        assert!(wait_exit(&mut worker, Duration::from_secs(15)).await, "the worker exits cleanly");
        let job = app.job(&user.access, id).await;
        assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_the_shutdown_grace_is_handed_back_at_once() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("PARLEY_WORKERS", "0"), ("PARLEY_SHUTDOWN_GRACE_SECS", "1"), ("PARLEY_JOB_LEASE_SECS", "60")],
    )
    .await;
    let user = app.signup("handback@example.com").await;
    let mut worker = app.spawn_worker_process();
    let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 30_000, ..Noop::default() }).await;
    app.wait_for_status(&user.access, id, "running").await;
    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(15)).await);
    // Back in the queue without waiting for the 60 s lease, and not counted as an attempt.
    let job = app.job(&user.access, id).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("retrying"), Some(0)), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_by_a_worker_process_is_watched_through_a_second_api_process() {
    if common::postgres_url().is_none() {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the distributed test");
        return;
    }
    let first = spawn_app_with(Backend::Postgres, &[("PARLEY_WORKERS", "0")]).await;
    let second = spawn_peer(&first).await;
    let user = first.signup("watch@example.com").await;
    let mut worker = first.spawn_worker_process();
    let id = enqueue_noop(&first, &user.id, Noop { sleep_ms: 300, fail_times: 1, ..Noop::default() }).await;
    let events = common::sse::collect(&second, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["status", "status", "status", "done"], "{events:?}");
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    signal(&worker, "KILL");
    let _ = worker.wait();
}
