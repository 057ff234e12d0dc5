//! The job system end to end: dispatch, retries with backoff, attempt limits, cancellation,
//! resumable SSE, and ownership.

mod common;

use common::{Backend, TestApp, assert_error, spawn_app, spawn_app_with};
use parley_shared::ids::{JobId, UserId};
use parley_shared::jobs::Noop;
use parley_shared::store::jobs;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn enqueue_noop(app: &TestApp, owner: &str, noop: Noop) -> JobId {
    let owner: UserId = owner.parse().unwrap();
    let id = jobs::enqueue(&app.state.db.pool, Some(owner), &noop).await.unwrap();
    app.state.queue.wake(parley_shared::jobs::QueueName::Default);
    id
}

both_backends! {
    async fn idle_workers_wake_on_push_not_on_the_poll_interval(backend: Backend) {
        // Polling far apart: only a pushed wake-up can start a job soon.
        let app = spawn_app_with(backend, &[("PARLEY_QUEUE_POLL_MS", "60000")]).await;
        let user = app.signup("push@example.com").await;
        // Let the workers go idle.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..3 {
            let id = enqueue_noop(&app, &user.id, Noop::default()).await;
            let started = std::time::Instant::now();
            loop {
                if app.job(&user.access, id).await["status"] == "succeeded" {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "the job waited for a poll");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn a_job_runs_and_its_event_stream_ends_with_done(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("jobs@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop::default()).await;
        let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["status", "done"], "{events:?}");
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
        let job = app.job(&user.access, id).await;
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["attempts"], 1);
        assert_eq!(job["result"]["attempt"], 1);
        assert!(job["finished_at"].is_string());
    }

    async fn failed_attempts_are_retried_with_growing_delays(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("retry@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop { fail_times: 3, ..Noop::default() }).await;
        let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        let delays: Vec<u64> = events.iter().filter(|e| e.data["status"] == "retrying")
            .map(|e| e.data["retry_in_ms"].as_u64().unwrap()).collect();
        assert_eq!(delays.len(), 3, "{events:?}");
        // Exponential with jitter in [d/2, d]: 200ms, 400ms, 800ms nominal.
        for (i, d) in delays.iter().enumerate() {
            let nominal = 200u64 << i;
            assert!((nominal / 2..=nominal).contains(d), "retry {i}: {d} ms");
        }
        assert_eq!(events.last().unwrap().event, "done");
        assert_eq!(app.job(&user.access, id).await["attempts"], 4);
    }

    async fn a_job_fails_after_its_attempt_limit(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("limit@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop { fail_times: 99, ..Noop::default() }).await;
        let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        assert_eq!(events.last().unwrap().event, "error");
        let job = app.job(&user.access, id).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(job["attempts"], job["max_attempts"]);
        assert!(job["error"].as_str().unwrap().contains("planned failure"), "{job}");
    }

    async fn a_fatal_error_is_not_retried(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("fatal@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop { fail_times: 1, fatal: true, ..Noop::default() }).await;
        common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        let job = app.job(&user.access, id).await;
        assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("failed"), Some(1)));
    }

    async fn cancelling_a_running_job_stops_it_within_a_second(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("cancel@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop { sleep_ms: 30_000, ..Noop::default() }).await;
        app.wait_for_status(&user.access, id, "running").await;
        let started = std::time::Instant::now();
        let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        app.wait_for_status(&user.access, id, "cancelled").await;
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        assert_eq!(events.last().unwrap().data["status"], "cancelled");
        let again = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&user.access)).await;
        assert_error(again, StatusCode::CONFLICT, "job_finished").await;
    }

    async fn a_stream_resumes_after_the_last_event_id_exactly_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("resume@example.com").await;
        let id = enqueue_noop(&app, &user.id, Noop { fail_times: 2, ..Noop::default() }).await;
        let all = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), None).await;
        assert!(all.len() >= 5, "{all:?}");
        let resumed = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), Some(2)).await;
        assert_eq!(resumed, all[2..].to_vec());
        let by_query = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/?starting_after=3"), None).await;
        assert_eq!(by_query, all[3..].to_vec());
        // Resuming after the final event ends at once, with nothing.
        let after_end = common::sse::collect(&app, &user.access, &format!("/api/jobs/{id}/events/"), Some(all.last().unwrap().id)).await;
        assert!(after_end.is_empty());
    }

    async fn another_users_job_is_a_404_and_lists_are_per_user(backend: Backend) {
        let app = spawn_app(backend).await;
        let owner = app.signup("owner@example.com").await;
        let other = app.signup("other@example.com").await;
        let id = enqueue_noop(&app, &owner.id, Noop::default()).await;
        for path in [format!("/api/jobs/{id}/"), format!("/api/jobs/{id}/events/")] {
            let res = app.client.get(app.url(&path)).bearer_auth(&other.access).send().await.unwrap();
            assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        }
        let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&other.access)).await;
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let list: Value = app.client.get(app.url("/api/jobs/")).bearer_auth(&other.access).send().await.unwrap().json().await.unwrap();
        let items = list["items"].as_array().unwrap();
        // Only the other user's own verification email job.
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["kind"], "send_email");
    }

    async fn the_event_streams_of_long_finished_jobs_are_pruned(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("prune@example.com").await;
        let old = enqueue_noop(&app, &user.id, Noop::default()).await;
        let recent = enqueue_noop(&app, &user.id, Noop::default()).await;
        for id in [old, recent] {
            app.wait_for_status(&user.access, id, "succeeded").await;
        }
        let day = 86_400_000i64;
        sqlx::query("update parley_jobs set finished_at = finished_at - $2 where id = $1")
            .bind(old.to_string()).bind(2 * day).execute(&app.state.db.pool).await.unwrap();
        let before = parley_shared::time::now_ms() - day;
        let pruned = parley_shared::store::job_events::prune_finished(&app.state.db.pool, before).await.unwrap();
        assert_eq!(pruned, 2, "the old job's status and done events");
        assert!(parley_shared::store::job_events::after(&app.state.db.pool, old, 0, 10).await.unwrap().is_empty());
        assert_eq!(parley_shared::store::job_events::after(&app.state.db.pool, recent, 0, 10).await.unwrap().len(), 2);
    }

    async fn job_lists_paginate_and_filter_by_status(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("pages@example.com").await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(enqueue_noop(&app, &user.id, Noop::default()).await);
        }
        for id in &ids {
            app.wait_for_status(&user.access, *id, "succeeded").await;
        }
        let get = |q: String| {
            let req = app.client.get(app.url(&format!("/api/jobs/{q}"))).bearer_auth(&user.access);
            async move { req.send().await.unwrap() }
        };
        let first: Value = get("?limit=2".into()).await.json().await.unwrap();
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        assert_eq!(first["items"][0]["id"], ids[4].to_string());
        let cursor = first["next_cursor"].as_str().unwrap();
        let second: Value = get(format!("?limit=2&cursor={cursor}")).await.json().await.unwrap();
        assert_eq!(second["items"][0]["id"], ids[2].to_string());
        let third: Value = get(format!("?limit=2&cursor={}", second["next_cursor"].as_str().unwrap())).await.json().await.unwrap();
        // The last page: the first noop job and, oldest, the verification email of sign-up.
        assert_eq!(third["items"].as_array().unwrap().len(), 2);
        assert_eq!(third["items"][0]["id"], ids[0].to_string());
        assert_eq!(third["items"][1]["kind"], "send_email");
        assert!(third["next_cursor"].is_null());
        let failed: Value = get("?status=failed".into()).await.json().await.unwrap();
        assert_eq!(failed["items"].as_array().unwrap().len(), 0);
        assert_error(get("?status=bogus".into()).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(get("?limit=0".into()).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(get("?cursor=zzz".into()).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }
}
