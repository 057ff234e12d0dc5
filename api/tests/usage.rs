//! Token usage and quotas end to end: replies, titles and `/v1` calls record their tokens;
//! budgets and allowed models refuse a chat before its job is created.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Account, Backend, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The app, its admin and the id of its default config `fake`.
async fn app_with_model(backend: Backend, fake: &FakeLlm, extra: &[(&str, &str)]) -> (TestApp, Account, String) {
    let mut vars = vec![("PARLEY_LLM_STALL_SECS", "1"), ("PARLEY_API_KEY_RPM", "1000")];
    vars.extend_from_slice(extra);
    let (app, admin, config) =
        common::app_with_model(backend, &fake.base_url(), json!({"api_key": "sk-upstream"}), &vars).await;
    (app, admin, config["id"].as_str().unwrap().to_owned())
}

async fn chat(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post_json("/api/llm/chat/", &body, Some(token)).await
}

/// Sends a message and waits for its reply to succeed; the chat's answer.
async fn chat_ok(app: &TestApp, token: &str, message: &str) -> Value {
    let res = chat(app, token, json!({"message": message})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{}", res.text().await.unwrap());
    let accepted: Value = res.json().await.unwrap();
    app.wait_for_status(token, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    accepted
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap()
}

async fn my_usage(app: &TestApp, token: &str) -> Value {
    let res = get(app, token, "/api/users/me/usage/").await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Polls one's usage until it holds `n` rows (the title job ends after the reply).
async fn wait_for_rows(app: &TestApp, token: &str, n: usize) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let usage = my_usage(app, token).await;
        if usage["items"].as_array().unwrap().len() >= n {
            return usage;
        }
        assert!(std::time::Instant::now() < deadline, "usage never had {n} rows: {usage}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn patch_user(app: &TestApp, admin: &Account, id: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/admin/users/{id}/")))
        .bearer_auth(&admin.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn job_count(app: &TestApp, token: &str) -> usize {
    let page: Value = get(app, token, "/api/jobs/?limit=100").await.json().await.unwrap();
    page["items"].as_array().unwrap().len()
}

fn row<'a>(usage: &'a Value, kind: &str) -> &'a Value {
    usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} row: {usage}"))
}

