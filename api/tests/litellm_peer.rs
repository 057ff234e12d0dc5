//! Parley against a real third-party peer: LiteLLM's proxy (with `mock_response` models) as
//! the provider, in both API shapes. Its OpenAI endpoint streams real chunks; its Anthropic
//! endpoint (`/v1/messages`) answers a streaming request with one JSON message; a mock rate
//! limit comes back as a 429 whose error `code` is the string `"429"` and whose `type` is
//! `throttling_error`.
//!
//! The proxy comes from `PARLEY_LITELLM` (the `litellm` executable of a virtualenv with
//! `litellm[proxy]`, which `.ci/run` makes); without it the test is skipped.

mod common;

use common::{Backend, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: (&str, &str) = ("root@example.com", "admin passphrase 1");
const MASTER_KEY: &str = "sk-litellm-test";
const REPLY: &str = "Hello from LiteLLM";

/// A LiteLLM proxy on a free local port, stopped when dropped.
struct Proxy {
    _child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn start_proxy(litellm: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "model_list:
  - model_name: mock-gpt
    litellm_params: {{model: openai/gpt-4o-mini, api_key: sk-none, mock_response: \"{REPLY}\"}}
  - model_name: mock-throttled
    litellm_params: {{model: openai/gpt-4o-mini, api_key: sk-none, mock_response: \"litellm.RateLimitError\"}}
general_settings:
  master_key: {MASTER_KEY}
"
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(dir.path().join("litellm.log")).unwrap();
    let child = tokio::process::Command::new(litellm)
        .args(["--config", path.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .env("LITELLM_TELEMETRY", "False")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("litellm starts");
    let proxy = Proxy { _child: child, port, _dir: dir };
    let health = format!("http://127.0.0.1:{port}/health/liveliness");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()) {
            return proxy;
        }
        assert!(std::time::Instant::now() < deadline, "LiteLLM's proxy did not start");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parley_works_with_litellms_proxy_as_its_provider_in_both_api_shapes() {
    let Some(litellm) = std::env::var("PARLEY_LITELLM").ok().filter(|p| !p.is_empty()) else {
        eprintln!("PARLEY_LITELLM is not set; skipping the LiteLLM peer test");
        return;
    };
    let proxy = start_proxy(&litellm).await;
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_LLM_STALL_SECS", "10")],
    )
    .await;
    let admin = app.signin(ADMIN.0, ADMIN.1).await;
    let origin = format!("http://127.0.0.1:{}", proxy.port);
    let mut configs = std::collections::HashMap::new();
    for (name, provider, base_url, model) in [
        ("ll-openai", "openai_compatible", format!("{origin}/v1"), "mock-gpt"),
        ("ll-anthropic", "anthropic", origin.clone(), "mock-gpt"),
        ("ll-throttled", "openai_compatible", format!("{origin}/v1"), "mock-throttled"),
    ] {
        let body =
            json!({"name": name, "provider": provider, "model": model, "base_url": base_url, "api_key": MASTER_KEY});
        let res = app.post_json("/api/llm/configs/", &body, Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        configs.insert(name, res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let user = app.signup("peer@example.com").await;

    // A chat turn in each shape: the OpenAI one streams, the Anthropic one answers whole.
    for name in ["ll-openai", "ll-anthropic"] {
        let res = app
            .post_json("/api/llm/chat/", &json!({"message": "hi", "config_id": configs[name]}), Some(&user.access))
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let accepted: Value = res.json().await.unwrap();
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        let text: String =
            events.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect();
        assert_eq!(text, REPLY, "{name}: {events:?}");
        assert_eq!(events.last().unwrap().event, "done", "{name}");
        let job = app.job(&user.access, accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["attempts"], 1, "{name}: {job}");
        assert!(events.iter().all(|e| e.data["status"] != "restarted"), "{name}");
    }

    // Its mock rate limit (a string code, a type of its own) is read as one and retried.
    let res = app
        .post_json(
            "/api/llm/chat/",
            &json!({"message": "hi", "config_id": configs["ll-throttled"]}),
            Some(&user.access),
        )
        .await;
    let accepted: Value = res.json().await.unwrap();
    let job_id = accepted["job_id"].as_str().unwrap();
    let events = common::sse::take(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None, 2).await;
    let retrying = events.iter().find(|e| e.data["status"] == "retrying").expect("a retry");
    assert_eq!(retrying.data["error"], "the provider is rate limiting requests", "{retrying:?}");
    let res = app.post_json(&format!("/api/jobs/{job_id}/cancel/"), &Value::Null, Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // And through Parley's own OpenAI-compatible endpoint, on the Anthropic path.
    let res = app.post_json("/api/users/me/api-keys/", &json!({"name": "peer"}), Some(&user.access)).await;
    let key = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let body = json!({"model": "ll-anthropic", "messages": [{"role": "user", "content": "hi"}]});
    let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let completion: Value = res.json().await.unwrap();
    assert_eq!(completion["choices"][0]["message"]["content"], REPLY, "{completion}");
}
