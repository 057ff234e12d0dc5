//! Admin user management: search, deactivation (which ends sessions at once), admin rights,
//! deletion.

mod common;

use common::{Backend, PASSWORD, assert_error, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: [(&str, &str); 2] =
    [("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")];

both_backends! {
    async fn deactivating_an_account_ends_its_sessions_at_once(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let user = app.signup("deact@example.com").await;
        let second = app.signin("deact@example.com", PASSWORD).await;
        let url = app.url(&format!("/api/admin/users/{}/", user.id));

        // Users cannot use these routes.
        let res = app.client.patch(&url).bearer_auth(&user.access).json(&json!({"is_active": false})).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;

        let res = app.client.patch(&url).bearer_auth(&admin.access).json(&json!({"is_active": false})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["is_active"], false);
        assert_eq!(body["email"], "deact@example.com");
        // Both sessions' access tokens stop working now, and so do refresh and sign-in.
        for token in [&user.access, &second.access] {
            assert_error(app.me(token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        assert_eq!(app.refresh(&second.refresh).await.status(), StatusCode::UNAUTHORIZED);
        assert_error(app.login("deact@example.com", PASSWORD).await, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

        // Reactivated: the old sessions stay ended, a new sign-in works.
        let res = app.client.patch(&url).bearer_auth(&admin.access).json(&json!({"is_active": true})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);
        let again = app.signin("deact@example.com", PASSWORD).await;
        assert_eq!(app.me(&again.access).await.status(), StatusCode::OK);
    }

    async fn admins_search_filter_and_page_through_accounts(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        for name in ["alice", "albert", "bob"] {
            app.signup(&format!("{name}@example.com")).await;
        }
        let list = |query: &'static str| {
            let (app, token) = (&app, admin.access.clone());
            async move {
                let res = app.client.get(app.url(&format!("/api/admin/users/{query}"))).bearer_auth(token).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                res.json::<Value>().await.unwrap()
            }
        };
        let emails = |page: &Value| -> Vec<String> {
            page["items"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(emails(&list("?search=AL").await), ["albert@example.com", "alice@example.com"]);
        assert_eq!(emails(&list("?is_admin=true").await), ["root@example.com"]);
        // A literal search: `_` is not a wildcard.
        assert!(emails(&list("?search=a_b").await).is_empty());
        let first = list("?limit=2").await;
        assert_eq!(emails(&first), ["bob@example.com", "albert@example.com"]);
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let res = app.client.get(app.url(&format!("/api/admin/users/?limit=2&cursor={cursor}"))).bearer_auth(&admin.access).send().await.unwrap();
        let second: Value = res.json().await.unwrap();
        assert_eq!(emails(&second), ["alice@example.com", "root@example.com"]);
        assert!(second["next_cursor"].is_null());
        // Bad filters get the envelope.
        let res = app.client.get(app.url("/api/admin/users/?is_active=maybe")).bearer_auth(&admin.access).send().await.unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "invalid_query").await;
        let res = app.client.get(app.url("/api/admin/users/not-an-id/")).bearer_auth(&admin.access).send().await.unwrap();
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }

    async fn admins_grant_rights_delete_accounts_and_cannot_lock_themselves_out(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let me: Value = app.me(&admin.access).await.json().await.unwrap();
        let own = app.url(&format!("/api/admin/users/{}/", me["id"].as_str().unwrap()));
        for body in [json!({"is_active": false}), json!({"is_admin": false})] {
            let res = app.client.patch(&own).bearer_auth(&admin.access).json(&body).send().await.unwrap();
            assert_error(res, StatusCode::CONFLICT, "own_account").await;
        }
        assert_error(app.client.delete(&own).bearer_auth(&admin.access).send().await.unwrap(), StatusCode::CONFLICT, "own_account").await;

        let user = app.signup("promoted@example.com").await;
        let url = app.url(&format!("/api/admin/users/{}/", user.id));
        let res = app.client.patch(&url).bearer_auth(&admin.access).json(&json!({"is_admin": true})).send().await.unwrap();
        assert_eq!(res.json::<Value>().await.unwrap()["is_admin"], true);
        let queues = app.client.get(app.url("/api/admin/queues/")).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(queues.status(), StatusCode::OK);
        let res = app.client.patch(&url).bearer_auth(&admin.access).json(&json!({"is_superuser": true})).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;

        assert_eq!(app.client.delete(&url).bearer_auth(&admin.access).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_error(app.client.get(&url).bearer_auth(&admin.access).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    }
}
