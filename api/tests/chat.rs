//! LLM chat end to end against wire-level fake providers: streaming, retries, stalls, bad
//! keys, cancellation, resumption, titles, isolation between users.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Account, Backend, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn app_with_model(
    backend: Backend,
    fake: &FakeLlm,
    provider: &str,
    key: &str,
    extra: &[(&str, &str)],
) -> (TestApp, Account) {
    let config = json!({"provider": provider, "api_key": key, "system_prompt": "You are terse."});
    let mut vars = vec![("PARLEY_LLM_STALL_SECS", "1")];
    vars.extend_from_slice(extra);
    let (app, admin, _) = common::app_with_model(backend, &fake.base_url(), config, &vars).await;
    (app, admin)
}

async fn send(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/api/llm/chat/", &body, Some(token)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

async fn message(app: &TestApp, token: &str, session: &str, id: &str) -> Value {
    let page: Value = app
        .client
        .get(app.url(&format!("/api/llm/messages/?session_id={session}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().iter().find(|m| m["id"] == id).cloned().expect("the message")
}

async fn models_id(app: &TestApp, token: &str) -> String {
    let configs: Value =
        app.client.get(app.url("/api/llm/configs/")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    configs["items"][0]["id"].as_str().unwrap().to_owned()
}

/// Sends `message` to a fake that answers 429 with `Retry-After: 1` first: the reply
/// succeeds on the second attempt, made at least that second later. The chat's answer.
async fn succeeds_on_the_second_try_after_retry_after(
    app: &TestApp,
    user: &Account,
    fake: &FakeLlm,
    message: &str,
) -> Value {
    let accepted = send(app, &user.access, json!({"message": message})).await;
    let job = app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(job["attempts"], 2);
    let requests = fake.requests();
    assert!(requests[1].at - requests[0].at >= Duration::from_millis(900), "{:?}", requests[1].at - requests[0].at);
    accepted
}

fn deltas(events: &[common::sse::SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect()
}

both_backends! {
    async fn concurrent_generations_and_message_length_are_limited(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::stall(&["slow"], 5_000)]).await;
        let (app, _) = app_with_model(
            backend,
            &fake,
            "openai_compatible",
            "sk",
            &[("PARLEY_LLM_STALL_SECS", "30"), ("PARLEY_LLM_MAX_MESSAGE_CHARS", "100")],
        )
        .await;
        let user = app.signup("limits@example.com").await;
        // Six at once: the limit holds under concurrency, two get in.
        let app_ref = &app;
        let tries = (0..6).map(|i| {
            let body = json!({"message": format!("n{i}")});
            let token = user.access.clone();
            async move { app_ref.post_json("/api/llm/chat/", &body, Some(&token)).await }
        });
        let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 2, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
        let third = app.post_json("/api/llm/chat/", &json!({"message": "three"}), Some(&user.access)).await;
        assert_error(third, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        let other = app.signup("other@example.com").await;
        let long = app.post_json("/api/llm/chat/", &json!({"message": "x".repeat(101)}), Some(&other.access)).await;
        assert_error(long, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let empty = app.post_json("/api/llm/chat/", &json!({"message": "  "}), Some(&other.access)).await;
        assert_error(empty, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }

    async fn a_message_picking_another_model_moves_its_session_to_that_model(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["one"]), Step::reply(&["two"]), Step::reply(&["three"])]).await;
        let (app, admin) = app_with_model(backend, &fake, "openai_compatible", "sk", &[]).await;
        let second = json!({"name": "second", "provider": "openai_compatible", "model": "other-model",
            "base_url": fake.base_url(), "api_key": "sk"});
        let res = app.post_json("/api/llm/configs/", &second, Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let second: Value = res.json().await.unwrap();
        let user = app.signup("models@example.com").await;
        let first = send(&app, &user.access, json!({"message": "hello"})).await;
        let session = first["session_id"].as_str().unwrap();
        app.wait_for_status(&user.access, first["job_id"].as_str().unwrap(), "succeeded").await;
        let switched = send(&app, &user.access, json!({"message": "again", "session_id": session, "config_id": second["id"]})).await;
        app.wait_for_status(&user.access, switched["job_id"].as_str().unwrap(), "succeeded").await;
        // The next message without a pick keeps the session's new model.
        let kept = send(&app, &user.access, json!({"message": "and again", "session_id": session})).await;
        app.wait_for_status(&user.access, kept["job_id"].as_str().unwrap(), "succeeded").await;
        let mut models = Vec::new();
        for accepted in [&first, &switched, &kept] {
            let reply = accepted["assistant_message_id"].as_str().unwrap();
            models.push(message(&app, &user.access, session, reply).await["model"].clone());
        }
        assert_ne!(models[0], json!("other-model"));
        assert_eq!(models[1..], [json!("other-model"), json!("other-model")]);
        // Another user cannot post into that session, and an unknown session is not found.
        let other = app.signup("intruder@example.com").await;
        let res = app.post_json("/api/llm/chat/", &json!({"message": "hi", "session_id": session}), Some(&other.access)).await;
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }

    async fn more_concurrent_chats_than_database_connections_are_all_accepted(backend: Backend) {
        // A chat request holds one connection for its transaction; it must never wait for a
        // second one, or requests beyond the pool size wait on each other until they fail.
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk", &[("PARLEY_DATABASE_MAX_CONNECTIONS", "2")]).await;
        let mut users = Vec::new();
        for i in 0..8 {
            users.push(app.signup(&format!("pool{i}@example.com")).await);
        }
        let app_ref = &app;
        let posts = users.iter().map(|user| async move {
            app_ref.post_json("/api/llm/chat/", &json!({"message": "hello"}), Some(&user.access)).await.status()
        });
        let statuses: Vec<StatusCode> = futures::future::join_all(posts).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED), "{statuses:?}");
    }

    async fn a_reply_queued_before_payloads_named_the_session_is_still_written(backend: Backend) {
        use parley_shared::jobs::LlmCompletion;
        use parley_shared::store::{chat, jobs};
        let fake = FakeLlm::openai(vec![Step::reply(&["first"]), Step::reply(&["older", " payload"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk", &[]).await;
        let user = app.signup("older@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hello"})).await;
        app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
        // A pending reply and its job as an earlier version wrote them: `{"message_id": ...}`.
        let db = &app.state.db;
        let session: parley_shared::ids::ChatSessionId = accepted["session_id"].as_str().unwrap().parse().unwrap();
        let owner: parley_shared::ids::UserId = user.id.parse().unwrap();
        let reply = chat::NewMessage {
            id: parley_shared::ids::MessageId::new(),
            session_id: session,
            user: owner,
            role: chat::MessageRole::Assistant,
            content: "",
            status: chat::MessageStatus::Pending,
            model: None,
            job: None,
        };
        let reply_id = reply.id;
        let mut conn = db.writer.acquire().await.unwrap();
        chat::insert_messages(&mut conn, &[reply]).await.unwrap();
        drop(conn);
        let job = jobs::enqueue(&db.writer, Some(owner), &LlmCompletion { message_id: reply_id, session_id: None }).await.unwrap();
        let stored: String = sqlx::query_scalar("select payload from parley_jobs where id = $1")
            .bind(job.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(!stored.contains("session_id"), "{stored}");
        app.state.queue.wake(parley_shared::jobs::QueueName::Interactive);
        app.wait_for_status(&user.access, job, "succeeded").await;
        let written = message(&app, &user.access, &session.to_string(), &reply_id.to_string()).await;
        assert_eq!(written["content"], "older payload");
        // Its prompt held the session's history: the question, then the first reply.
        let prompts: Vec<Vec<Value>> =
            fake.requests().iter().map(|r| r.body["messages"].as_array().unwrap().clone()).collect();
        let history = prompts.iter().find(|m| m.last().is_some_and(|last| last["role"] == "assistant" && last["content"] == "first"));
        assert!(history.is_some_and(|m| m.iter().any(|m| m["content"] == "hello")), "{prompts:?}");
    }

    async fn a_reply_already_written_succeeds_again_even_once_its_model_is_disabled(backend: Backend) {
        use parley_shared::jobs::LlmCompletion;
        use parley_shared::store::jobs;
        let fake = FakeLlm::openai(vec![Step::reply(&["done"])]).await;
        let (app, admin) = app_with_model(backend, &fake, "openai_compatible", "sk", &[]).await;
        let user = app.signup("rerun@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hello"})).await;
        app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
        let id = models_id(&app, &admin.access).await;
        let res = app.client.patch(app.url(&format!("/api/llm/configs/{id}/"))).bearer_auth(&admin.access).json(&json!({"enabled": false})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // The reply's job run once more (as after a lost outcome): the message is complete.
        let payload = LlmCompletion {
            message_id: accepted["assistant_message_id"].as_str().unwrap().parse().unwrap(),
            session_id: Some(accepted["session_id"].as_str().unwrap().parse().unwrap()),
        };
        let owner: parley_shared::ids::UserId = user.id.parse().unwrap();
        let job = jobs::enqueue(&app.state.db.writer, Some(owner), &payload).await.unwrap();
        app.state.queue.wake(parley_shared::jobs::QueueName::Interactive);
        app.wait_for_status(&user.access, job, "succeeded").await;
        let session = accepted["session_id"].as_str().unwrap();
        let reply = message(&app, &user.access, session, accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!((reply["status"].as_str(), reply["content"].as_str()), (Some("complete"), Some("done")));
    }

    async fn a_reply_streams_as_deltas_and_is_saved_with_usage(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Hello", ", ", "world"])]).await;
        let (app, admin) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("chat@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "Say hello"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        assert_eq!(deltas(&events), "Hello, world");
        assert_eq!(events.last().unwrap().event, "done");
        let reply = message(&app, &user.access, accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!(reply["status"], "complete");
        assert_eq!(reply["content"], "Hello, world");
        assert_eq!((reply["prompt_tokens"].as_i64(), reply["completion_tokens"].as_i64()), (Some(7), Some(3)));
        assert_eq!(reply["model"], "fake-model");
        let request = &fake.requests()[0];
        assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
        let sent = request.body["messages"].as_array().unwrap();
        assert_eq!((sent[0]["role"].as_str(), sent[0]["content"].as_str()), (Some("system"), Some("You are terse.")));
        assert_eq!(sent.last().unwrap()["content"], "Say hello");
        // A new endpoint does not inherit the key.
        let id = models_id(&app, &admin.access).await;
        let moved: Value = app.client.patch(app.url(&format!("/api/llm/configs/{id}/"))).bearer_auth(&admin.access)
            .json(&json!({"base_url": "http://127.0.0.1:9/v1"})).send().await.unwrap().json().await.unwrap();
        assert_eq!(moved["has_api_key"], false, "{moved}");
        let back: Value = app.client.patch(app.url(&format!("/api/llm/configs/{id}/"))).bearer_auth(&admin.access)
            .json(&json!({"base_url": fake.base_url(), "api_key": "sk-test"})).send().await.unwrap().json().await.unwrap();
        assert_eq!(back["has_api_key"], true);
        // The key is write-only.
        let configs = app.client.get(app.url("/api/llm/configs/")).bearer_auth(&admin.access).send().await.unwrap().text().await.unwrap();
        assert!(!configs.contains("sk-test") && configs.contains("\"has_api_key\":true"), "{configs}");
        let models: Value = app.client.get(app.url("/api/llm/models/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(models["items"][0]["model"], "fake-model");
        assert!(models["items"][0].get("api_key").is_none() && models["items"][0].get("base_url").is_none());
    }

    async fn a_429_is_retried_after_its_retry_after(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::error(429, "slow down", Some(1)), Step::reply(&["ok"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("ratelimit@example.com").await;
        succeeds_on_the_second_try_after_retry_after(&app, &user, &fake, "hi").await;
    }

    async fn a_server_error_is_retried(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::error(500, "boom", None), Step::reply(&["fine"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("fivehundred@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hi"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        assert_eq!(deltas(&events), "fine");
        assert_eq!(app.job(&user.access, accepted["job_id"].as_str().unwrap()).await["attempts"], 2);
    }

    async fn a_stalled_stream_is_retried_without_duplicated_text(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::stall_forever(&["Hel"]), Step::reply(&["Hello", " there"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("stall@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hi"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        let restart = events.iter().position(|e| e.data["status"] == "restarted").expect("a restart event");
        assert_eq!(deltas(&events[..restart]), "Hel");
        assert_eq!(deltas(&events[restart..]), "Hello there");
        let reply = message(&app, &user.access, accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!(reply["content"], "Hello there");
    }

    async fn a_bad_key_fails_at_once_without_retry(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["never"])]).await.require_key("sk-right");
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-wrong", &[]).await;
        let user = app.signup("badkey@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hi"})).await;
        let job = app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "failed").await;
        assert_eq!(job["attempts"], 1);
        assert_eq!(fake.request_count(), 1);
        let reply = message(&app, &user.access, accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!(reply["status"], "failed");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    async fn cancelling_stops_the_stream_and_keeps_the_partial_text(backend: Backend) {
        let chunks: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let fake = FakeLlm::openai(vec![Step::reply_with_delays(&chunks, 0, 100)]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("cancelchat@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "count"})).await;
        let (session, reply_id) = (accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while message(&app, &user.access, session, reply_id).await["content"].as_str().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = std::time::Instant::now();
        let res = app.post_json(&format!("/api/jobs/{}/cancel/", accepted["job_id"].as_str().unwrap()), &Value::Null, Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        // The provider's stream is dropped within a second.
        fake.wait_for_disconnects(1, Duration::from_millis(1500)).await;
        app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "cancelled").await;
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let reply = message(&app, &user.access, session, reply_id).await;
        assert_eq!(reply["status"], "cancelled");
        let content = reply["content"].as_str().unwrap();
        assert!(content.starts_with("w0 ") && content.len() < chunks.concat().len(), "{content}");
    }

    async fn a_client_resumes_mid_stream_from_its_last_event(backend: Backend) {
        let chunks: Vec<String> = (0..12).map(|i| format!("t{i} ")).collect();
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let fake = FakeLlm::openai(vec![Step::reply_with_delays(&chunks, 0, 80)]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("resumechat@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "go"})).await;
        let url = accepted["stream_url"].as_str().unwrap();
        let first = common::sse::take(&app, &user.access, url, None, 4).await;
        let last_id = first.last().unwrap().id;
        let rest = common::sse::collect(&app, &user.access, url, Some(last_id)).await;
        assert_eq!(rest.first().unwrap().id, last_id + 1);
        let text = format!("{}{}", deltas(&first), deltas(&rest));
        assert_eq!(text, chunks.concat());
    }

    async fn two_users_chatting_at_once_see_only_their_own_data(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply_with_delays(&["a", "b", "c"], 0, 50)]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let ann = app.signup("ann@example.com").await;
        let bob = app.signup("bob@example.com").await;
        let (a, b) = tokio::join!(send(&app, &ann.access, json!({"message": "ann's secret"})), send(&app, &bob.access, json!({"message": "bob's secret"})));
        for (who, acc) in [(&ann, &a), (&bob, &b)] {
            app.wait_for_status(&who.access, acc["job_id"].as_str().unwrap(), "succeeded").await;
        }
        let list: Value = app.client.get(app.url("/api/llm/sessions/")).bearer_auth(&ann.access).send().await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [a["session_id"].as_str().unwrap()]);
        let bob_session = b["session_id"].as_str().unwrap();
        for path in [format!("/api/llm/sessions/{bob_session}/"), format!("/api/llm/messages/?session_id={bob_session}"), format!("/api/jobs/{}/", b["job_id"].as_str().unwrap())] {
            let res = app.client.get(app.url(&path)).bearer_auth(&ann.access).send().await.unwrap();
            assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        }
        let res = app.post_json("/api/llm/chat/", &json!({"message": "sneak", "session_id": bob_session}), Some(&ann.access)).await;
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let search: Value = app.client.get(app.url("/api/llm/sessions/?search=secret")).bearer_auth(&ann.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(search["items"].as_array().unwrap().len(), 1);
    }

    async fn the_anthropic_provider_retries_a_429_and_fails_a_bad_key_at_once(backend: Backend) {
        let fake = FakeLlm::anthropic(vec![Step::error(429, "rate limited", Some(1)), Step::reply(&["ok"])]).await.require_key("sk-ant");
        let (app, admin) = app_with_model(backend, &fake, "anthropic", "sk-ant", &[]).await;
        let user = app.signup("claude429@example.com").await;
        let accepted = succeeds_on_the_second_try_after_retry_after(&app, &user, &fake, "salut").await;
        // The key changes to a wrong one: one request, no retry, a clear error.
        let id = models_id(&app, &admin.access).await;
        let res = app.client.patch(app.url(&format!("/api/llm/configs/{id}/"))).bearer_auth(&admin.access)
            .json(&json!({"api_key": "sk-wrong"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let before = fake.request_count();
        let accepted = send(&app, &user.access, json!({"message": "encore", "session_id": accepted["session_id"]})).await;
        let job = app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "failed").await;
        assert_eq!(job["attempts"], 1);
        assert!(job["error"].as_str().unwrap().contains("credentials"), "{job}");
        assert_eq!(fake.request_count(), before + 1);
    }

    async fn a_partial_reply_is_saved_within_half_a_second_even_when_the_provider_pauses(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply_with_delays(&["first", " second"], 0, 4_000)]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[("PARLEY_LLM_STALL_SECS", "30")]).await;
        let user = app.signup("partial@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "go"})).await;
        let (session, reply_id) = (accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let reply = loop {
            let reply = message(&app, &user.access, session, reply_id).await;
            if !reply["content"].as_str().unwrap().is_empty() {
                break reply;
            }
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Saved while the provider is still silent after its first token.
        assert_eq!(reply["content"], "first");
        assert_eq!(reply["status"], "streaming");
        app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(message(&app, &user.access, session, reply_id).await["content"], "first second");
    }

    async fn an_in_stream_error_with_a_string_code_is_read_by_its_code(backend: Backend) {
        // LiteLLM's proxy sends the code as a string and a type name of its own.
        let throttled = json!({"message": "litellm.RateLimitError: slow down", "type": "throttling_error", "param": null, "code": "429"});
        let refused = json!({"message": "litellm.AuthenticationError: bad key", "type": "auth_error", "param": null, "code": "401"});
        let fake = FakeLlm::openai(vec![Step::stream_error(&[], throttled), Step::reply(&["ok"]), Step::stream_error(&[], refused)]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("litellm@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hi"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        let retrying = events.iter().find(|e| e.data["status"] == "retrying").expect("a retry");
        let error = retrying.data["error"].as_str().unwrap();
        assert_eq!(error, "the provider is rate limiting requests");
        assert_eq!(deltas(&events), "ok");
        // An in-stream 401 fails at once instead of being retried.
        let accepted = send(&app, &user.access, json!({"message": "again", "session_id": accepted["session_id"]})).await;
        let job = app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "failed").await;
        assert_eq!(job["attempts"], 1, "{job}");
        assert!(job["error"].as_str().unwrap().contains("credentials"), "{job}");
    }

    async fn a_whole_json_message_answering_a_stream_is_accepted_on_the_anthropic_path(backend: Backend) {
        let fake = FakeLlm::anthropic(vec![Step::whole_json(&["Bonjour", " !"])]).await;
        let (app, _) = app_with_model(backend, &fake, "anthropic", "sk-ant", &[]).await;
        let user = app.signup("wholejson@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "salut"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        assert_eq!(deltas(&events), "Bonjour !");
        assert_eq!(events.last().unwrap().event, "done");
        let job = app.job(&user.access, accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["attempts"], 1, "{job}");
        let reply = message(&app, &user.access, accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!((reply["status"].as_str(), reply["completion_tokens"].as_i64()), (Some("complete"), Some(2)));
    }

    async fn a_retry_after_an_attempt_without_text_sends_no_restart(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::error(500, "boom", None), Step::stream_error(&[], json!({"message": "overloaded", "type": "server_error", "code": null})), Step::reply(&["fine"])]).await;
        let (app, _) = app_with_model(backend, &fake, "openai_compatible", "sk-test", &[]).await;
        let user = app.signup("norestart@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "hi"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        assert_eq!(deltas(&events), "fine");
        assert_eq!(events.iter().filter(|e| e.data["status"] == "retrying").count(), 2);
        assert!(events.iter().all(|e| e.data["status"] != "restarted"), "{events:?}");
        assert_eq!(app.job(&user.access, accepted["job_id"].as_str().unwrap()).await["attempts"], 3);
    }

    async fn the_anthropic_provider_streams_a_reply(backend: Backend) {
        let fake = FakeLlm::anthropic(vec![Step::reply(&["Bonjour", " !"])]).await.require_key("sk-ant");
        let (app, _) = app_with_model(backend, &fake, "anthropic", "sk-ant", &[]).await;
        let user = app.signup("claude@example.com").await;
        let accepted = send(&app, &user.access, json!({"message": "salut"})).await;
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        assert_eq!(deltas(&events), "Bonjour !");
        let body = &fake.requests()[0].body;
        assert_eq!(body["system"], "You are terse.");
        assert_eq!(body["messages"][0]["role"], "user");
        let reply = message(&app, &user.access, accepted["session_id"].as_str().unwrap(), accepted["assistant_message_id"].as_str().unwrap()).await;
        assert_eq!(reply["completion_tokens"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reply_gets_a_generated_title_and_a_failed_title_keeps_the_fallback() {
    let fake =
        FakeLlm::openai(vec![Step::reply(&["Hi!"]), Step::reply(&["<think>hmm</think>\"Friendly Greeting.\""])]).await;
    let (app, _) = app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[]).await;
    let user = app.signup("titles@example.com").await;
    let accepted = send(&app, &user.access, json!({"message": "Hello there, how are you today?"})).await;
    let session = accepted["session_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = app
            .client
            .get(app.url(&format!("/api/llm/sessions/{session}/")))
            .bearer_auth(&user.access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["title"] == "Friendly Greeting" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let failing = FakeLlm::openai(vec![Step::reply(&["Sure."]), Step::error(400, "no titles today", None)]).await;
    let (app, _) = app_with_model(Backend::Sqlite, &failing, "openai_compatible", "sk", &[]).await;
    let user = app.signup("notitle@example.com").await;
    let accepted = send(&app, &user.access, json!({"message": "Plan a trip to Lisbon"})).await;
    app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    failing.wait_for_requests(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s: Value = app
        .client
        .get(app.url(&format!("/api/llm/sessions/{}/", accepted["session_id"].as_str().unwrap())))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["title"], "Plan a trip to Lisbon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_accept_event_stream_answers_with_the_stream() {
    let fake = FakeLlm::openai(vec![Step::reply(&["streamed"])]).await;
    let (app, _) = app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[]).await;
    let user = app.signup("accept@example.com").await;
    let res = app
        .client
        .post(app.url("/api/llm/chat/"))
        .bearer_auth(&user.access)
        .header("accept", "text/event-stream")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    let events = common::sse::read(res).await;
    assert_eq!(deltas(&events), "streamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_chat_request_with_the_same_idempotency_key_creates_one_reply() {
    let fake = FakeLlm::openai(vec![Step::reply(&["once"])]).await;
    let (app, _) = app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[]).await;
    let user = app.signup("idem@example.com").await;
    let post = || {
        app.client
            .post(app.url("/api/llm/chat/"))
            .bearer_auth(&user.access)
            .header("idempotency-key", "msg-1")
            .json(&json!({"message": "only once"}))
            .send()
    };
    let first: Value = post().await.unwrap().json().await.unwrap();
    let second = post().await.unwrap();
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    app.wait_for_status(&user.access, first["job_id"].as_str().unwrap(), "succeeded").await;
    let page: Value = app
        .client
        .get(app.url(&format!("/api/llm/messages/?session_id={}", first["session_id"].as_str().unwrap())))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "one question, one reply");
    let replies = fake
        .requests()
        .iter()
        .filter(|r| r.body["messages"].as_array().unwrap().last().unwrap()["content"] == "only once")
        .count();
    assert_eq!(replies, 1, "one generation (the other request writes the title)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_can_be_renamed_tagged_searched_and_deleted() {
    let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
    let (app, _) = app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[]).await;
    let user = app.signup("sessions@example.com").await;
    let a = send(&app, &user.access, json!({"message": "about rust"})).await;
    let b = send(&app, &user.access, json!({"message": "about cooking"})).await;
    for acc in [&a, &b] {
        app.wait_for_status(&user.access, acc["job_id"].as_str().unwrap(), "succeeded").await;
    }
    let sa = a["session_id"].as_str().unwrap();
    let res = app
        .client
        .patch(app.url(&format!("/api/llm/sessions/{sa}/")))
        .bearer_auth(&user.access)
        .json(&json!({"title": "Rust notes", "tags": ["code", "work"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let get = |q: &'static str| {
        let req = app.client.get(app.url(&format!("/api/llm/sessions/{q}"))).bearer_auth(&user.access);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let all = get("").await;
    assert_eq!(all["items"][0]["id"], b["session_id"], "newest first");
    let tagged = get("?tag=code").await;
    assert_eq!(tagged["items"].as_array().unwrap().len(), 1);
    assert_eq!(tagged["items"][0]["tags"], json!(["code", "work"]));
    assert_eq!(get("?search=COOKING").await["items"][0]["id"], b["session_id"]);
    assert_eq!(get("?search=notes").await["items"][0]["id"], a["session_id"]);
    let res =
        app.client.delete(app.url(&format!("/api/llm/sessions/{sa}/"))).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .client
        .get(app.url(&format!("/api/llm/messages/?session_id={sa}")))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    // `session_id` is a required parameter.
    let res = app.client.get(app.url("/api/llm/messages/")).bearer_auth(&user.access).send().await.unwrap();
    assert_error(res, StatusCode::BAD_REQUEST, "invalid_query").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_stops_its_reply_in_progress() {
    let fake = FakeLlm::openai(vec![Step::stall_forever(&["partial"])]).await;
    let (app, _) =
        app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[("PARLEY_LLM_STALL_SECS", "60")]).await;
    let user = app.signup("deleting@example.com").await;
    let accepted = send(&app, &user.access, json!({"message": "long one"})).await;
    let job = accepted["job_id"].as_str().unwrap();
    // The reply is being streamed: the provider has the request.
    fake.wait_for_requests(1, Duration::from_secs(10)).await;
    let res = app
        .client
        .delete(app.url(&format!("/api/llm/sessions/{}/", accepted["session_id"].as_str().unwrap())))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.wait_for_status(&user.access, job, "cancelled").await;
    fake.wait_for_disconnects(1, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_are_trimmed_to_the_context_window_newest_kept() {
    let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
    let (app, admin) = app_with_model(Backend::Sqlite, &fake, "openai_compatible", "sk", &[]).await;
    let configs: Value = app
        .client
        .get(app.url("/api/llm/configs/"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = configs["items"][0]["id"].as_str().unwrap();
    let res = app
        .client
        .patch(app.url(&format!("/api/llm/configs/{id}/")))
        .bearer_auth(&admin.access)
        .json(&json!({"context_window": 400, "max_tokens": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let user = app.signup("context@example.com").await;
    let first = send(&app, &user.access, json!({"message": format!("old {}", "x".repeat(2000))})).await;
    app.wait_for_status(&user.access, first["job_id"].as_str().unwrap(), "succeeded").await;
    let second = send(&app, &user.access, json!({"message": "new question", "session_id": first["session_id"]})).await;
    app.wait_for_status(&user.access, second["job_id"].as_str().unwrap(), "succeeded").await;
    let last = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.body["messages"].as_array().unwrap().iter().any(|m| m["content"] == "new question"))
        .unwrap();
    let sent = last.body["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "system");
    assert!(sent.iter().all(|m| !m["content"].as_str().unwrap().starts_with("old ")), "{sent:?}");
    assert_eq!(sent.last().unwrap()["content"], "new question");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_distributed_profile_a_worker_process_streams_a_reply_watched_through_another_api() {
    if common::postgres_url().is_none() {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the distributed test");
        return;
    }
    let chunks: Vec<String> = (0..8).map(|i| format!("d{i} ")).collect();
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let fake = FakeLlm::openai(vec![Step::reply_with_delays(&chunks, 50, 30)]).await;
    let (first, _) =
        app_with_model(Backend::Postgres, &fake, "openai_compatible", "sk", &[("PARLEY_WORKERS", "0")]).await;
    let second = common::spawn_peer(&first).await;
    let mut worker = first.spawn_worker_process();
    let user = first.signup("distributed@example.com").await;
    let accepted = send(&first, &user.access, json!({"message": "stream across processes"})).await;
    let events = common::sse::collect(&second, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
    assert_eq!(deltas(&events), chunks.concat());
    assert_eq!(events.last().unwrap().event, "done");
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "every event once, in order");
    worker.kill().unwrap();
    let _ = worker.wait();
}
