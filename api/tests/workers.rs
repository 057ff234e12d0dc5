//! Worker processes: a killed worker's job runs again elsewhere, SIGTERM lets running jobs
//! finish, and a job run by a worker process can be watched through another API process.

mod common;

use common::{Backend, TestApp, spawn_app, spawn_app_with, spawn_peer};
use parley_shared::ids::{JobId, UserId};
use parley_shared::jobs::lifecycle;
use parley_shared::jobs::{JobStatus, Noop, QueueName};
use parley_shared::store::jobs;
use std::process::Child;
use std::time::Duration;

async fn enqueue_noop(app: &TestApp, owner: &str, noop: Noop) -> JobId {
    let owner: UserId = owner.parse().unwrap();
    let id = jobs::enqueue(&app.state.db.pool, Some(owner), &noop).await.unwrap();
    app.state.queue.wake(parley_shared::jobs::QueueName::Default);
    id
}

/// Waits until the job's handler is running: a sleeping no-op says so in a `progress` event
/// (its `running` status is written when a worker claims it, a moment before).
async fn wait_for_handler(app: &TestApp, id: JobId) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = parley_shared::store::job_events::after(&app.state.db.pool, id, 0, 100).await.unwrap();
        if events.iter().any(|e| e.event == parley_shared::store::job_events::EventType::Progress) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the job's handler never started: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    async fn a_job_whose_wake_up_was_lost_still_runs(backend: Backend) {
        // The request committed its job and its wake-up never arrived (the process died, or
        // Redis dropped the message): the job is in the queue all the same, and a worker's
        // polling finds it.
        let app = spawn_app(backend).await;
        let user = app.signup("lostwake@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut tx = app.state.db.begin_write().await.unwrap();
        let id = jobs::enqueue(&mut *tx, Some(owner), &Noop::default()).await.unwrap();
        tx.commit().await.unwrap();
        let job = app.wait_for_status(&user.access, id, "succeeded").await;
        assert_eq!(job["attempts"], 1);
    }

    async fn a_job_of_a_kind_this_build_does_not_know_is_left_alone(backend: Backend) {
        // A newer version's job in the same queue (a rolling deploy): not claimed, not
        // failed, and not in the way of the jobs this build runs.
        let app = spawn_app(backend).await;
        let user = app.signup("future@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut tx = app.state.db.begin_write().await.unwrap();
        let future = jobs::enqueue(&mut *tx, Some(owner), &Noop::default()).await.unwrap();
        sqlx::query("update parley_jobs set kind = 'future_kind' where id = $1")
            .bind(future.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let id = enqueue_noop(&app, &user.id, Noop::default()).await;
        app.wait_for_status(&user.access, id, "succeeded").await;
        let row: (String, i64) = sqlx::query_as("select status, attempts from parley_jobs where id = $1")
            .bind(future.to_string())
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
        assert_eq!(row, ("queued".to_owned(), 0));
    }

    async fn a_cancel_that_meets_the_failing_last_attempt_ends_cancelled(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("lastcancel@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let env = &app.state.job_env();
        let id = jobs::enqueue(&env.db.writer, Some(owner), &Noop::default()).await.unwrap();
        let job = lifecycle::claim(env, QueueName::Default, 10, 60_000, true).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
        assert_eq!(lifecycle::cancel(env, id).await.unwrap(), lifecycle::CancelOutcome::Requested);
        assert!(lifecycle::end(env, &job, JobStatus::Failed, Some("it broke")).await.unwrap());
        let job = app.job(&user.access, id).await;
        assert_eq!((job["status"].as_str(), job["error"].as_str()), (Some("cancelled"), Some("cancelled")), "{job}");
        let events = parley_shared::store::job_events::after(&env.db.pool, id, 0, 100).await.unwrap();
        let last = events.last().unwrap();
        assert!(last.is_terminal() && last.data.contains("cancelled"), "{events:?}");
    }

    async fn concurrent_claims_take_each_job_once(backend: Backend) {
        // Eight claimers race for the same forty jobs (a duplicate delivery is two of them
        // taking one job): every job is taken exactly once.
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("claims@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.push(jobs::enqueue(&app.state.db.writer, Some(owner), &Noop::default()).await.unwrap());
        }
        let claimers = (0..8).map(|_| {
            let env = app.state.job_env();
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let batch = lifecycle::claim(&env, QueueName::Default, 3, 60_000, true).await.unwrap();
                    if batch.is_empty() {
                        return taken;
                    }
                    taken.extend(batch.into_iter().map(|j| j.id));
                }
            })
        });
        let mut taken: Vec<JobId> = futures::future::join_all(claimers).await.into_iter().flat_map(Result::unwrap).collect();
        taken.sort();
        let before = taken.len();
        taken.dedup();
        assert_eq!(before, taken.len(), "a job was claimed twice");
        ids.sort();
        // The sign-up's verification email is on the same queue.
        let noops: Vec<JobId> = taken.iter().copied().filter(|id| ids.contains(id)).collect();
        assert_eq!(noops, ids);
        // A second delivery of a job that is running (its lease is live) starts nothing.
        assert!(lifecycle::claim(&app.state.job_env(), QueueName::Default, 10, 60_000, true).await.unwrap().is_empty());
    }

    async fn a_stale_worker_cannot_record_an_outcome_after_its_job_was_taken_over(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("stale@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let id = jobs::enqueue(&app.state.db.writer, Some(owner), &Noop::default()).await.unwrap();
        let env = &app.state.job_env();
        let claim = |lease_ms| lifecycle::claim(env, QueueName::Default, 10, lease_ms, true);
        let first = claim(1).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The lease expired: another worker takes the job over (attempt 2).
        let second = claim(60_000).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
        assert_eq!((first.attempts, second.attempts), (1, 2));
        assert!(!lifecycle::succeed(env, &first, &serde_json::json!({"by": "first"})).await.unwrap());
        assert!(lifecycle::succeed(env, &second, &serde_json::json!({"by": "second"})).await.unwrap());
        let job = app.job(&user.access, id).await;
        assert_eq!((job["status"].as_str(), job["result"]["by"].as_str()), (Some("succeeded"), Some("second")));
    }

    async fn a_cancel_racing_a_finish_leaves_one_outcome_and_one_final_event(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("race@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let env = &app.state.job_env();
        let db = &env.db;
        for cancel_first in [false, true] {
            let id = jobs::enqueue(&db.writer, Some(owner), &Noop::default()).await.unwrap();
            let job = lifecycle::claim(env, QueueName::Default, 10, 60_000, true).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
            let result = serde_json::json!({"done": true});
            let (cancel, finish) = if cancel_first {
                let cancel = lifecycle::cancel(env, id).await.unwrap();
                (cancel, lifecycle::succeed(env, &job, &result).await.unwrap())
            } else {
                let finish = lifecycle::succeed(env, &job, &result).await.unwrap();
                (lifecycle::cancel(env, id).await.unwrap(), finish)
            };
            // A running job is only asked to stop: whichever comes first, the worker's
            // finish is the outcome, recorded once.
            let expected = if cancel_first { lifecycle::CancelOutcome::Requested } else { lifecycle::CancelOutcome::Finished };
            assert_eq!((cancel, finish), (expected, true));
            let events = parley_shared::store::job_events::after(&db.pool, id, 0, 100).await.unwrap();
            let finals: Vec<&str> = events.iter().filter(|e| e.is_terminal()).map(|e| e.event.as_str()).collect();
            assert_eq!(finals, ["done"], "{events:?}");
            assert_eq!(app.job(&user.access, id).await["status"], "succeeded");
            // A cancel that ends the attempt first wins the same way: the finish is refused.
            let id = jobs::enqueue(&db.writer, Some(owner), &Noop::default()).await.unwrap();
            let job = lifecycle::claim(env, QueueName::Default, 10, 60_000, true).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
            assert!(lifecycle::end(env, &job, JobStatus::Cancelled, None).await.unwrap());
            assert!(!lifecycle::succeed(env, &job, &result).await.unwrap());
            let events = parley_shared::store::job_events::after(&db.pool, id, 0, 100).await.unwrap();
            assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1, "{events:?}");
            assert_eq!(app.job(&user.access, id).await["status"], "cancelled");
        }
    }

    async fn successes_written_together_record_each_attempt_once(backend: Backend) {
        // Successes that arrive together are written together: each owning attempt gets its
        // outcome and one `done` event; a stale attempt and a second report of the same
        // attempt, in the same burst, record nothing.
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("burst@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let env = &app.state.job_env();
        let db = &env.db;
        let mut ids = Vec::new();
        for _ in 0..30 {
            ids.push(jobs::enqueue(&db.writer, Some(owner), &Noop::default()).await.unwrap());
        }
        let taken = lifecycle::claim(env, QueueName::Default, 100, 60_000, true).await.unwrap();
        let jobs: Vec<_> = taken.into_iter().filter(|j| ids.contains(&j.id)).collect();
        assert_eq!(jobs.len(), ids.len());
        let stale_id = jobs::enqueue(&db.writer, Some(owner), &Noop::default()).await.unwrap();
        let claim = |lease_ms| lifecycle::claim(env, QueueName::Default, 10, lease_ms, true);
        let stale = claim(1).await.unwrap().into_iter().find(|j| j.id == stale_id).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let current = claim(60_000).await.unwrap().into_iter().find(|j| j.id == stale_id).unwrap();
        let result = serde_json::json!({"ok": true});
        let mut reports: Vec<&parley_shared::store::jobs::Job> = jobs.iter().collect();
        reports.extend([&jobs[0], &stale, &current, &jobs[1]]);
        let owned = futures::future::join_all(reports.iter().map(|job| lifecycle::succeed(env, job, &result))).await;
        let owned: Vec<bool> = owned.into_iter().map(Result::unwrap).collect();
        let n = jobs.len();
        // Of two reports of one attempt, whichever the write took first is the one recorded.
        assert!(owned[0] ^ owned[n] && owned[1] ^ owned[n + 3], "{owned:?}");
        assert!(owned[2..n].iter().all(|o| *o), "{owned:?}");
        assert_eq!((owned[n + 1], owned[n + 2]), (false, true), "stale, then current attempt");
        for id in ids.iter().chain([&stale_id]) {
            let events = parley_shared::store::job_events::after(&db.pool, *id, 0, 100).await.unwrap();
            let finals: Vec<&str> = events.iter().filter(|e| e.is_terminal()).map(|e| e.event.as_str()).collect();
            assert_eq!(finals, ["done"], "{events:?}");
            let mut seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            seqs.dedup();
            assert_eq!(seqs.len(), events.len(), "{events:?}");
            assert_eq!(app.job(&user.access, *id).await["status"], "succeeded");
        }
        // One statement given a stale entry and the same attempt twice records the owning
        // attempt once.
        let id = jobs::enqueue(&db.writer, Some(owner), &Noop::default()).await.unwrap();
        let job = claim(60_000).await.unwrap().into_iter().find(|j| j.id == id).unwrap();
        let entry = |attempt| jobs::Success {
            id,
            attempt,
            result: result.to_string(),
            data: serde_json::json!({"status": "succeeded", "result": result}).to_string(),
        };
        let batch = [entry(job.attempts + 1), entry(job.attempts), entry(job.attempts)];
        if backend == Backend::Sqlite {
            let mut tx = db.begin_write().await.unwrap();
            let written = jobs::succeed_many_in(&mut tx, &batch).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(written, [(id.to_string(), job.attempts)]);
            assert_eq!(app.job(&user.access, id).await["status"], "succeeded");
        } else {
            let written = jobs::succeed_many_with_events(&db.writer, &batch).await.unwrap();
            assert_eq!(written.len(), 1, "{written:?}");
            assert!(written[0].0 == 1 || written[0].0 == 2, "{written:?}");
            let events = parley_shared::store::job_events::after(&db.pool, id, 0, 100).await.unwrap();
            assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1, "{events:?}");
            assert_eq!(events.last().unwrap().seq, written[0].1);
        }
    }

    async fn a_cancel_reaches_a_job_running_in_a_worker_process(backend: Backend) {
        // The cancel goes from this API process to the worker process through the event bus
        // (in-process bus on SQLite: there the worker process sees the request at its next
        // lease renewal, within a third of the lease).
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0"), ("PARLEY_JOB_LEASE_SECS", "3")]).await;
        let user = app.signup("xcancel@example.com").await;
        let mut worker = app.spawn_worker_process();
        let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 60_000, ..Noop::default() }).await;
        app.wait_for_status(&user.access, id, "running").await;
        let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &serde_json::Value::Null, Some(&user.access)).await;
        assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
        let job = app.wait_for_status(&user.access, id, "cancelled").await;
        assert_eq!(job["attempts"], 1);
        signal(&worker, "KILL");
        let _ = worker.wait();
    }

    async fn a_job_written_in_a_rolled_back_transaction_never_runs(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("rollback@example.com").await;
        let owner: UserId = user.id.parse().unwrap();
        let mut tx = app.state.db.begin_write().await.unwrap();
        let id = jobs::enqueue(&mut *tx, Some(owner), &Noop::default()).await.unwrap();
        app.state.queue.wake(parley_shared::jobs::QueueName::Default);
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
        wait_for_handler(&app, id).await;
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
    // running, sleeping, retrying; running, sleeping, done.
    assert_eq!(kinds, ["status", "progress", "status", "status", "progress", "done"], "{events:?}");
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    signal(&worker, "KILL");
    let _ = worker.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_outlive_a_database_outage_and_run_jobs_accepted_after_it() {
    let Some(base) = common::postgres_url() else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the database outage test");
        return;
    };
    let app = spawn_app_with(Backend::Postgres, &[("PARLEY_QUEUE_POLL_MS", "100")]).await;
    let user = app.signup("outage@example.com").await;
    let name = app.vars["PARLEY_DATABASE_URL"].rsplit('/').next().unwrap().to_owned();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.unwrap();
    let run = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
    // The database goes away: every connection is cut, and new ones are refused.
    run(format!("alter database {name} allow_connections false")).execute(&mut admin).await.unwrap();
    run(format!("select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"))
        .execute(&mut admin)
        .await
        .unwrap();
    // Long enough for the workers' claims to fail several times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run(format!("alter database {name} allow_connections true")).execute(&mut admin).await.unwrap();
    let owner: UserId = user.id.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let id = loop {
        // The pool's first tries may meet the connections that were cut.
        match jobs::enqueue(&app.state.db.writer, Some(owner), &Noop::default()).await {
            Ok(id) => break id,
            Err(e) => assert!(std::time::Instant::now() < deadline, "the database never came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    app.state.queue.wake(QueueName::Default);
    let job = app.wait_for_status(&user.access, id, "succeeded").await;
    assert_eq!(job["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_while_redis_is_down_still_run() {
    if common::postgres_url().is_none() {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the Redis outage test");
        return;
    }
    // A Redis of this test's own, to kill.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start_redis = || {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts")
    };
    let mut redis = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the test's Redis never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            ("PARLEY_QUEUE_URL", &url),
            ("PARLEY_ADMIN_EMAIL", "root@example.com"),
            ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1"),
        ],
    )
    .await;
    let admin = app.signin("root@example.com", "admin passphrase 1").await;
    signal(&redis, "KILL");
    let _ = redis.wait();
    // Wake-ups and events cannot be published; the job is accepted and runs all the same.
    let res = app.post_json("/api/admin/jobs/noop/", &serde_json::json!({}), Some(&admin.access)).await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let id = res.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let job = app.wait_for_status(&admin.access, &id, "succeeded").await;
    assert_eq!(job["attempts"], 1);
    // Redis comes back: a job's stream runs to `done` as before.
    let mut redis = start_redis();
    let res = app.post_json("/api/admin/jobs/noop/", &serde_json::json!({}), Some(&admin.access)).await;
    let id = res.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let events = common::sse::collect(&app, &admin.access, &format!("/api/jobs/{id}/events/"), None).await;
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    signal(&redis, "KILL");
    let _ = redis.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_off_by_the_shutdown_grace_with_a_cancel_pending_ends_cancelled_with_its_final_event() {
    // SQLite: the API process's in-process bus does not reach the worker process, which
    // would only see the cancel at its next lease renewal, 20 s away.
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("PARLEY_WORKERS", "0"), ("PARLEY_SHUTDOWN_GRACE_SECS", "1"), ("PARLEY_JOB_LEASE_SECS", "60")],
    )
    .await;
    let user = app.signup("handbackcancel@example.com").await;
    let mut worker = app.spawn_worker_process();
    let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 30_000, ..Noop::default() }).await;
    wait_for_handler(&app, id).await;
    let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &serde_json::Value::Null, Some(&user.access)).await;
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    signal(&worker, "TERM");
    assert!(wait_exit(&mut worker, Duration::from_secs(15)).await);
    let job = app.job(&user.access, id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
    assert_eq!(events.last().unwrap().data["status"], "cancelled", "{events:?}");
}
