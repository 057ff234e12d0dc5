//! Admin queue operations: stats, all jobs, retrying a failed job, the no-op check job.

mod common;

use common::{Backend, assert_error, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends! {
    async fn admins_see_every_job_and_can_retry_a_failed_one(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")]).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let user = app.signup("plain@example.com").await;
        // Users cannot use admin routes.
        for path in ["/api/admin/queues/", "/api/admin/jobs/"] {
            let res = app.client.get(app.url(path)).bearer_auth(&user.access).send().await.unwrap();
            assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;
        }
        let res = app.post_json("/api/admin/jobs/noop/", &json!({}), Some(&user.access)).await;
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;

        let res = app.post_json("/api/admin/jobs/noop/", &json!({"fail_times": 1, "fatal": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
        app.wait_for_status(&admin.access, &id, "failed").await;
        let stats: Value = app.client.get(app.url("/api/admin/queues/")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["queue_reachable"], true);
        assert_eq!(stats["jobs"]["failed"], 1);
        let all: Value = app.client.get(app.url("/api/admin/jobs/?status=failed")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(all["items"][0]["id"], id.as_str());
        // The user's verification email job is visible to the admin too.
        let everything: Value = app.client.get(app.url("/api/admin/jobs/")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        assert!(everything["items"].as_array().unwrap().iter().any(|j| j["kind"] == "send_email"));

        // The retry runs it again with a fresh budget (it fails again: its planned failure is
        // on attempt 1).
        let res = app.post_json(&format!("/api/admin/jobs/{id}/retry/"), &Value::Null, Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job = app.wait_for_status(&admin.access, &id, "failed").await;
        assert_eq!(job["attempts"], 1, "a fresh attempt budget: {job}");
        let ok = app.post_json("/api/admin/jobs/noop/", &json!({}), Some(&admin.access)).await.json::<Value>().await.unwrap();
        let ok_id = ok["job_id"].as_str().unwrap();
        app.wait_for_status(&admin.access, ok_id, "succeeded").await;
        let res = app.post_json(&format!("/api/admin/jobs/{ok_id}/retry/"), &Value::Null, Some(&admin.access)).await;
        assert_error(res, StatusCode::CONFLICT, "not_retryable").await;
    }

    async fn a_no_op_job_asked_for_with_accept_event_stream_answers_with_its_stream(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")]).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let post = |body: Value| {
            app.client
                .post(app.url("/api/admin/jobs/noop/"))
                .bearer_auth(&admin.access)
                .header("accept", "text/event-stream")
                .json(&body)
                .send()
        };
        let events = common::sse::read(post(json!({})).await.unwrap()).await;
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names.first(), Some(&"status"), "{events:?}");
        assert_eq!(names.last(), Some(&"done"), "{events:?}");
        assert_eq!(events.last().unwrap().data["status"], "succeeded", "{events:?}");
        // A failing job's stream ends with its error; a bad body is still a 422, not a stream.
        let events = common::sse::read(post(json!({"fail_times": 1, "fatal": true})).await.unwrap()).await;
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("error"), "{events:?}");
        assert_error(post(json!({"sleep_ms": 700_000})).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }
}
