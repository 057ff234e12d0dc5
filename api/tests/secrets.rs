//! A provider that quotes the key it refused, in every shape providers use: the key reaches
//! no API response, job event, chat message or log line. Users are told the class of
//! failure; admins see the provider's text with the key removed.

mod common;

use axum::Router;
use axum::http::{StatusCode as HttpStatus, header};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Backend, TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

const ADMIN: (&str, &str) = ("root@example.com", "an admin password 42");

/// Every log line of this test binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the fake provider quotes the key.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// 401 with OpenAI's JSON error body.
    JsonBody,
    /// 200 and an error object inside the event stream, the key masked.
    InStream,
    /// 400 with a plain-text body.
    PlainText,
    /// 404 quoting a URL that carries the key as a query parameter.
    Url,
}

/// A provider answering every request with `shape`, quoting `key`.
async fn quoting_provider(shape: Shape, key: &str) -> String {
    let key = key.to_owned();
    let masked = format!("{}****{}", &key[..8], &key[key.len() - 4..]);
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let (key, masked) = (key.clone(), masked.clone());
            async move {
                match shape {
                    Shape::JsonBody => (
                        HttpStatus::UNAUTHORIZED,
                        [(header::CONTENT_TYPE, "application/json")],
                        json!({"error": {"message": format!("Incorrect API key provided: {key}"),
                                          "type": "invalid_request_error", "code": "invalid_api_key"}})
                        .to_string(),
                    ),
                    Shape::InStream => (
                        HttpStatus::OK,
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        format!(
                            "data: {}\n\n",
                            json!({"error": {"message": format!("key {masked} is not valid (full: {key})"),
                                              "type": "authentication_error", "code": "invalid_api_key"}})
                        ),
                    ),
                    Shape::PlainText => (
                        HttpStatus::BAD_REQUEST,
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("bad request for api key {key}"),
                    ),
                    Shape::Url => (
                        HttpStatus::NOT_FOUND,
                        [(header::CONTENT_TYPE, "application/json")],
                        json!({"error": {"message": format!("no model at https://llm.example/v1/models?api_key={key}")}})
                            .to_string(),
                    ),
                }
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn get(app: &TestApp, token: &str, path: &str) -> String {
    let res = app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.text().await.unwrap()
}

both_backends! {
    async fn a_key_the_provider_quotes_reaches_no_response_event_message_or_log(backend: Backend) {
        let logs = logs();
        for shape in [Shape::JsonBody, Shape::InStream, Shape::PlainText, Shape::Url] {
            // 64 hex characters: no telltale prefix or mixed case for pattern redaction to spot.
            let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            let base = quoting_provider(shape, &key).await;
            let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("RUST_LOG", "debug")];
            let app = spawn_app_with(backend, &vars).await;
            let admin = app.signin(ADMIN.0, ADMIN.1).await;
            let res = app.post_json("/api/llm/configs/", &json!({"name": "quoting", "provider": "openai_compatible",
                "model": "m", "base_url": base, "api_key": key, "is_default": true}), Some(&admin.access)).await;
            assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
            let user = app.signup(&format!("{shape:?}@example.com").to_lowercase()).await;
            let res = app.post_json("/api/llm/chat/", &json!({"message": "hi"}), Some(&user.access)).await;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            let accepted: Value = res.json().await.unwrap();
            let job_id = accepted["job_id"].as_str().unwrap();
            let job = app.wait_for_status(&user.access, job_id, "failed").await;

            // The user is told the class of failure, never the provider's words.
            let error = job["error"].as_str().unwrap();
            assert!(error.starts_with("the provider"), "{shape:?}: {error}");
            assert!(job.get("error_detail").is_none(), "{job}");
            let session = accepted["session_id"].as_str().unwrap();
            let seen = [
                job.to_string(),
                get(&app, &user.access, &format!("/api/jobs/{job_id}/events/")).await,
                get(&app, &user.access, &format!("/api/llm/messages/?session_id={session}")).await,
                get(&app, &user.access, &format!("/api/llm/sessions/{session}/")).await,
                get(&app, &admin.access, "/api/admin/jobs/").await,
                get(&app, &admin.access, "/api/llm/configs/").await,
            ];
            for (i, text) in seen.iter().enumerate() {
                assert!(!text.contains(&key[..8]) && !text.contains(&key[key.len() - 8..]), "{shape:?} #{i}: {text}");
            }
            // Admins see the provider's text, without the key.
            let admin_jobs: Value = serde_json::from_str(&seen[4]).unwrap();
            // The reply's job (scheduled jobs are listed too).
            let reply = admin_jobs["items"].as_array().unwrap().iter().find(|j| j["id"] == job_id).cloned().unwrap_or_default();
            let detail = reply["error_detail"].as_str().unwrap_or_default();
            assert!(detail.contains("[redacted]"), "{shape:?}: {admin_jobs}");
            let log = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
            assert!(log.contains(job_id), "the job's lines are captured");
            assert!(!log.contains(&key[..8]) && !log.contains(&key[key.len() - 8..]), "{shape:?}: the key is in the log");
        }
    }
}
