//! Admin stats per day: accounts, active users, sessions, messages, tokens per model, jobs
//! per kind and final status with run-time percentiles, and the queues' depth.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Backend, assert_error, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("root@example.com", "admin passphrase 1");

both_backends! {
    async fn stats_count_todays_activity_per_day(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Hi", "!"]), Step::reply(&["Greeting"])]).await;
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1)]).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        let config = json!({"name": "fake", "provider": "openai_compatible", "model": "fake-model", "base_url": fake.base_url(), "is_default": true});
        assert_eq!(app.post_json("/api/llm/configs/", &config, Some(&admin.access)).await.status(), StatusCode::CREATED);
        let chatty = app.signup("chatty@example.com").await;
        app.signup("quiet@example.com").await;
        let res = app.post_json("/api/llm/chat/", &json!({"message": "Hello"}), Some(&chatty.access)).await;
        let accepted: Value = res.json().await.unwrap();
        app.wait_for_status(&chatty.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
        let res = app.post_json("/api/admin/jobs/noop/", &json!({"fatal": true, "fail_times": 1}), Some(&admin.access)).await;
        let noop: Value = res.json().await.unwrap();
        app.wait_for_status(&admin.access, noop["job_id"].as_str().unwrap(), "failed").await;
        // The title job ends after the reply.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let today = loop {
            let stats: Value = app.client.get(app.url("/api/admin/stats/")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
            let day = stats["days"].as_array().unwrap().last().cloned().expect("today");
            let titled = day["jobs"].as_array().unwrap().iter().any(|j| j["kind"] == "generate_title");
            if titled || std::time::Instant::now() > deadline {
                assert!(stats["queue_depth"].is_array());
                break day;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(today["day"], chrono::Utc::now().format("%Y-%m-%d").to_string());
        assert_eq!(today["new_accounts"], 3, "the admin and two sign-ups: {today}");
        assert_eq!(today["active_users"], 1);
        assert_eq!(today["sessions"], 1);
        assert_eq!(today["messages"], 2);
        let tokens = &today["tokens"][0];
        assert_eq!((tokens["model"].as_str(), tokens["prompt_tokens"].as_i64(), tokens["completion_tokens"].as_i64()), (Some("fake-model"), Some(14), Some(3)), "{today}");
        let jobs = today["jobs"].as_array().unwrap();
        let reply = jobs.iter().find(|j| j["kind"] == "llm_completion" && j["status"] == "succeeded").expect("the reply's job");
        assert_eq!(reply["count"], 1);
        assert!(reply["p50_ms"].as_i64().unwrap() >= 10 && reply["p95_ms"].as_i64().unwrap() >= reply["p50_ms"].as_i64().unwrap());
        let failed = jobs.iter().find(|j| j["kind"] == "noop").expect("the noop job");
        assert_eq!((failed["status"].as_str(), failed["count"].as_i64()), (Some("failed"), Some(1)));

        let past: Value = app.client.get(app.url("/api/admin/stats/?from=2020-01-01&to=2020-01-31")).bearer_auth(&admin.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(past["days"], json!([]));
        let res = app.client.get(app.url("/api/admin/stats/")).bearer_auth(&chatty.access).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.client.get(app.url("/api/admin/stats/?from=soon")).bearer_auth(&admin.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
}
