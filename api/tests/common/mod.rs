//! Test harness: the whole app on port 0 with a fresh database (a SQLite file in a temp
//! directory, or a new PostgreSQL database), and one helper per endpoint.
#![allow(dead_code)]

pub mod fake_llm;
pub mod mail;
pub mod smtp_sink;
pub mod sse;

use parley_api::Application;
use parley_api::state::AppState;
use parley_shared::Config;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once per database backend: `<name>::sqlite` and `<name>::postgres`.
/// The PostgreSQL variant needs `PARLEY_TEST_DATABASE_URL` (CI always sets it).
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {$(
        mod $name {
            use super::*;
            async fn run($backend: Backend) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { run(Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::common::postgres_url().is_none() {
                    eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the PostgreSQL variant");
                    return;
                }
                run(Backend::Postgres).await
            }
        }
    )*};
}

/// The PostgreSQL server of the distributed-profile tests. Unset, those tests are skipped,
/// except in CI (`CI` set), where a skipped suite would be a hole: there it is an error.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("PARLEY_TEST_DATABASE_URL").ok().filter(|s| !s.is_empty());
    assert!(
        url.is_some() || std::env::var_os("CI").is_none(),
        "CI is set but PARLEY_TEST_DATABASE_URL is not: the PostgreSQL and Redis tests would be skipped"
    );
    url
}

pub fn redis_url() -> String {
    std::env::var("PARLEY_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
    /// The settings the app runs with, for starting more processes on the same data.
    pub vars: HashMap<String, String>,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

/// A fresh database URL for `backend`.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/parley.db", dir.display()),
        Backend::Postgres => {
            let base = postgres_url().expect("PARLEY_TEST_DATABASE_URL");
            let name = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("PostgreSQL is reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&mut conn).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').expect("a database URL with a path");
            format!("{prefix}/{name}")
        }
    }
}

/// Starts the app with cheap password hashing and the given extra settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = base_vars(dir.path());
    vars.insert("PARLEY_DATABASE_URL".into(), fresh_database(backend, dir.path()).await);
    if backend == Backend::Postgres {
        // The distributed profile: PostgreSQL for data, Redis for the queue and job events.
        vars.insert("PARLEY_QUEUE_URL".into(), redis_url());
        vars.insert("PARLEY_REDIS_PREFIX".into(), format!("parley-test-{}", uuid::Uuid::new_v4().simple()));
    }
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    start(vars, std::sync::Arc::new(dir)).await
}

/// The settings every test app runs with (cheap hashing, short leases), with its files in
/// `dir`; the database is the caller's to add.
pub fn base_vars(dir: &std::path::Path) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("PARLEY_BIND", "127.0.0.1:0"),
        ("PARLEY_ARGON2_MEMORY_KIB", "1024"),
        ("PARLEY_ARGON2_ITERATIONS", "1"),
        ("PARLEY_DATABASE_MAX_CONNECTIONS", "5"),
        ("PARLEY_LOGIN_IP_PER_MINUTE", "1000"),
        ("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", "1000"),
        ("PARLEY_QUEUE_POLL_MS", "100"),
        ("PARLEY_JOB_LEASE_SECS", "3"),
        ("PARLEY_SHUTDOWN_GRACE_SECS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert("PARLEY_EMAIL_DIR".into(), dir.join("mail").display().to_string());
    vars.insert("PARLEY_MEDIA_DIR".into(), dir.join("media").display().to_string());
    vars.insert("PARLEY_EXPORT_DIR".into(), dir.join("exports").display().to_string());
    vars
}

/// Another API process (in this test process) on the same database and queue as `app`.
pub async fn spawn_peer(app: &TestApp) -> TestApp {
    start(app.vars.clone(), app._dir.clone()).await
}

/// Starts the app with exactly `vars`; `dir` is kept until the app is dropped.
pub async fn start(vars: HashMap<String, String>, dir: std::sync::Arc<tempfile::TempDir>) -> TestApp {
    let config = Config::from_vars(vars.clone()).expect("valid test config");
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp { address, client: reqwest::Client::new(), state, vars, _dir: dir }
}

