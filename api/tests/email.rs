//! Email flows end to end: verification and password reset through the file transport, and
//! delivery through SMTP to a sink.

mod common;

use common::smtp_sink::SmtpSink;
use common::{Backend, PASSWORD, assert_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Runs a finished job again from the start, as a redelivery after a crash would, and waits
/// for that new attempt to end with `status`.
async fn run_again(app: &common::TestApp, token: &str, id: &str, status: &str) -> Value {
    let before = app.job(token, id).await["attempts"].as_i64().unwrap();
    sqlx::query("update parley_jobs set status = 'queued', finished_at = null, run_after = 0 where id = $1")
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    app.state.queue.wake(parley_shared::jobs::QueueName::Default);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = app.job(token, id).await;
        if job["status"] == status && job["attempts"].as_i64().unwrap() > before {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "the job never ran again: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends! {
    async fn registration_emails_a_link_that_verifies_the_address_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("verify@example.com").await;
        let mail = common::mail::wait_for(&app.mail_dir(), 1).await.remove(0);
        assert_eq!(mail.to, "verify@example.com");
        assert!(mail.subject.contains("Confirm your email"), "{}", mail.subject);
        assert!(mail.raw.contains("text/html"));
        let token = common::mail::token(&mail.text);
        assert!(token.len() >= 43, "{token}");
        let res = app.post_json("/api/auth/verify-email/", &json!({"token": token}), None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let me: Value = app.me(&user.access).await.json().await.unwrap();
        assert_eq!(me["email_verified"], true);
        let again = app.post_json("/api/auth/verify-email/", &json!({"token": token}), None).await;
        assert_error(again, StatusCode::BAD_REQUEST, "invalid_token").await;
        let resend = app.post_json("/api/auth/send-verification/", &Value::Null, Some(&user.access)).await;
        assert_error(resend, StatusCode::CONFLICT, "already_verified").await;
    }

    async fn an_email_job_run_again_sends_nothing_twice(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")]).await;
        let user = app.signup("twice@example.com").await;
        common::mail::wait_for(&app.mail_dir(), 1).await;
        let jobs: Value = app.client.get(app.url("/api/jobs/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        let job = jobs["items"].as_array().unwrap().iter().find(|j| j["kind"] == "send_email").unwrap().clone();
        let id = job["id"].as_str().unwrap().to_owned();
        let done = app.wait_for_status(&user.access, &id, "succeeded").await;
        // Sent before: the re-run reports the first message and sends nothing.
        let again = run_again(&app, &user.access, &id, "succeeded").await;
        assert_eq!(again["result"]["message_id"], done["result"]["message_id"], "{again}");
        // Cut off between the claim and the transport's answer (the outcome unknown): not
        // sent again, and the job says why.
        sqlx::query("update email_deliveries set message_id = '' where job_id = $1").bind(&id).execute(&app.state.db.pool).await.unwrap();
        let cut_off = run_again(&app, &user.access, &id, "failed").await;
        assert!(cut_off["error"].as_str().unwrap().contains("cut off while sending"), "{cut_off}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(std::fs::read_dir(app.mail_dir()).unwrap().count(), 1);
        // An admin's retry is the decision to send it after all.
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let res = app.post_json(&format!("/api/admin/jobs/{id}/retry/"), &Value::Null, Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        app.wait_for_status(&user.access, &id, "succeeded").await;
        assert_eq!(common::mail::wait_for(&app.mail_dir(), 2).await.len(), 2);
    }

    async fn send_verification_is_limited_to_one_a_minute_and_idempotent(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("resend@example.com").await;
        common::mail::wait_for(&app.mail_dir(), 1).await;
        let res = app.post_json("/api/auth/send-verification/", &Value::Null, Some(&user.access)).await;
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after));
        assert_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        // A minute later (moved back in time here), it is accepted once per key.
        sqlx::query("update parley_jobs set created_at = created_at - 120000").execute(&app.state.db.pool).await.unwrap();
        let send = || app.client.post(app.url("/api/auth/send-verification/")).bearer_auth(&user.access)
            .header("idempotency-key", "k-1").send();
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let first: Value = first.json().await.unwrap();
        let second = send().await.unwrap();
        assert_eq!(second.status(), StatusCode::ACCEPTED);
        assert_eq!(second.json::<Value>().await.unwrap(), first);
        app.wait_for_status(&user.access, first["job_id"].as_str().unwrap(), "succeeded").await;
        let mails = common::mail::wait_for(&app.mail_dir(), 2).await;
        // The newer link replaced the older one.
        assert_error(app.post_json("/api/auth/verify-email/", &json!({"token": common::mail::token(&mails[0].text)}), None).await,
            StatusCode::BAD_REQUEST, "invalid_token").await;
        let ok = app.post_json("/api/auth/verify-email/", &json!({"token": common::mail::token(&mails[1].text)}), None).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    async fn password_reset_sets_the_password_ends_sessions_and_says_so(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("reset@example.com").await;
        common::mail::wait_for(&app.mail_dir(), 1).await;
        let known = app.post_json("/api/auth/password/reset/", &json!({"email": "RESET@example.com"}), None).await;
        let unknown = app.post_json("/api/auth/password/reset/", &json!({"email": "ghost@example.com"}), None).await;
        let invalid = app.post_json("/api/auth/password/reset/", &json!({"email": "nonsense"}), None).await;
        assert_eq!((known.status(), unknown.status(), invalid.status()), (StatusCode::ACCEPTED, StatusCode::ACCEPTED, StatusCode::ACCEPTED));
        let (known, unknown): (Value, Value) = (known.json().await.unwrap(), unknown.json().await.unwrap());
        assert_eq!(known, unknown);
        let mail = common::mail::wait_for(&app.mail_dir(), 2).await.remove(1);
        assert!(mail.subject.contains("Reset"), "{}", mail.subject);
        let token = common::mail::token(&mail.text);
        // Rate limited: the same answer, and no third email.
        let limited = app.post_json("/api/auth/password/reset/", &json!({"email": "reset@example.com"}), None).await;
        assert_eq!(limited.status(), StatusCode::ACCEPTED);
        assert_eq!(limited.json::<Value>().await.unwrap(), known);

        let weak = app.post_json("/api/auth/password/reset/confirm/", &json!({"token": token, "new_password": "password"}), None).await;
        assert_error(weak, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let bad = app.post_json("/api/auth/password/reset/confirm/", &json!({"token": "nope", "new_password": "a fresh passphrase"}), None).await;
        assert_error(bad, StatusCode::BAD_REQUEST, "invalid_token").await;
        let ok = app.post_json("/api/auth/password/reset/confirm/", &json!({"token": token, "new_password": "a fresh passphrase"}), None).await;
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login("reset@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login("reset@example.com", "a fresh passphrase").await.status(), StatusCode::OK);
        let reused = app.post_json("/api/auth/password/reset/confirm/", &json!({"token": token, "new_password": "another passphrase"}), None).await;
        assert_error(reused, StatusCode::BAD_REQUEST, "invalid_token").await;
        let changed = common::mail::wait_for(&app.mail_dir(), 3).await.remove(2);
        assert!(changed.subject.contains("password was changed"), "{}", changed.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_through_smtp_when_a_host_is_configured() {
    let sink = SmtpSink::start().await;
    let port = sink.port.to_string();
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("PARLEY_SMTP_HOST", "127.0.0.1"), ("PARLEY_SMTP_PORT", port.as_str()), ("PARLEY_SMTP_TLS", "none")],
    )
    .await;
    app.register(&json!({"email": "smtp@example.com", "password": PASSWORD, "display_name": "<b>Sam</b>"})).await;
    let raw = sink.wait_for(1, Duration::from_secs(20)).await.remove(0);
    let mail = common::mail::parse(&raw);
    assert_eq!(mail.to, "smtp@example.com");
    assert!(mail.text.contains("Hello <b>Sam</b>,"), "{}", mail.text);
    assert!(raw.contains("text/html"));
    assert!(!common::mail::token(&mail.text).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_for_known_and_unknown_emails_take_about_the_same_time() {
    let app = spawn_app(Backend::Sqlite).await;
    app.signup("timed@example.com").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..15 {
        let t = std::time::Instant::now();
        app.post_json("/api/auth/password/reset/", &json!({"email": "timed@example.com"}), None).await;
        known.push(t.elapsed());
        let t = std::time::Instant::now();
        app.post_json("/api/auth/password/reset/", &json!({"email": "nobody@example.com"}), None).await;
        unknown.push(t.elapsed());
    }
    // Every answer, the first known one (which enqueues the email) included, waits for the
    // same moment: none comes sooner.
    let floor = parley_api::routes::email_flows::RESET_ANSWER_AFTER;
    assert!(known.iter().chain(&unknown).all(|t| *t >= floor), "{known:?} {unknown:?}");
    known.sort();
    unknown.sort();
    let diff = known[7].abs_diff(unknown[7]);
    assert!(diff < Duration::from_millis(40), "median known {:?} vs unknown {:?}", known[7], unknown[7]);
}
