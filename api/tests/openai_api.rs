//! Personal API keys and the OpenAI-compatible `/v1` endpoints, end to end against a
//! wire-level fake provider.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Account, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn app_with_model(backend: Backend, fake: &FakeLlm, extra: &[(&str, &str)]) -> (TestApp, Account) {
    let config = json!({"api_key": "sk-upstream", "system_prompt": "Never sent on /v1."});
    let mut vars = vec![("PARLEY_LLM_STALL_SECS", "1"), ("PARLEY_API_KEY_RPM", "1000")];
    vars.extend_from_slice(extra);
    let (app, admin, _) = common::app_with_model(backend, &fake.base_url(), config, &vars).await;
    (app, admin)
}

async fn create_key(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/api/users/me/api-keys/", &body, Some(token)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

async fn key_of(app: &TestApp, user: &Account) -> String {
    create_key(app, &user.access, json!({"name": "laptop"})).await["key"].as_str().unwrap().to_owned()
}

async fn models(app: &TestApp, key: &str) -> reqwest::Response {
    app.client.get(app.url("/v1/models")).bearer_auth(key).send().await.unwrap()
}

async fn complete(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(body).send().await.unwrap()
}

/// Asserts an OpenAI-shaped error: status, `type` and `code`.
async fn assert_openai_error(res: reqwest::Response, status: StatusCode, kind: &str, code: Option<&str>) -> Value {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"].as_str(), code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    body
}

fn hi() -> Value {
    json!({"model": "fake", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})
}

both_backends! {
    async fn a_key_is_shown_once_stored_as_a_hash_and_revoked_at_once(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("keys@example.com").await;
        let created = create_key(&app, &user.access, json!({"name": "laptop"})).await;
        let key = created["key"].as_str().unwrap();
        assert!(key.starts_with("sk-parley-") && key.len() >= "sk-parley-".len() + 43, "{key}");
        assert_eq!(created["scopes"], json!(["chat", "read"]));
        assert!(key.starts_with(created["prefix"].as_str().unwrap()));
        let stored: Vec<String> = sqlx::query_scalar("select key_hash from api_keys").fetch_all(&app.state.db.pool).await.unwrap();
        assert_eq!(stored, [parley_shared::auth::api_keys::hash_key(key)]);
        assert!(!stored[0].contains(&key["sk-parley-".len()..]));

        let list = app.client.get(app.url("/api/users/me/api-keys/")).bearer_auth(&user.access).send().await.unwrap().text().await.unwrap();
        assert!(!list.contains(key), "{list}");
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["items"][0]["name"], "laptop");
        assert!(list["items"][0]["last_used_at"].is_null());

        let res = models(&app, key).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!((body["object"].as_str(), body["data"][0]["id"].as_str()), (Some("list"), Some("fake")));
        let list: Value = app.client.get(app.url("/api/users/me/api-keys/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert!(list["items"][0]["last_used_at"].is_string(), "{list}");

        // Another user cannot revoke it; its owner can, and it stops working at once.
        let other = app.signup("other@example.com").await;
        let path = format!("/api/users/me/api-keys/{}/", created["id"].as_str().unwrap());
        let res = app.client.delete(app.url(&path)).bearer_auth(&other.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = app.client.delete(app.url(&path)).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_openai_error(models(&app, key).await, StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key")).await;
        let list: Value = app.client.get(app.url("/api/users/me/api-keys/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"], json!([]));
        // Both go to the owner's activity log, without the key.
        let activity = app.client.get(app.url("/api/users/me/activity/")).bearer_auth(&user.access).send().await.unwrap().text().await.unwrap();
        assert!(!activity.contains(&key["sk-parley-".len()..]), "{activity}");
        let activity: Value = serde_json::from_str(&activity).unwrap();
        let actions: Vec<&str> = activity["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        assert!(actions.contains(&"api_key.create") && actions.contains(&"api_key.revoke"), "{actions:?}");
    }

    async fn a_key_opens_only_the_v1_endpoints(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("scopes@example.com").await;
        let key = key_of(&app, &user).await;
        let admin_key = key_of(&app, &admin).await;
        for (path, k) in [("/api/users/me/", &key), ("/api/users/me/api-keys/", &key), ("/api/jobs/", &key), ("/api/admin/users/", &admin_key)] {
            let res = app.client.get(app.url(path)).bearer_auth(k).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let res = app.post_json("/api/users/me/api-keys/", &json!({"name": "more"}), Some(&key)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // And an access token does not open /v1.
        assert_openai_error(models(&app, &user.access).await, StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key")).await;

        // A read-only key lists models but cannot chat.
        let read = create_key(&app, &user.access, json!({"name": "ro", "scopes": ["read"]})).await;
        let read = read["key"].as_str().unwrap();
        assert_eq!(models(&app, read).await.status(), StatusCode::OK);
        assert_openai_error(complete(&app, read, &hi()).await, StatusCode::FORBIDDEN, "permission_error", Some("insufficient_scope")).await;
        assert_eq!(fake.request_count(), 0);
        let res = app.post_json("/api/users/me/api-keys/", &json!({"name": "x", "scopes": ["admin"]}), Some(&user.access)).await;
        common::assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }

    async fn expiry_deactivation_and_admin_revocation_end_keys_at_once(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("expiry@example.com").await;
        let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let created = create_key(&app, &user.access, json!({"name": "temp", "expires_at": expires})).await;
        let key = created["key"].as_str().unwrap();
        assert_eq!(models(&app, key).await.status(), StatusCode::OK);
        // The hour passes.
        sqlx::query("update api_keys set expires_at = $1").bind(chrono::Utc::now().timestamp_millis() - 1).execute(&app.state.db.pool).await.unwrap();
        assert_eq!(models(&app, key).await.status(), StatusCode::UNAUTHORIZED);
        let res = app.post_json("/api/users/me/api-keys/", &json!({"name": "past", "expires_at": "2000-01-01T00:00:00Z"}), Some(&user.access)).await;
        common::assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;

        // Admins list and revoke anyone's keys.
        let second = create_key(&app, &user.access, json!({"name": "second"})).await;
        let list: Value = app.client.get(app.url(&format!("/api/admin/users/{}/api-keys/", user.id))).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        assert!(list["items"].as_array().unwrap().iter().any(|k| k["id"] == second["id"]), "{list}");
        let res = app.client.get(app.url(&format!("/api/admin/users/{}/api-keys/", user.id))).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = app.client.delete(app.url(&format!("/api/admin/api-keys/{}/", second["id"].as_str().unwrap()))).bearer_auth(&admin.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(models(&app, second["key"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);

        // Deactivating the account ends its keys, for good.
        let third = key_of(&app, &user).await;
        assert_eq!(models(&app, &third).await.status(), StatusCode::OK);
        let path = format!("/api/admin/users/{}/", user.id);
        let res = app.client.patch(app.url(&path)).bearer_auth(&admin.access).json(&json!({"is_active": false})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(models(&app, &third).await.status(), StatusCode::UNAUTHORIZED);
        let res = app.client.patch(app.url(&path)).bearer_auth(&admin.access).json(&json!({"is_active": true})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(models(&app, &third).await.status(), StatusCode::UNAUTHORIZED);

        // Deleting the account too.
        let other = app.signup("gone@example.com").await;
        let key = key_of(&app, &other).await;
        let res = app.client.delete(app.url(&format!("/api/admin/users/{}/", other.id))).bearer_auth(&admin.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(models(&app, &key).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn each_key_is_rate_limited_with_retry_after(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, _) = app_with_model(backend, &fake, &[("PARLEY_API_KEY_RPM", "2")]).await;
        let user = app.signup("rpm@example.com").await;
        let (a, b) = (key_of(&app, &user).await, key_of(&app, &user).await);
        assert_eq!(models(&app, &a).await.status(), StatusCode::OK);
        assert_eq!(models(&app, &a).await.status(), StatusCode::OK);
        let res = models(&app, &a).await;
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_openai_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded")).await;
        assert_eq!(models(&app, &b).await.status(), StatusCode::OK);
    }

    async fn a_completion_is_a_job_answered_whole_without_storing_a_session(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Hello", " there"])]).await;
        let (app, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("whole@example.com").await;
        let key = key_of(&app, &user).await;
        let mut body = hi();
        body["temperature"] = json!(0.25);
        body["max_tokens"] = json!(50);
        body["stop"] = json!(["END"]);
        let res = complete(&app, &key, &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let job_id = res.headers()["x-parley-job-id"].to_str().unwrap().to_owned();
        let completion: Value = res.json().await.unwrap();
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["model"], "fake");
        assert_eq!(completion["choices"][0]["message"], json!({"role": "assistant", "content": "Hello there"}));
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        assert_eq!(completion["usage"], json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}));
        // The request's own messages and settings reach the provider (not the config's prompt).
        let sent = &fake.requests()[0].body;
        assert_eq!(sent["messages"], json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]));
        assert_eq!((sent["temperature"].as_f64(), sent["max_tokens"].as_u64()), (Some(0.25), Some(50)));
        assert_eq!(sent["stop"], json!(["END"]));
        // A job with its events, and no chat session.
        let job = app.job(&user.access, &job_id).await;
        assert_eq!((job["kind"].as_str(), job["status"].as_str()), (Some("api_completion"), Some("succeeded")));
        assert_eq!(job["result"]["content"], "Hello there");
        let events = common::sse::collect(&app, &user.access, &format!("/api/jobs/{job_id}/events/"), None).await;
        assert!(events.iter().any(|e| e.event == "delta"));
        let sessions: Value = app.client.get(app.url("/api/llm/sessions/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(sessions["items"], json!([]));
    }

    async fn a_retry_with_the_same_idempotency_key_answers_from_the_first_job(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["once"])]).await;
        let (app, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("idem@example.com").await;
        let key = key_of(&app, &user).await;
        let send = |stream: bool| {
            let mut body = hi();
            body["stream"] = json!(stream);
            app.client.post(app.url("/v1/chat/completions")).bearer_auth(&key).header("idempotency-key", "req-1").json(&body).send()
        };
        let first = send(false).await.unwrap();
        let job = first.headers()["x-parley-job-id"].to_str().unwrap().to_owned();
        let first: Value = first.json().await.unwrap();
        let again = send(false).await.unwrap();
        assert_eq!(again.headers()["x-parley-job-id"].to_str().unwrap(), job);
        let again: Value = again.json().await.unwrap();
        assert_eq!((&again["id"], &again["choices"]), (&first["id"], &first["choices"]));
        // Streamed, the retry replays the same job's text.
        let streamed = send(true).await.unwrap();
        assert_eq!(streamed.headers()["x-parley-job-id"].to_str().unwrap(), job);
        let text = streamed.text().await.unwrap();
        assert!(text.contains("\"content\":\"once\"") && text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(fake.request_count(), 1);
    }

    async fn a_streamed_completion_sends_openai_chunks_usage_and_done(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Bon", "jour"])]).await;
        let (app, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("stream@example.com").await;
        let key = key_of(&app, &user).await;
        let mut body = hi();
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let res = complete(&app, &key, &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let job_id = res.headers()["x-parley-job-id"].to_str().unwrap().to_owned();
        let text = tokio::time::timeout(Duration::from_secs(30), res.text()).await.unwrap().unwrap();
        let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(chunks.iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk" && c["model"] == "fake"), "{text}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(content, "Bonjour");
        let last_choice = &chunks[chunks.len() - 2];
        assert_eq!(last_choice["choices"][0]["finish_reason"], "stop");
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 9);
        app.wait_for_status(&user.access, &job_id, "succeeded").await;
    }

    async fn bad_requests_unknown_models_and_provider_failures_get_openai_errors(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::error(400, "no such thing", None)]).await;
        let (app, admin) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("errors@example.com").await;
        let key = key_of(&app, &user).await;
        let res = complete(&app, &key, &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_openai_error(res, StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")).await;
        let mut tools = hi();
        tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        let body = assert_openai_error(complete(&app, &key, &tools).await, StatusCode::BAD_REQUEST, "invalid_request_error", Some("unsupported_parameter")).await;
        assert_eq!(body["error"]["param"], "tools");
        let mut n = hi();
        n["n"] = json!(3);
        assert_openai_error(complete(&app, &key, &n).await, StatusCode::BAD_REQUEST, "invalid_request_error", Some("unsupported_parameter")).await;
        let res = complete(&app, &key, &json!({"model": "fake"})).await;
        assert_openai_error(res, StatusCode::BAD_REQUEST, "invalid_request_error", None).await;
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(&key).body("{not json").send().await.unwrap();
        assert_openai_error(res, StatusCode::BAD_REQUEST, "invalid_request_error", None).await;
        assert_eq!(fake.request_count(), 0);

        // The provider refuses: the job fails at once and the call answers 502.
        let res = complete(&app, &key, &hi()).await;
        assert!(res.headers().contains_key("x-parley-job-id"));
        let body = assert_openai_error(res, StatusCode::BAD_GATEWAY, "api_error", Some("provider_error")).await;
        assert!(!body.to_string().contains("no such thing"), "{body}");

        // A disabled model is not allowed.
        let configs: Value = app.client.get(app.url("/api/llm/configs/")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        let id = configs["items"][0]["id"].as_str().unwrap();
        let res = app.client.patch(app.url(&format!("/api/llm/configs/{id}/"))).bearer_auth(&admin.access).json(&json!({"enabled": false})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_openai_error(complete(&app, &key, &hi()).await, StatusCode::FORBIDDEN, "permission_error", Some("model_not_allowed")).await;
        let listed: Value = models(&app, &key).await.json().await.unwrap();
        assert_eq!(listed["data"], json!([]));
    }

    async fn a_completion_opting_into_a_session_is_kept_as_a_chat(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Four."]), Step::reply(&["Sums"]), Step::reply(&["Eight."])]).await;
        let (app, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("kept@example.com").await;
        let key = key_of(&app, &user).await;
        let first = json!({"model": "fake", "messages": [{"role": "user", "content": "2+2?"}]});
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(&key).header("x-parley-session", "new").json(&first).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let session = res.headers()["x-parley-session-id"].to_str().unwrap().to_owned();
        // Its first reply gets a generated title, as a chat's does.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s: Value = app.client.get(app.url(&format!("/api/llm/sessions/{session}/"))).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
            if s["title"] == "Sums" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = json!({"model": "fake", "messages": [
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Four."}, {"role": "user", "content": "Times two?"}]});
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(&key).header("x-parley-session", &session).json(&second).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let messages: Value = app.client.get(app.url(&format!("/api/llm/messages/?session_id={session}"))).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        let texts: Vec<(&str, &str, &str)> = messages["items"].as_array().unwrap().iter()
            .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap(), m["status"].as_str().unwrap())).collect();
        assert_eq!(texts, [("user", "2+2?", "complete"), ("assistant", "Four.", "complete"), ("user", "Times two?", "complete"), ("assistant", "Eight.", "complete")]);
        // Someone else's session is not found.
        let other = app.signup("intruder@example.com").await;
        let other_key = key_of(&app, &other).await;
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(&other_key).header("x-parley-session", &session).json(&first).send().await.unwrap();
        assert_openai_error(res, StatusCode::NOT_FOUND, "invalid_request_error", Some("session_not_found")).await;
    }
}
