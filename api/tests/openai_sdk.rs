//! The official `openai` Python package against a running Parley with the fake provider:
//! `api/tests/openai_sdk/check_openai_sdk.py` lists models, creates completions (whole and
//! streamed with usage) and checks that a revoked key, an unknown model, an unsupported field
//! the key rate limit and a spent token quota raise the SDK's matching exceptions.
//!
//! The Python interpreter comes from `PARLEY_OPENAI_SDK_PYTHON` (a virtualenv with `openai`
//! installed, which `.ci/run` makes); without it the test is skipped, except in CI. When
//! `PARLEY_OPENAI_NODE_MODULES` names a `node_modules` with the Node `openai` package, one
//! streamed completion goes through it too (`check_openai_node.cjs`).

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Backend, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: (&str, &str) = ("root@example.com", "admin passphrase 1");
/// Low enough for the limited key to reach, high enough for the other checks' requests.
const RPM: &str = "20";

fn python() -> Option<String> {
    let python = std::env::var("PARLEY_OPENAI_SDK_PYTHON").ok().filter(|p| !p.is_empty());
    assert!(
        python.is_some() || std::env::var_os("CI").is_none(),
        "CI is set but PARLEY_OPENAI_SDK_PYTHON is not: the OpenAI SDK test would be skipped"
    );
    python
}

/// The `node_modules` holding the Node `openai` package (`PARLEY_OPENAI_NODE_MODULES`, which
/// `.ci/run` sets); without it the Node check is skipped.
fn node_modules() -> Option<String> {
    std::env::var("PARLEY_OPENAI_NODE_MODULES").ok().filter(|p| !p.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_package_works_against_parley() {
    let Some(python) = python() else {
        eprintln!("PARLEY_OPENAI_SDK_PYTHON is not set; skipping the OpenAI SDK test");
        return;
    };
    let fake = FakeLlm::openai(vec![Step::reply(&["Hello", " there"])]).await;
    let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_API_KEY_RPM", RPM)];
    let app = spawn_app_with(Backend::Sqlite, &vars).await;
    let admin = app.signin(ADMIN.0, ADMIN.1).await;
    let config = json!({"name": "fake", "provider": "openai_compatible", "model": "fake-model",
                        "base_url": fake.base_url(), "is_default": true});
    let res = app.post_json("/api/llm/configs/", &config, Some(&admin.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user = app.signup("sdk@example.com").await;
    let mut keys = Vec::new();
    for name in ["main", "revoked", "limited"] {
        let res = app.post_json("/api/users/me/api-keys/", &json!({"name": name}), Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        keys.push(res.json::<Value>().await.unwrap());
    }
    // A second user with no tokens left today: its key meets the quota, not the rate limit.
    let spent = app.signup("sdk-spent@example.com").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/admin/users/{}/", spent.id)))
        .bearer_auth(&admin.access)
        .json(&json!({"token_budget_daily": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.post_json("/api/users/me/api-keys/", &json!({"name": "spent"}), Some(&spent.access)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let spent_key = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let revoked = format!("/api/users/me/api-keys/{}/", keys[1]["id"].as_str().unwrap());
    let res = app.client.delete(app.url(&revoked)).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_sdk/check_openai_sdk.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .env("PARLEY_BASE_URL", app.url("/v1"))
        .env("PARLEY_KEY", keys[0]["key"].as_str().unwrap())
        .env("PARLEY_REVOKED_KEY", keys[1]["key"].as_str().unwrap())
        .env("PARLEY_LIMITED_KEY", keys[2]["key"].as_str().unwrap())
        .env("PARLEY_SPENT_KEY", &spent_key)
        // The SDK must talk to this app, whatever proxy the environment names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(120), run).await.expect("the script ends").expect("python runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the OpenAI SDK checks failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok rate_limit_raises_rate_limit_error"), "{stdout}");
    assert!(stdout.contains("ok quota_raises_rate_limit_error"), "{stdout}");
    if let Some(modules) = node_modules() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_sdk/check_openai_node.cjs");
        let run = tokio::process::Command::new("node")
            .arg(script)
            .env("PARLEY_OPENAI_NODE_MODULES", modules)
            .env("PARLEY_BASE_URL", app.url("/v1"))
            .env("PARLEY_KEY", keys[0]["key"].as_str().unwrap())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .kill_on_drop(true)
            .output();
        let output =
            tokio::time::timeout(Duration::from_secs(60), run).await.expect("the script ends").expect("node runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "the OpenAI Node SDK check failed\n{stdout}\n{stderr}");
        assert!(stdout.contains("ok node streaming"), "{stdout}");
    }
    // Every completion was a job of the key's owner.
    let jobs: Value =
        app.client.get(app.url("/api/jobs/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
    let completions = jobs["items"].as_array().unwrap().iter().filter(|j| j["kind"] == "api_completion");
    let results: Vec<&Value> = completions.map(|j| &j["result"]["content"]).collect();
    let expected = if node_modules().is_some() { 3 } else { 2 };
    assert_eq!(results, vec![&json!("Hello there"); expected], "{jobs}");
}
