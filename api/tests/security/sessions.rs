//! `GET /api/auth/sessions/` and `DELETE /api/auth/sessions/{id}/`.

use crate::common::{Backend, PASSWORD, assert_error, spawn_app};
use crate::{both_backends, get_ok};
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends! {
    async fn the_session_list_shows_each_live_session_with_where_and_how_it_signed_in(backend: Backend) {
        let app = spawn_app(backend).await;
        let first = app.signup("list@example.com").await;
        let res = app.client.post(app.url("/api/auth/login/")).header("user-agent", "Phone/2.0")
            .json(&json!({"email": "list@example.com", "password": PASSWORD})).send().await.unwrap();
        let second: Value = res.json().await.unwrap();
        let second_access = second["access_token"].as_str().unwrap();
        // Someone else's sessions never show.
        app.signup("other@example.com").await;

        let page = get_ok(&app, "/api/auth/sessions/", second_access).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{page}");
        assert_eq!(page["next_cursor"], Value::Null);
        let newest = &items[0];
        assert_eq!(newest["current"], true);
        assert_eq!(newest["user_agent"], "Phone/2.0");
        assert_eq!(newest["client_address"], "127.0.0.0/24");
        assert_eq!(newest["amr"], json!(["pwd"]));
        for field in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(newest[field].is_string(), "{field}: {newest}");
        }
        assert_eq!(items[1]["current"], false);

        // Seen from the first session, that one is current.
        let page = get_ok(&app, "/api/auth/sessions/", &first.access).await;
        let current: Vec<bool> = page["items"].as_array().unwrap().iter().map(|s| s["current"].as_bool().unwrap()).collect();
        assert_eq!(current, [false, true]);

        // Pages of one.
        let page = get_ok(&app, "/api/auth/sessions/?limit=1", &first.access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        let cursor = page["next_cursor"].as_str().expect("a next page");
        let next = get_ok(&app, &format!("/api/auth/sessions/?limit=1&cursor={cursor}"), &first.access).await;
        assert_eq!(next["items"][0]["current"], true);
        assert_eq!(next["next_cursor"], Value::Null);
        let res = app.client.get(app.url("/api/auth/sessions/?cursor=nope")).bearer_auth(&first.access).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(app.client.get(app.url("/api/auth/sessions/")).send().await.unwrap(), StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    async fn a_request_moves_its_sessions_last_use_to_the_minute(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("lastuse@example.com").await;
        // The session was last used two hours ago.
        let two_hours_ago = parley_shared::time::now_ms() - 2 * 3600 * 1000;
        sqlx::query("update sessions set last_used_at = $1").bind(two_hours_ago).execute(&app.state.db.writer).await.unwrap();
        // Any request with its token moves it to now (written in the background).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let seen = get_ok(&app, "/api/auth/sessions/", &user.access).await["items"][0]["last_used_at"].as_str().unwrap().to_owned();
            let seen = chrono::DateTime::parse_from_rfc3339(&seen).unwrap().timestamp_millis();
            if seen > two_hours_ago {
                assert!(parley_shared::time::now_ms() - seen < 60_000, "{seen}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "last_used_at stayed two hours ago");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn ending_a_session_stops_its_tokens_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let first = app.signup("end@example.com").await;
        let second = app.signin("end@example.com", PASSWORD).await;
        let page = get_ok(&app, "/api/auth/sessions/", &first.access).await;
        let other = page["items"].as_array().unwrap().iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();

        let url = app.url(&format!("/api/auth/sessions/{other}/"));
        // Another account cannot end it, nor learn that it exists.
        let stranger = app.signup("stranger@example.com").await;
        assert_error(app.client.delete(&url).bearer_auth(&stranger.access).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);

        let res = app.client.delete(&url).bearer_auth(&first.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(app.me(&second.access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(app.refresh(&second.refresh).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&first.access).await.status(), StatusCode::OK);
        let page = get_ok(&app, "/api/auth/sessions/", &first.access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);

        // Ended already, or not an id: 404.
        assert_error(app.client.delete(&url).bearer_auth(&first.access).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
        let res = app.client.delete(app.url("/api/auth/sessions/not-an-id/")).bearer_auth(&first.access).send().await.unwrap();
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;

        // Ending one's own current session signs out.
        let current = get_ok(&app, "/api/auth/sessions/", &first.access).await["items"][0]["id"].as_str().unwrap().to_owned();
        let res = app.client.delete(app.url(&format!("/api/auth/sessions/{current}/"))).bearer_auth(&first.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&first.access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_refreshed_session_keeps_its_id_and_moves_its_last_use(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("touch@example.com").await;
        let before = get_ok(&app, "/api/auth/sessions/", &account.access).await["items"][0].clone();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let pair: Value = app.refresh(&account.refresh).await.json().await.unwrap();
        let after = get_ok(&app, "/api/auth/sessions/", pair["access_token"].as_str().unwrap()).await["items"][0].clone();
        assert_eq!(after["id"], before["id"]);
        assert_eq!(after["current"], true);
        let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v["last_used_at"].as_str().unwrap()).unwrap();
        assert!(time(&after) > time(&before), "{before} {after}");
    }
}
