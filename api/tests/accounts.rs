//! The accounts API end to end, on SQLite and PostgreSQL.

mod common;

use common::{Backend, PASSWORD, assert_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends! {
    async fn registration_returns_the_profile_and_a_working_token_pair(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.register(&json!({"email": "Ann@Example.com", "password": PASSWORD, "username": "ann", "display_name": "Ann"})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["user"]["email"], "Ann@Example.com");
        assert_eq!(body["user"]["username"], "ann");
        assert_eq!(body["user"]["email_verified"], false);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        let me: Value = app.me(body["access_token"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!(me["id"], body["user"]["id"]);
        assert_eq!(me["display_name"], "Ann");
    }

    async fn emails_are_unique_case_insensitively_and_usernames_unique(backend: Backend) {
        let app = spawn_app(backend).await;
        app.register(&json!({"email": "bob@example.com", "password": PASSWORD, "username": "bob"})).await;
        let dup = app.register(&json!({"email": "BOB@example.COM", "password": PASSWORD})).await;
        let body = assert_error(dup, StatusCode::CONFLICT, "conflict").await;
        assert!(body["error"]["fields"]["email"].is_array(), "{body}");
        let dup = app.register(&json!({"email": "other@example.com", "password": PASSWORD, "username": "BOB"})).await;
        let body = assert_error(dup, StatusCode::CONFLICT, "conflict").await;
        assert!(body["error"]["fields"]["username"].is_array(), "{body}");
    }

    async fn invalid_fields_are_all_reported_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let res = app.register(&json!({"email": "not-an-email", "password": "password1", "username": "a b"})).await;
        let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let fields = &body["error"]["fields"];
        assert!(fields["email"].is_array() && fields["password"].is_array() && fields["username"].is_array(), "{body}");
        let res = app.register(&json!({"email": "a@example.com", "password": "x".repeat(129)})).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }

    async fn bad_bodies_get_the_envelope_and_a_4xx(backend: Backend) {
        let app = spawn_app(backend).await;
        let url = app.url("/api/auth/login/");
        let post = |body: String, ctype: &'static str| app.client.post(&url).header("content-type", ctype).body(body).send();
        assert_error(post("{not json".into(), "application/json").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_json").await;
        assert_error(post(r#"{"email": 5, "password": "x"}"#.into(), "application/json").await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        let missing = assert_error(post(r#"{"email": "a@b.co"}"#.into(), "application/json").await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        assert!(missing["error"]["message"].as_str().unwrap().contains("password"), "{missing}");
        assert_error(post(r#"{"email":"a@b.co","password":"x"}"#.into(), "text/plain").await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
        let huge = format!(r#"{{"email":"a@b.co","password":"{}"}}"#, "x".repeat(100_000));
        assert_error(post(huge, "application/json").await.unwrap(), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        assert_error(app.client.get(app.url("/api/nope/")).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
        assert_error(app.client.get(app.url("/api/auth/login/")).send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }

    async fn bad_query_strings_multipart_bodies_and_nul_text_get_the_envelope(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("edge@example.com").await;
        let res = app.client.get(app.url("/api/jobs/?limit=abc")).bearer_auth(&account.access).send().await.unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "invalid_query").await;
        let res = app.client.post(app.url("/api/users/me/avatar/")).bearer_auth(&account.access)
            .header("content-type", "application/json").body("{}").send().await.unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "invalid_body").await;
        // Refused alike on both databases, as in every text field.
        let res = app.patch_me(&account.access, &json!({"bio": "nul \u{0} inside"})).await;
        let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert!(body["error"]["fields"]["bio"].is_array(), "{body}");
    }

    async fn the_environment_admin_never_takes_over_an_account_with_another_password(backend: Backend) {
        let first = spawn_app(backend).await;
        first.signup("boss@example.com").await;
        let mut vars: Vec<(String, String)> = first.vars.clone().into_iter().collect();
        vars.push(("PARLEY_ADMIN_EMAIL".into(), "boss@example.com".into()));
        vars.push(("PARLEY_ADMIN_PASSWORD".into(), "the operators passphrase".into()));
        let config = parley_shared::Config::from_vars(vars.into_iter().collect()).unwrap();
        let app = parley_api::Application::build(config).await.unwrap();
        let user = parley_shared::store::users::by_email(&app.state().db.pool, &parley_shared::domain::Email::parse("boss@example.com").unwrap())
            .await.unwrap().unwrap();
        assert!(!user.is_admin);
    }

    async fn paths_work_with_and_without_the_trailing_slash(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("slash@example.com").await;
        for path in ["/api/users/me/", "/api/users/me"] {
            let res = app.client.get(app.url(path)).bearer_auth(&account.access).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
    }

    async fn login_answers_the_same_401_for_unknown_email_and_wrong_password(backend: Backend) {
        let app = spawn_app(backend).await;
        app.signup("carol@example.com").await;
        let wrong = assert_error(app.login("carol@example.com", "wrong password here").await, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let unknown = assert_error(app.login("nobody@example.com", "wrong password here").await, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        assert_eq!(wrong, unknown);
        let ok = app.login("CAROL@example.com", PASSWORD).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }

    async fn repeated_logins_on_one_account_are_throttled_with_retry_after(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", "3")]).await;
        app.signup("dave@example.com").await;
        for _ in 0..3 {
            assert_eq!(app.login("dave@example.com", "wrong password here").await.status(), StatusCode::UNAUTHORIZED);
        }
        let res = app.login("dave@example.com", PASSWORD).await;
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        assert_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        // Another account from the same address is not affected.
        app.signup("erin@example.com").await;
        assert_eq!(app.login("erin@example.com", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn guessing_from_one_address_does_not_lock_the_user_out_elsewhere(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", "2"), ("PARLEY_TRUSTED_PROXIES", "127.0.0.1")]).await;
        app.signup("gina@example.com").await;
        let login_from = |ip: &'static str, password: &'static str| {
            app.client.post(app.url("/api/auth/login/")).header("x-forwarded-for", ip)
                .json(&json!({"email": "gina@example.com", "password": password})).send()
        };
        for _ in 0..2 {
            assert_eq!(login_from("203.0.113.66", "wrong password here").await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(login_from("203.0.113.66", PASSWORD).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(login_from("198.51.100.7", PASSWORD).await.unwrap().status(), StatusCode::OK);
        // Guesses spread over many addresses still meet the account's overall ceiling (10 × 2).
        let mut last = StatusCode::OK;
        for i in 0..25u8 {
            let res = app.client.post(app.url("/api/auth/login/")).header("x-forwarded-for", format!("192.0.2.{i}"))
                .json(&json!({"email": "gina@example.com", "password": "wrong password here"})).send().await.unwrap();
            last = res.status();
        }
        assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    }

    async fn repeated_logins_from_one_address_are_throttled(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_LOGIN_IP_PER_MINUTE", "4")]).await;
        for i in 0..4 {
            assert_eq!(app.login(&format!("u{i}@example.com"), "wrong password here").await.status(), StatusCode::UNAUTHORIZED);
        }
        assert_error(app.login("u9@example.com", "wrong password here").await, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }

    async fn a_trusted_proxy_forwarded_address_is_the_client_address(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_LOGIN_IP_PER_MINUTE", "2"), ("PARLEY_TRUSTED_PROXIES", "127.0.0.1")]).await;
        let login_from = |ip: &'static str| {
            app.client.post(app.url("/api/auth/login/")).header("x-forwarded-for", ip)
                .json(&json!({"email": "x@example.com", "password": "wrong password here"})).send()
        };
        for _ in 0..2 {
            assert_eq!(login_from("203.0.113.1").await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(login_from("203.0.113.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(login_from("203.0.113.2").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_forwarded_address_from_an_untrusted_peer_is_ignored(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_LOGIN_IP_PER_MINUTE", "2")]).await;
        for ip in ["203.0.113.1", "203.0.113.2"] {
            let res = app.client.post(app.url("/api/auth/login/")).header("x-forwarded-for", ip)
                .json(&json!({"email": "x@example.com", "password": "wrong password here"})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let res = app.client.post(app.url("/api/auth/login/")).header("x-forwarded-for", "203.0.113.3")
            .json(&json!({"email": "x@example.com", "password": "wrong password here"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    async fn refresh_rotates_the_token_and_the_old_one_stops_rotating(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("frank@example.com").await;
        let res = app.refresh(&account.refresh).await;
        assert_eq!(res.status(), StatusCode::OK);
        let pair: Value = res.json().await.unwrap();
        let next = pair["refresh_token"].as_str().unwrap();
        assert_ne!(next, account.refresh);
        assert_eq!(app.me(pair["access_token"].as_str().unwrap()).await.status(), StatusCode::OK);
        // A second tab presenting the old token within the grace window gets the current pair.
        let again: Value = app.refresh(&account.refresh).await.json().await.unwrap();
        assert_eq!(again["refresh_token"], pair["refresh_token"]);
        // The current token still rotates normally.
        assert_eq!(app.refresh(next).await.status(), StatusCode::OK);
    }

    async fn refresh_token_reuse_after_the_grace_window_revokes_the_whole_session(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_REFRESH_REUSE_GRACE_SECS", "0")]).await;
        let account = app.signup("grace@example.com").await;
        let pair: Value = app.refresh(&account.refresh).await.json().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_error(app.refresh(&account.refresh).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        // The thief's reuse ended the session: the legitimate current pair is dead too.
        assert_error(app.refresh(pair["refresh_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(app.me(pair["access_token"].as_str().unwrap()).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn unknown_refresh_tokens_and_access_tokens_are_refused_by_refresh(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("hank@example.com").await;
        assert_error(app.refresh("made-up").await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_error(app.refresh(&account.access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        // ... and a refresh token is not an access token.
        assert_eq!(app.me(&account.refresh).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn sessions_past_their_absolute_lifetime_cannot_refresh(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_SESSION_MAX_AGE_SECS", "1")]).await;
        let account = app.signup("ivy@example.com").await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_error(app.refresh(&account.refresh).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(app.me(&account.access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn idle_sessions_cannot_refresh(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_SESSION_IDLE_TIMEOUT_SECS", "1")]).await;
        let account = app.signup("idle@example.com").await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_error(app.refresh(&account.refresh).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    async fn logout_ends_the_session_and_its_access_token_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = app.signup("jane@example.com").await;
        let other = app.signin("jane@example.com", PASSWORD).await;
        assert_eq!(app.logout(&account.access, &json!({})).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&account.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.refresh(&account.refresh).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&other.access).await.status(), StatusCode::OK);
        // An empty body means scope local too.
        let res = app.client.post(app.url("/api/auth/logout/")).bearer_auth(&other.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&other.access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn logout_with_scope_others_keeps_only_the_current_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let a = app.signup("kim@example.com").await;
        let b = app.signin("kim@example.com", PASSWORD).await;
        let c = app.signin("kim@example.com", PASSWORD).await;
        assert_eq!(app.logout(&a.access, &json!({"scope": "others"})).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
        assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&c.access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn logout_with_scope_global_ends_every_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let a = app.signup("lee@example.com").await;
        let b = app.signin("lee@example.com", PASSWORD).await;
        assert_eq!(app.logout(&a.access, &json!({"scope": "global"})).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&a.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
        // An unknown scope, from a live session: refused, and the session stays.
        let c = app.signin("lee@example.com", PASSWORD).await;
        let res = app.logout(&c.access, &json!({"scope": "everywhere"})).await;
        assert!(res.status().is_client_error() && res.status() != StatusCode::UNAUTHORIZED, "{}", res.status());
        assert!(res.json::<Value>().await.unwrap()["error"]["code"].is_string());
        assert_eq!(app.me(&c.access).await.status(), StatusCode::OK);
    }

    async fn password_change_ends_other_sessions_and_replaces_the_password(backend: Backend) {
        let app = spawn_app(backend).await;
        let a = app.signup("mo@example.com").await;
        let b = app.signin("mo@example.com", PASSWORD).await;
        let res = app.change_password(&a.access, "not my password", "a brand new passphrase").await;
        let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert!(body["error"]["fields"]["current_password"].is_array());
        assert_error(app.change_password(&a.access, PASSWORD, "12345678").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_eq!(app.change_password(&a.access, PASSWORD, "a brand new passphrase").await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
        assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login("mo@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login("mo@example.com", "a brand new passphrase").await.status(), StatusCode::OK);
    }

    async fn profile_updates_apply_and_a_taken_username_is_a_conflict(backend: Backend) {
        let app = spawn_app(backend).await;
        app.register(&json!({"email": "nat@example.com", "password": PASSWORD, "username": "nat"})).await;
        let me = app.signup("oz@example.com").await;
        let res = app.patch_me(&me.access, &json!({"display_name": "Oz", "bio": "<b>hi</b>", "username": "ozzy"})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!((body["display_name"].as_str(), body["bio"].as_str(), body["username"].as_str()), (Some("Oz"), Some("<b>hi</b>"), Some("ozzy")));
        assert_error(app.patch_me(&me.access, &json!({"username": "NAT"})).await, StatusCode::CONFLICT, "conflict").await;
        assert_error(app.patch_me(&me.access, &json!({"username": "x"})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(app.patch_me(&me.access, &json!({"email": "new@example.com"})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        let cleared: Value = app.patch_me(&me.access, &json!({"username": null})).await.json().await.unwrap();
        assert!(cleared["username"].is_null());
        assert_eq!(cleared["display_name"], "Oz");
    }

    async fn deleting_the_account_needs_the_password_and_ends_every_session(backend: Backend) {
        let app = spawn_app(backend).await;
        let a = app.signup("pat@example.com").await;
        let b = app.signin("pat@example.com", PASSWORD).await;
        assert_error(app.delete_me(&a.access, "wrong password").await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_eq!(app.delete_me(&a.access, PASSWORD).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.me(&a.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.login("pat@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
        // The email is free again.
        app.signup("pat@example.com").await;
    }

    async fn malformed_and_forged_access_tokens_are_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let a = app.signup("quinn@example.com").await;
        let (head, rest) = a.access.split_once('.').unwrap();
        let (claims, _sig) = rest.split_once('.').unwrap();
        let _ = head;
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
        for token in ["", "garbage", none.as_str(), &format!("{}x", a.access)] {
            assert_error(app.me(token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        let res = app.client.get(app.url("/api/users/me/")).send().await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }

    async fn a_hash_with_old_parameters_is_upgraded_on_login(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ARGON2_MEMORY_KIB", "2048"), ("PARLEY_ARGON2_ITERATIONS", "2")]).await;
        let a = app.signup("rae@example.com").await;
        let old = parley_shared::auth::PasswordHasher::new(
            parley_shared::config::Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 }, 1).unwrap();
        let old_hash = old.hash(PASSWORD).await.unwrap();
        let id = a.id.parse().unwrap();
        parley_shared::store::users::set_password_hash(&app.state.db.pool, id, &old_hash).await.unwrap();
        assert_eq!(app.login("rae@example.com", PASSWORD).await.status(), StatusCode::OK);
        let user = parley_shared::store::users::by_id(&app.state.db.pool, id).await.unwrap().unwrap();
        assert!(user.password_hash.starts_with("$argon2id$v=19$m=2048,t=2,p=1$"), "{}", user.password_hash);
    }

    async fn the_admin_from_the_environment_is_created_once(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")]).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let me: Value = app.me(&admin.access).await.json().await.unwrap();
        assert_eq!(me["is_admin"], true);
        // create-admin promotes an existing account.
        let user = app.signup("promote@example.com").await;
        parley_api::startup::create_admin(&app.state, "promote@example.com", "ignored passphrase").await.unwrap();
        let me: Value = app.me(&user.access).await.json().await.unwrap();
        assert_eq!(me["is_admin"], true);
    }

    async fn health_readiness_and_docs_are_served(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
        let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
        assert_eq!(ready["database"], true);
        assert_eq!(ready["queue"], true);
        let spec: Value = app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
        let page = app.client.get(app.url("/api/docs/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("swagger-ui-bundle.js"));
        let js = app.client.get(app.url("/api/docs/ui/swagger-ui-bundle.js")).send().await.unwrap();
        assert_eq!(js.status(), StatusCode::OK);
        assert!(js.text().await.unwrap().len() > 100_000);
    }
}

/// Every `.route(path, method(...))` in the router's source, as `(path, method)`.
fn routes_in_source() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mut routes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for chunk in source.split(".route(").skip(1) {
            let Some(chunk) = chunk.trim_start().strip_prefix('"') else { continue };
            let (path, rest) = chunk.split_once('"').unwrap();
            // The handlers of this route: the rest of its `route(...)` call.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let handlers = &rest[..end];
            for method in ["get", "post", "patch", "put", "delete"] {
                let called = |prefix: &str| handlers.contains(&format!("{prefix}{method}("));
                if called(" ") || called("(") || called(".") {
                    routes.push((path.to_owned(), method.to_owned()));
                }
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let spec: Value = serde_json::to_value(<parley_api::openapi::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    let routes = routes_in_source();
    assert!(routes.len() >= 43, "{routes:?}");
    for (path, method) in routes {
        // The router matches with and without the trailing slash; the document shows it.
        let documented =
            [path.clone(), format!("{path}/")].iter().any(|p| paths.get(p).and_then(|p| p.get(&method)).is_some());
        assert!(documented, "{method} {path} is not in the OpenAPI document");
    }
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
        }
    }
    // Every schema a reference names is in the document (a client generator would fail).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    // Enums show the names the server reads, not the code's.
    let actions = spec["components"]["schemas"]["AuditAction"]["enum"].as_array().unwrap();
    assert!(actions.iter().any(|a| a == "auth.login"), "{actions:?}");
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(spec["components"]["schemas"].get(name).is_some(), "{r} is not defined");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_take_about_the_same_time() {
    // Real OWASP parameters, so the hash dominates both paths.
    let app =
        spawn_app_with(Backend::Sqlite, &[("PARLEY_ARGON2_MEMORY_KIB", "19456"), ("PARLEY_ARGON2_ITERATIONS", "2")])
            .await;
    app.signup("timing@example.com").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..11 {
        let t = std::time::Instant::now();
        app.login("timing@example.com", "wrong password here").await;
        known.push(t.elapsed());
        let t = std::time::Instant::now();
        app.login("nobody@example.com", "wrong password here").await;
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    // Medians, with room for a machine busy running other tests: without the dummy hash an
    // unknown email answers in well under a tenth of the time.
    let ratio = unknown[5].as_secs_f64() / known[5].as_secs_f64();
    assert!((0.4..2.5).contains(&ratio), "median unknown {:?} vs known {:?}", unknown[5], known[5]);
}
