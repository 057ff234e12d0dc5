//! The client side shared by the `queue` and `chat` scenarios: one pooled keep-alive HTTP
//! client and the few endpoints they call.

use crate::sse::EventReader;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The password of every benchmark account, the admin's too (long enough, not a common one).
pub const PASSWORD: &str = "parley bench passphrase 7f3k9q";

/// The admin that the server creates at start-up from `PARLEY_ADMIN_EMAIL`.
pub const ADMIN_EMAIL: &str = "bench-admin@example.com";

/// Job statuses that are not final.
const ACTIVE: [&str; 3] = ["queued", "running", "retrying"];

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Arc<str>,
}

/// Jobs per status, from `GET /api/admin/queues/`.
#[derive(Debug, Deserialize)]
pub struct QueueStats {
    pub jobs: BTreeMap<String, i64>,
}

impl QueueStats {
    pub fn count(&self, status: &str) -> i64 {
        self.jobs.get(status).copied().unwrap_or(0)
    }

    /// Jobs not finished yet.
    pub fn active(&self) -> i64 {
        ACTIVE.iter().map(|s| self.count(s)).sum()
    }
}

impl Client {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base_url: base_url.into() })
    }

    /// A request to `path`, as the holder of `token` (none if empty).
    pub fn request(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base_url));
        if token.is_empty() { request } else { request.bearer_auth(token) }
    }

    /// POSTs `body` as `token` and decodes the successful answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<T> {
        let response = self.request(reqwest::Method::POST, path, token).json(body).send().await?;
        Ok(success(response).await?.json().await?)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> anyhow::Result<T> {
        let response = self.request(reqwest::Method::GET, path, token).send().await?;
        Ok(success(response).await?.json().await?)
    }

    /// Signs in and returns the access token.
    pub async fn login(&self, email: &str) -> anyhow::Result<String> {
        let body = json!({"email": email, "password": PASSWORD});
        let pair: Tokens =
            self.post("/api/auth/login/", "", &body).await.with_context(|| format!("signing in {email}"))?;
        Ok(pair.access_token)
    }

    /// Registers an account and returns its access token.
    pub async fn register(&self, email: &str) -> anyhow::Result<String> {
        let body = json!({"email": email, "password": PASSWORD});
        let pair: Tokens =
            self.post("/api/auth/register/", "", &body).await.with_context(|| format!("registering {email}"))?;
        Ok(pair.access_token)
    }

    pub async fn queue_stats(&self, admin: &str) -> anyhow::Result<QueueStats> {
        self.get("/api/admin/queues/", admin).await
    }

    /// Waits until no job is queued, running or retrying; warns if any failed.
    pub async fn wait_idle(&self, admin: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.queue_stats(admin).await?;
            if stats.active() == 0 {
                if stats.count("failed") > 0 {
                    eprintln!("warning: {} jobs failed so far", stats.count("failed"));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("jobs still unfinished after {timeout:?}: {:?}", stats.jobs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The events of `job` until its final one.
    pub async fn job_events(&self, job: &str, token: &str) -> anyhow::Result<EventReader> {
        let path = format!("/api/jobs/{job}/events/");
        let response = self.request(reqwest::Method::GET, &path, token).send().await?;
        Ok(EventReader::new(success(response).await?))
    }
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
}

/// The response if its status is a success, else an error with the status and body.
pub async fn success(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let path = response.url().path().to_owned();
    let body = response.text().await.unwrap_or_default();
    bail!("{path} answered {status}: {body}")
}
