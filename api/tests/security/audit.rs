//! The activity log: what is recorded, who may read it, filters, pages and retention.

use crate::common::{Backend, PASSWORD, assert_error, spawn_app, spawn_app_with};
use crate::{ADMIN, actions, both_backends, get_ok};
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends! {
    async fn sign_ins_sign_outs_and_password_changes_are_recorded_without_secrets(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("log@example.com").await;
        assert_eq!(app.login("log@example.com", "a wrong password 1").await.status(), StatusCode::UNAUTHORIZED);
        let res = app.client.post(app.url("/api/auth/login/")).header("user-agent", "Tablet/1.0")
            .json(&json!({"email": "log@example.com", "password": PASSWORD})).send().await.unwrap();
        let second: Value = res.json().await.unwrap();
        let res = app.change_password(&account.access, "not the password 1", "another good passphrase").await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_eq!(app.change_password(&account.access, PASSWORD, "another good passphrase").await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.logout(&account.access, &json!({})).await.status(), StatusCode::NO_CONTENT);
        // An unknown address is logged with no account.
        assert_eq!(app.login("ghost@example.com", "a wrong password 1").await.status(), StatusCode::UNAUTHORIZED);
        let _ = second;

        let me = app.signin("log@example.com", "another good passphrase").await;
        let page = get_ok(&app, "/api/users/me/activity/", &me.access).await;
        assert_eq!(actions(&page), [
            "auth.login", "auth.logout", "password.change", "password.change", "auth.login", "auth.login", "user.signup",
        ], "{page}");
        let items = page["items"].as_array().unwrap();
        let results: Vec<&str> = items.iter().map(|e| e["result"].as_str().unwrap()).collect();
        assert_eq!(results, ["success", "success", "success", "failure", "success", "failure", "success"]);
        let tablet = &items[4];
        assert_eq!(tablet["user_agent"], "Tablet/1.0");
        assert_eq!(tablet["client_address"], "127.0.0.0/24");
        assert_eq!(tablet["actor_id"], account.id.as_str());
        assert_eq!(tablet["target_id"], account.id.as_str());
        assert!(tablet["occurred_at"].is_string());
        let failed = &items[5];
        assert_eq!(failed["actor_id"], Value::Null);
        assert_eq!(failed["target_id"], account.id.as_str());
        assert_eq!(failed["details"]["reason"], "wrong_password");

        // Nothing secret in any entry, as the admin sees it either.
        let admin_app_text = serde_json::to_string(&page).unwrap();
        for secret in [PASSWORD, "another good passphrase", "a wrong password 1", &account.refresh, &account.access] {
            assert!(!admin_app_text.contains(secret), "a secret in the log");
        }
        let rows: Vec<(String,)> = sqlx::query_as("select coalesce(details, '') from audit_events")
            .fetch_all(&app.state.db.pool).await.unwrap();
        for (details,) in rows {
            assert!(!details.contains("password 1") && !details.contains(PASSWORD), "{details}");
        }
    }

    async fn a_reused_refresh_token_and_an_ended_session_are_recorded(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_REFRESH_REUSE_GRACE_SECS", "0")]).await;
        let account = app.signup("reuse@example.com").await;
        let pair: Value = app.refresh(&account.refresh).await.json().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(app.refresh(&account.refresh).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(pair["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);

        let me = app.signin("reuse@example.com", PASSWORD).await;
        let other = app.signin("reuse@example.com", PASSWORD).await;
        let sessions = get_ok(&app, "/api/auth/sessions/", &me.access).await;
        let id = sessions["items"][0]["id"].as_str().unwrap().to_owned();
        let res = app.client.delete(app.url(&format!("/api/auth/sessions/{id}/"))).bearer_auth(&me.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let _ = other;

        let page = get_ok(&app, "/api/users/me/activity/", &me.access).await;
        assert_eq!(actions(&page)[..4], ["session.end", "auth.login", "auth.login", "auth.refresh_token_reuse"], "{page}");
        assert_eq!(page["items"][0]["details"]["session_id"], id.as_str());
        assert_eq!(page["items"][3]["result"], "failure");
        let filtered = get_ok(&app, "/api/users/me/activity/?action=auth.refresh_token_reuse", &me.access).await;
        assert_eq!(actions(&filtered), ["auth.refresh_token_reuse"]);
    }

    async fn admins_read_every_event_with_filters_and_cursor_pages(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let ann = app.signup("ann@example.com").await;
        let bob = app.signup("bob@example.com").await;
        let res = app.client.patch(app.url(&format!("/api/admin/users/{}/", bob.id))).bearer_auth(&admin.access)
            .json(&json!({"is_admin": true})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        // Users cannot read it.
        let res = app.client.get(app.url("/api/admin/audit/")).bearer_auth(&ann.access).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;

        let all = get_ok(&app, "/api/admin/audit/", &admin.access).await;
        assert_eq!(actions(&all), ["admin.user.update", "user.signup", "user.signup", "auth.login"], "{all}");
        let update = &all["items"][0];
        assert_eq!(update["actor_id"], admin_id(&app, &admin.access).await.as_str());
        assert_eq!(update["target_id"], bob.id.as_str());
        assert_eq!(update["details"]["is_admin"], true);
        // Admins see the whole address.
        assert_eq!(update["client_address"], "127.0.0.1");

        let by_target = get_ok(&app, &format!("/api/admin/audit/?target={}", ann.id), &admin.access).await;
        assert_eq!(actions(&by_target), ["user.signup"]);
        let by_actor = get_ok(&app, &format!("/api/admin/audit/?actor={}&action=admin.user.update", admin_id(&app, &admin.access).await), &admin.access).await;
        assert_eq!(actions(&by_actor), ["admin.user.update"]);
        let failures = get_ok(&app, "/api/admin/audit/?result=failure", &admin.access).await;
        assert_eq!(actions(&failures), Vec::<String>::new());

        // Time range: nothing before the epoch's next day, everything until far ahead.
        let none = get_ok(&app, "/api/admin/audit/?until=1970-01-02T00:00:00Z", &admin.access).await;
        assert!(none["items"].as_array().unwrap().is_empty());
        let since = get_ok(&app, "/api/admin/audit/?since=1970-01-02T00:00:00Z&until=2999-01-01T00:00:00%2B00:00", &admin.access).await;
        assert_eq!(since["items"].as_array().unwrap().len(), 4);

        // Cursor pages walk everything once.
        let mut seen = Vec::new();
        let mut path = "/api/admin/audit/?limit=3".to_owned();
        loop {
            let page = get_ok(&app, &path, &admin.access).await;
            seen.extend(actions(&page));
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/api/admin/audit/?limit=3&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, actions(&all));

        // Bad filters are 422s; the log cannot be written through the API.
        for query in ["action=auth.nope", "since=yesterday", "actor=someone", "result=maybe", "limit=0"] {
            let res = app.client.get(app.url(&format!("/api/admin/audit/?{query}"))).bearer_auth(&admin.access).send().await.unwrap();
            assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        }
        for method in [reqwest::Method::POST, reqwest::Method::DELETE, reqwest::Method::PATCH] {
            let res = app.client.request(method, app.url("/api/admin/audit/")).bearer_auth(&admin.access).json(&json!({})).send().await.unwrap();
            assert_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        }
    }

    async fn admin_actions_on_configs_and_jobs_are_recorded(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let res = app.post_json("/api/llm/configs/", &json!({"name": "audited", "provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-never-logged"}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let config: Value = res.json().await.unwrap();
        let url = app.url(&format!("/api/llm/configs/{}/", config["id"].as_str().unwrap()));
        assert_eq!(app.client.patch(&url).bearer_auth(&admin.access).json(&json!({"model": "m2"})).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.client.delete(&url).bearer_auth(&admin.access).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        let res = app.post_json("/api/admin/jobs/noop/", &json!({"fail_times": 9, "fatal": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        app.wait_for_status(&admin.access, job["job_id"].as_str().unwrap(), "failed").await;
        let res = app.post_json(&format!("/api/admin/jobs/{}/retry/", job["job_id"].as_str().unwrap()), &json!({}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);

        let page = get_ok(&app, "/api/admin/audit/?limit=5", &admin.access).await;
        assert_eq!(actions(&page), ["admin.job.retry", "admin.job.create", "admin.llm_config.delete", "admin.llm_config.update", "admin.llm_config.create"], "{page}");
        assert_eq!(page["items"][4]["details"]["config_id"], config["id"]);
        assert_eq!(page["items"][0]["details"]["job_id"], job["job_id"]);
        assert!(!page.to_string().contains("sk-never-logged"));
    }

    async fn entries_older_than_the_retention_are_pruned(backend: Backend) {
        // No workers: the scheduled pruning would race the one called here.
        let app = spawn_app_with(backend, &[("PARLEY_AUDIT_RETENTION_DAYS", "30"), ("PARLEY_WORKERS", "0")]).await;
        let account = app.signup("old@example.com").await;
        app.signin("old@example.com", PASSWORD).await;
        // Age the sign-up entry past the retention.
        let old = parley_shared::time::now_ms() - 31 * 86_400_000;
        sqlx::query("update audit_events set created_at = $1 where action = 'user.signup'")
            .bind(old).execute(&app.state.db.writer).await.unwrap();

        let pruned = parley_shared::audit::prune(&app.state.db, app.state.config.audit_retention_days).await.unwrap();
        assert_eq!(pruned, 1);
        let page = get_ok(&app, "/api/users/me/activity/", &account.access).await;
        assert_eq!(actions(&page), ["auth.login"]);
        assert_eq!(parley_shared::audit::prune(&app.state.db, 30).await.unwrap(), 0);
    }
}

async fn admin_id(app: &crate::common::TestApp, token: &str) -> String {
    get_ok(app, "/api/users/me/", token).await["id"].as_str().unwrap().to_owned()
}