/// The environment admin of [`app_with_model`].
pub const ADMIN: (&str, &str) = ("root@example.com", "admin passphrase 1");

/// An app with its environment admin signed in and one default model: a config named
/// `fake` (`openai_compatible`, model `fake-model`) at `base_url`, with `config`'s fields on
/// top. Answers the app, the admin and the config as created.
pub async fn app_with_model(
    backend: Backend,
    base_url: &str,
    config: Value,
    extra: &[(&str, &str)],
) -> (TestApp, Account, Value) {
    let mut vars = vec![("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1)];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(backend, &vars).await;
    let admin = app.signin(ADMIN.0, ADMIN.1).await;
    let mut body = json!({"name": "fake", "provider": "openai_compatible", "model": "fake-model",
                          "base_url": base_url, "is_default": true});
    body.as_object_mut().unwrap().extend(config.as_object().cloned().unwrap_or_default());
    let res = app.post_json("/api/llm/configs/", &body, Some(&admin.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    let created = res.json().await.unwrap();
    (app, admin, created)
}

pub const PASSWORD: &str = "correct horse battery staple";

/// A signed-in user made by [`TestApp::signup`].
pub struct Account {
    pub email: String,
    pub access: String,
    pub refresh: String,
    pub id: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn register(&self, body: &Value) -> Response {
        self.post_json("/api/auth/register/", body, None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json("/api/auth/login/", &json!({"email": email, "password": password}), None).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/api/auth/token/refresh/", &json!({"refresh_token": refresh_token}), None).await
    }

    pub async fn logout(&self, token: &str, body: &Value) -> Response {
        self.post_json("/api/auth/logout/", body, Some(token)).await
    }

    pub async fn change_password(&self, token: &str, current: &str, new: &str) -> Response {
        self.post_json(
            "/api/auth/password/change/",
            &json!({"current_password": current, "new_password": new}),
            Some(token),
        )
        .await
    }

    pub async fn me(&self, token: &str) -> Response {
        self.client.get(self.url("/api/users/me/")).bearer_auth(token).send().await.unwrap()
    }

    pub async fn patch_me(&self, token: &str, body: &Value) -> Response {
        self.client.patch(self.url("/api/users/me/")).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn delete_me(&self, token: &str, password: &str) -> Response {
        self.client
            .delete(self.url("/api/users/me/"))
            .bearer_auth(token)
            .json(&json!({"password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Starts `parley-api worker` as a separate process on this app's database and queue.
    pub fn spawn_worker_process(&self) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_parley-api"))
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(&self.vars)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the worker process starts")
    }

    /// Where the file mail transport writes.
    pub fn mail_dir(&self) -> std::path::PathBuf {
        self.vars["PARLEY_EMAIL_DIR"].clone().into()
    }

    /// A job as the API shows it.
    /// `GET path` with `token`, answered 200, as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let res = self.client.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    pub async fn job(&self, token: &str, id: impl std::fmt::Display) -> Value {
        self.get_json(&format!("/api/jobs/{id}/"), token).await
    }

    /// Polls a job until it reaches `status` (30 s deadline).
    pub async fn wait_for_status(&self, token: &str, id: impl std::fmt::Display, status: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let job = self.job(token, &id).await;
            if job["status"] == status {
                return job;
            }
            assert!(std::time::Instant::now() < deadline, "job never reached {status}: {job}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Registers `email` and returns its tokens.
    pub async fn signup(&self, email: &str) -> Account {
        let res = self.register(&json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let body: Value = res.json().await.unwrap();
        Account {
            email: email.to_owned(),
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Signs in again: a second session of the same account.
    pub async fn signin(&self, email: &str, password: &str) -> Account {
        let res = self.login(email, password).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
        let body: Value = res.json().await.unwrap();
        Account {
            email: email.to_owned(),
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
            id: String::new(),
        }
    }
}

/// Asserts the status and the error envelope's code; returns the body.
pub async fn assert_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.expect("an error body in JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}
