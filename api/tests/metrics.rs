//! `/metrics` on `parley-api` and on a `parley-api worker` process: the series move with
//! the traffic, labels are route templates (never raw paths or ids), and the page can be
//! restricted by a token or moved to another address. The worker's `/healthz` shows its
//! queue workers. JSON logs carry the request id into the job it enqueued.

mod common;

use common::{Backend, TestApp, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

async fn scrape(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    res.text().await.unwrap()
}

async fn admin_app(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")];
    vars.extend_from_slice(extra);
    spawn_app_with(backend, &vars).await
}

both_backends! {
    async fn http_job_and_sign_in_series_move_with_the_traffic(backend: Backend) {
        let app = admin_app(backend, &[]).await;
        let before = scrape(&app).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        assert_eq!(app.login("root@example.com", "wrong passphrase").await.status(), StatusCode::UNAUTHORIZED);
        let res = app.post_json("/api/admin/jobs/noop/", &json!({"fail_times": 1}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
        app.wait_for_status(&admin.access, &id, "succeeded").await;
        let missing = app.client.get(app.url("/no/such/path/12345")).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let after = scrape(&app).await;

        let moved = |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
        let login_ok = [("method", "POST"), ("route", "/api/auth/login"), ("status", "200")];
        assert!(moved("parley_http_requests_total", &login_ok) >= 1.0, "{after}");
        assert!(moved("parley_http_request_duration_seconds_count", &login_ok) >= 1.0, "{after}");
        assert!(moved("parley_sign_ins_total", &[("result", "success")]) >= 1.0);
        assert!(moved("parley_sign_ins_total", &[("result", "failure")]) >= 1.0);
        // The job polled by id is counted under its route template, and the unknown path
        // under `unmatched`: no id or raw path becomes a label.
        assert!(moved("parley_http_requests_total", &[("route", "/api/jobs/{id}"), ("status", "200")]) >= 1.0, "{after}");
        assert!(moved("parley_http_requests_total", &[("route", "unmatched"), ("status", "404")]) >= 1.0, "{after}");
        assert!(!after.contains(&id) && !after.contains("12345"), "a raw path leaked into a label");
        // The no-op failed once, was retried, then succeeded.
        let noop = [("kind", "noop")];
        assert!(moved("parley_jobs_enqueued_total", &noop) >= 1.0);
        assert!(moved("parley_jobs_started_total", &noop) >= 2.0);
        assert!(moved("parley_jobs_retried_total", &noop) >= 1.0);
        assert!(moved("parley_jobs_succeeded_total", &noop) >= 1.0);
        assert!(moved("parley_job_run_duration_seconds_count", &noop) >= 2.0);
        assert!(moved("parley_job_queue_wait_seconds_count", &noop) >= 2.0);
        // Scrape-time gauges.
        assert!(after.contains("parley_queue_depth{queue=\"default\"}"), "{after}");
        assert!(after.contains("parley_queue_oldest_due_age_seconds{queue=\"bulk\"}"), "{after}");
        assert!(after.contains("parley_db_pool_connections{"), "{after}");
        assert!(after.contains("# TYPE parley_http_request_duration_seconds histogram"), "{after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_counts_waiting_jobs() {
    // No in-process workers: the jobs stay queued.
    let app = admin_app(Backend::Sqlite, &[("PARLEY_WORKERS", "0")]).await;
    let admin = app.signin("root@example.com", "admin passphrase 1").await;
    for _ in 0..3 {
        let res = app.post_json("/api/admin/jobs/noop/", &json!({}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The registry is process-wide and the tests share the process: another app's scrape
    // may set the gauge between this one's reading and rendering, so a few tries.
    let mut page = scrape(&app).await;
    for _ in 0..5 {
        if sample(&page, "parley_queue_depth", &[("queue", "default")]) == 3.0 {
            break;
        }
        page = scrape(&app).await;
    }
    assert_eq!(sample(&page, "parley_queue_depth", &[("queue", "default")]), 3.0, "{page}");
    assert!(sample(&page, "parley_queue_oldest_due_age_seconds", &[("queue", "default")]) >= 1.0, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_restricts_the_page() {
    let app = spawn_app_with(Backend::Sqlite, &[("PARLEY_METRICS_TOKEN", "scrape-token-0123456789")]).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    common::assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app.client.get(app.url("/metrics")).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.client.get(app.url("/metrics")).bearer_auth("scrape-token-0123456789").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("parley_http_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_takes_the_page_off_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = common::base_vars(dir.path());
    vars.insert("PARLEY_DATABASE_URL".into(), common::fresh_database(Backend::Sqlite, dir.path()).await);
    vars.insert("PARLEY_METRICS_BIND".into(), "127.0.0.1:0".into());
    let app = parley_api::Application::build(parley_shared::Config::from_vars(vars).unwrap()).await.unwrap();
    let (port, metrics_port) = (app.port(), app.metrics_port().expect("a metrics listener"));
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let res = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    common::assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = client.get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("# TYPE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_workers_show_in_healthz() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let queues = body["workers"].as_array().expect("the queue workers");
    assert_eq!(queues.len(), 3, "{body}");
    assert!(queues.iter().all(|q| q["alive"] == 1 && q["dead"] == 0), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_metrics_and_health_on_its_own_address() {
    let app = admin_app(Backend::Sqlite, &[("PARLEY_WORKERS", "0")]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_parley-api"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(&app.vars)
        .env("PARLEY_METRICS_BIND", format!("127.0.0.1:{port}"))
        .env("PARLEY_METRICS_TOKEN", "worker-scrape-token-0123")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin = app.signin("root@example.com", "admin passphrase 1").await;
    let res = app.post_json("/api/admin/jobs/noop/", &json!({}), Some(&admin.access)).await;
    let id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&admin.access, &id, "succeeded").await;

    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let health = loop {
        match app.client.get(format!("{base}/healthz")).send().await {
            Ok(res) => break res,
            Err(_) => assert!(Instant::now() < deadline, "the worker's listener never answered"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["queues"].as_array().unwrap().iter().all(|q| q["alive"] == 1), "{body}");
    let res = app.client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let page = app.client.get(format!("{base}/metrics")).bearer_auth("worker-scrape-token-0123").send().await.unwrap();
    let page = page.text().await.unwrap();
    // The job ran in the worker process: its counters are there, not in the API's.
    assert_eq!(sample(&page, "parley_jobs_succeeded_total", &[("kind", "noop")]), 1.0, "{page}");
    assert_eq!(sample(&page, "parley_jobs_started_total", &[("kind", "noop")]), 1.0, "{page}");
    let _ = worker.kill();
    let _ = worker.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_a_request_into_the_job_it_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = common::base_vars(dir.path());
    vars.insert("PARLEY_DATABASE_URL".into(), common::fresh_database(Backend::Sqlite, dir.path()).await);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    vars.insert("PARLEY_BIND".into(), format!("127.0.0.1:{port}"));
    vars.insert("PARLEY_LOG_FORMAT".into(), "json".into());
    vars.insert("PARLEY_ADMIN_EMAIL".into(), "root@example.com".into());
    vars.insert("PARLEY_ADMIN_PASSWORD".into(), "admin passphrase 1".into());
    let log_path = dir.path().join("api.log");
    let mut api = std::process::Command::new(env!("CARGO_BIN_EXE_parley-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(&vars)
        .stdout(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let login = loop {
        let sent = client
            .post(format!("{base}/api/auth/login/"))
            .json(&json!({"email": "root@example.com", "password": "admin passphrase 1"}))
            .send()
            .await;
        if let Ok(res) = sent {
            break res.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the API process never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let token = login["access_token"].as_str().unwrap();
    let res = client
        .post(format!("{base}/api/admin/jobs/noop/"))
        .bearer_auth(token)
        .header("x-request-id", "trace-me-0123")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-0123");
    let job = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    // The lines of the request and of the job's run, in JSON, with both ids.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        // Scheduled jobs log too: this job's lines are the ones with its id.
        if lines.iter().any(|l| l["message"] == "job succeeded" && l["span"]["job.id"] == job.as_str()) {
            break lines;
        }
        assert!(Instant::now() < deadline, "the job never logged its success: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let enqueued = lines
        .iter()
        .find(|l| l["message"] == "job enqueued" && l["job.id"] == job.as_str())
        .expect("the enqueue is logged");
    assert_eq!(enqueued["job.id"], job.as_str(), "{enqueued}");
    assert_eq!(enqueued["span"]["request.id"], "trace-me-0123", "{enqueued}");
    let succeeded =
        lines.iter().find(|l| l["message"] == "job succeeded" && l["span"]["job.id"] == job.as_str()).unwrap();
    assert_eq!(succeeded["span"]["job.id"], job.as_str(), "{succeeded}");
    assert_eq!(succeeded["span"]["request.id"], "trace-me-0123", "{succeeded}");
    let _ = api.kill();
    let _ = api.wait();
}