both_backends! {
    async fn replies_and_titles_record_their_tokens_per_day_and_model(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Hello", " there", "!"]), Step::reply(&["Greetings"])]).await;
        let (app, _admin, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("usage@example.com").await;
        chat_ok(&app, &user.access, "Hi").await;
        let usage = wait_for_rows(&app, &user.access, 2).await;
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let reply = row(&usage, "chat");
        // The provider's figures: 7 prompt tokens, one completion token a chunk.
        assert_eq!((reply["prompt_tokens"].as_i64(), reply["completion_tokens"].as_i64()), (Some(7), Some(3)), "{usage}");
        assert_eq!(reply["total_tokens"], 10);
        assert_eq!(reply["period"], today.as_str());
        assert_eq!(reply["model"], "fake-model");
        assert_eq!(reply["user_id"], user.id.as_str());
        let title = row(&usage, "title");
        assert_eq!((title["prompt_tokens"].as_i64(), title["completion_tokens"].as_i64()), (Some(7), Some(1)));
        assert_eq!(usage["daily"]["used"], 18, "{usage}");
        assert_eq!(usage["monthly"]["used"], 18);
        assert!(usage["daily"]["budget"].is_null(), "no budget by default: {usage}");

        // Another user's usage is not one's own.
        let other = app.signup("other@example.com").await;
        let theirs = my_usage(&app, &other.access).await;
        assert_eq!(theirs["items"], json!([]));
        assert_eq!(theirs["daily"]["used"], 0);
    }

    async fn a_failed_reply_records_parleys_own_count_of_its_prompt(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::error(400, "bad request", None)]).await;
        let (app, _admin, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("failed@example.com").await;
        let res = chat(&app, &user.access, json!({"message": "Tell me about the sea"})).await;
        let accepted: Value = res.json().await.unwrap();
        app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "failed").await;
        let usage = wait_for_rows(&app, &user.access, 1).await;
        let reply = row(&usage, "chat");
        assert!(reply["prompt_tokens"].as_i64().unwrap() > 0, "{usage}");
        assert_eq!(reply["completion_tokens"], 0);
    }

    async fn a_quota_crossed_mid_day_refuses_the_next_chat_until_it_resets(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["One", " two"])]).await;
        let (app, admin, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("budget@example.com").await;
        let res = patch_user(&app, &admin, &user.id, json!({"token_budget_daily": 12})).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
        let view: Value = res.json().await.unwrap();
        assert_eq!(view["quota"]["token_budget_daily"], 12);
        assert!(view["quota"]["allowed_config_ids"].is_null());

        // 9 tokens: under the budget, so this chat is accepted; with its title, 17.
        chat_ok(&app, &user.access, "First").await;
        let usage = wait_for_rows(&app, &user.access, 2).await;
        assert_eq!(usage["daily"]["budget"], 12);
        let jobs = job_count(&app, &user.access).await;

        let res = chat(&app, &user.access, json!({"message": "Second"})).await;
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        let body = assert_error(res, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        let resets_at: chrono::DateTime<chrono::Utc> = body["error"]["resets_at"].as_str().unwrap().parse().unwrap();
        let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive().and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(resets_at.naive_utc(), tomorrow);
        assert!((1..=86_400).contains(&retry_after), "{retry_after}");
        assert_eq!(job_count(&app, &user.access).await, jobs, "no job was created for the refused chat");

        // A raised budget lets the user chat again; a default budget applies to others.
        let res = patch_user(&app, &admin, &user.id, json!({"token_budget_daily": 1000})).await;
        assert_eq!(res.status(), StatusCode::OK);
        chat_ok(&app, &user.access, "Third").await;
    }

    async fn the_default_monthly_budget_comes_from_the_environment(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin, _) = app_with_model(backend, &fake, &[("PARLEY_TOKEN_BUDGET_MONTHLY", "0")]).await;
        let user = app.signup("monthly@example.com").await;
        let body = assert_error(chat(&app, &user.access, json!({"message": "Hi"})).await, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        let resets_at: chrono::DateTime<chrono::Utc> = body["error"]["resets_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(resets_at.format("%d %H:%M:%S").to_string(), "01 00:00:00");
        // An account's own budget overrides the default; null returns it to the default.
        patch_user(&app, &admin, &user.id, json!({"token_budget_monthly": 100})).await;
        chat_ok(&app, &user.access, "Hi").await;
        let res = patch_user(&app, &admin, &user.id, json!({"token_budget_monthly": null})).await;
        let view: Value = res.json().await.unwrap();
        assert!(view["quota"]["token_budget_monthly"].is_null());
        assert_error(chat(&app, &user.access, json!({"message": "Hi"})).await, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    }

    async fn a_model_the_account_may_not_use_is_refused_with_403(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin, config) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("limited@example.com").await;
        let other = uuid::Uuid::now_v7().to_string();
        let res = patch_user(&app, &admin, &user.id, json!({"allowed_config_ids": [other]})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let jobs = job_count(&app, &user.access).await;
        assert_error(chat(&app, &user.access, json!({"message": "Hi"})).await, StatusCode::FORBIDDEN, "model_not_allowed").await;
        assert_error(chat(&app, &user.access, json!({"message": "Hi", "config_id": config})).await, StatusCode::FORBIDDEN, "model_not_allowed").await;
        assert_eq!(job_count(&app, &user.access).await, jobs);
        // The model list shows only what the account may use.
        let models: Value = get(&app, &user.access, "/api/llm/models/").await.json().await.unwrap();
        assert_eq!(models["items"], json!([]), "{models}");
        let models: Value = get(&app, &admin.access, "/api/llm/models/").await.json().await.unwrap();
        assert_eq!(models["items"].as_array().unwrap().len(), 1, "{models}");

        let res = patch_user(&app, &admin, &user.id, json!({"allowed_config_ids": [config, other]})).await;
        let view: Value = res.json().await.unwrap();
        assert_eq!(view["quota"]["allowed_config_ids"].as_array().unwrap().len(), 2);
        chat_ok(&app, &user.access, "Hi").await;

        // Bad values are refused, and the quota is shown on the account.
        let res = patch_user(&app, &admin, &user.id, json!({"token_budget_daily": -1})).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = patch_user(&app, &admin, &user.id, json!({"allowed_config_ids": ["not an id"]})).await;
        assert!(res.status().is_client_error());
        let shown: Value = get(&app, &admin.access, &format!("/api/admin/users/{}/", user.id)).await.json().await.unwrap();
        assert_eq!(shown["quota"]["allowed_config_ids"].as_array().unwrap().len(), 2);
    }

    async fn v1_calls_record_usage_and_answer_429_in_openais_shape_over_budget(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["a", "b", "c", "d"])]).await;
        let (app, admin, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("api@example.com").await;
        let created: Value = app.post_json("/api/users/me/api-keys/", &json!({"name": "k"}), Some(&user.access)).await.json().await.unwrap();
        let key = created["key"].as_str().unwrap();
        let body = json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}]});
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
        let usage = wait_for_rows(&app, &user.access, 1).await;
        let api = row(&usage, "api");
        assert_eq!((api["prompt_tokens"].as_i64(), api["completion_tokens"].as_i64()), (Some(7), Some(4)), "{usage}");

        patch_user(&app, &admin, &user.id, json!({"token_budget_daily": 5})).await;
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
        assert_eq!(error["error"]["code"], "quota_exceeded");

        patch_user(&app, &admin, &user.id, json!({"token_budget_daily": null, "allowed_config_ids": []})).await;
        let res = app.client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["code"], "model_not_allowed", "{error}");
        // And `/v1/models` no longer lists it.
        let res = app.client.get(app.url("/v1/models")).bearer_auth(key).send().await.unwrap();
        let models: Value = res.json().await.unwrap();
        assert_eq!(models["data"], json!([]), "{models}");
    }

    async fn admins_read_everyones_usage_grouped_filtered_and_paginated(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin, _) = app_with_model(backend, &fake, &[]).await;
        let alice = app.signup("alice@example.com").await;
        let bob = app.signup("bob@example.com").await;
        chat_ok(&app, &alice.access, "Hi").await;
        chat_ok(&app, &bob.access, "Hi").await;
        wait_for_rows(&app, &alice.access, 2).await;
        wait_for_rows(&app, &bob.access, 2).await;

        let month = chrono::Utc::now().format("%Y-%m").to_string();
        let first: Value = get(&app, &admin.access, "/api/admin/usage/?group_by=month&limit=2").await.json().await.unwrap();
        let cursor = first["next_cursor"].as_str().expect("a second page");
        let second: Value = get(&app, &admin.access, &format!("/api/admin/usage/?group_by=month&limit=2&cursor={}", urlencode(cursor))).await.json().await.unwrap();
        let mut rows: Vec<Value> = first["items"].as_array().unwrap().clone();
        rows.extend(second["items"].as_array().unwrap().iter().cloned());
        assert_eq!(rows.len(), 4, "a chat and a title row for each: {rows:?}");
        assert!(second["next_cursor"].is_null());
        assert!(rows.iter().all(|r| r["period"] == month.as_str()));
        let users: std::collections::BTreeSet<_> = rows.iter().map(|r| r["user_id"].as_str().unwrap()).collect();
        assert_eq!(users, [alice.id.as_str(), bob.id.as_str()].into_iter().collect());

        let only_bob: Value = get(&app, &admin.access, &format!("/api/admin/usage/?user_id={}", bob.id)).await.json().await.unwrap();
        assert_eq!(only_bob["items"].as_array().unwrap().len(), 2);
        assert!(only_bob["items"].as_array().unwrap().iter().all(|r| r["user_id"] == bob.id.as_str()));
        let none: Value = get(&app, &admin.access, "/api/admin/usage/?model=other").await.json().await.unwrap();
        assert_eq!(none["items"], json!([]));
        let past: Value = get(&app, &admin.access, "/api/admin/usage/?from=2020-01-01&to=2020-12-31").await.json().await.unwrap();
        assert_eq!(past["items"], json!([]));

        assert_error(get(&app, &alice.access, "/api/admin/usage/").await, StatusCode::FORBIDDEN, "forbidden").await;
        assert_error(get(&app, &admin.access, "/api/admin/usage/?limit=0").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = get(&app, &admin.access, "/api/admin/usage/?from=yesterday").await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

both_backends! {
    async fn a_rollup_sums_old_days_into_one_row_and_reads_answer_the_same(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["a", "b"])]).await;
        let (app, admin, _) = app_with_model(backend, &fake, &[]).await;
        let user = app.signup("rolled@example.com").await;
        chat_ok(&app, &user.access, "One").await;
        chat_ok(&app, &user.access, "Two").await;
        wait_for_rows(&app, &user.access, 2).await;
        // Wait for both titles: four attempt rows in all.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let count = |app: &TestApp| {
            let pool = app.state.db.pool.clone();
            async move { sqlx::query_scalar::<_, i64>("select count(*) from token_usage").fetch_one(&pool).await.unwrap() }
        };
        while count(&app).await < 4 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        sqlx::query("update token_usage set day = '2020-01-15'").execute(&app.state.db.writer).await.unwrap();
        let path = "/api/admin/usage/?from=2020-01-01&to=2020-01-31&group_by=month";
        let before: Value = get(&app, &admin.access, path).await.json().await.unwrap();

        let rolled = parley_shared::store::usage::rollup(&app.state.db, "2020-02-01").await.unwrap();
        assert_eq!(rolled, 4);
        assert_eq!(count(&app).await, 2, "one row per kind (chat, title) of the day");
        let after: Value = get(&app, &admin.access, path).await.json().await.unwrap();
        assert_eq!(before["items"], after["items"]);
        assert_eq!(row(&after, "chat")["requests"], 2);
        assert_eq!(row(&after, "chat")["total_tokens"], 18);
        // A second rollup finds nothing new and changes nothing.
        assert_eq!(parley_shared::store::usage::rollup(&app.state.db, "2020-02-01").await.unwrap(), 0);
        let again: Value = get(&app, &admin.access, path).await.json().await.unwrap();
        assert_eq!(again["items"], after["items"]);
    }
}
