//! What outside probes asked for: security headers on every response, control characters
//! refused alike in every text field, a strict `Idempotency-Key`, enumeration-safe
//! registration, and provider base URLs that cannot reach link-local or (when so set)
//! private addresses.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Backend, PASSWORD, assert_error, mail, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("root@example.com", "an admin password 42");

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

both_backends! {
    async fn every_response_carries_the_security_headers(backend: Backend) {
        let app = spawn_app(backend).await;
        // The docs page: its own assets only, no inline script, no framing, no referrer.
        let page = app.client.get(app.url("/api/docs/")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let h = page.headers().clone();
        let csp = header(&h, "content-security-policy");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        assert_eq!(header(&h, "referrer-policy"), "no-referrer");
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain http");
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script>"), "no inline script: {html}");
        let script = app.client.get(app.url("/api/docs/init.js")).send().await.unwrap();
        assert_eq!(script.status(), StatusCode::OK);
        assert!(script.text().await.unwrap().contains("SwaggerUIBundle"));

        // Token-bearing answers are never cached; errors get the headers too.
        let user = app.signup("headers@example.com").await;
        let login = app.login("headers@example.com", PASSWORD).await;
        assert_eq!(login.status(), StatusCode::OK);
        assert_eq!(header(login.headers(), "cache-control"), "no-store");
        assert_eq!(header(login.headers(), "x-content-type-options"), "nosniff");
        let missing = app.client.get(app.url("/api/nothing-here/")).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(missing.headers(), "x-content-type-options"), "nosniff");
        assert!(header(missing.headers(), "content-security-policy").contains("default-src 'none'"));
        let me = app.me(&user.access).await;
        assert_eq!(header(me.headers(), "cache-control"), "no-store");
    }

    async fn hsts_is_sent_when_the_public_url_is_https(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_PUBLIC_URL", "https://chat.example.com")]).await;
        let res = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert!(header(res.headers(), "strict-transport-security").starts_with("max-age="), "{:?}", res.headers());
    }

    async fn control_characters_are_refused_alike_in_every_text_field(backend: Backend) {
        let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_WORKERS", "0")];
        let app = spawn_app_with(backend, &vars).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        let res = app.post_json("/api/llm/configs/", &json!({"name": "m", "provider": "openai_compatible",
            "model": "m", "base_url": "http://127.0.0.1:9/v1", "is_default": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let user = app.signup("controls@example.com").await;

        for (field, value) in [("bio", "a\u{0}b"), ("bio", "bell\u{7}"), ("display_name", "a\u{0}b")] {
            let res = app.patch_me(&user.access, &json!({field: value})).await;
            let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
            assert!(body["error"]["fields"][field].is_array(), "{body}");
        }
        let res = app.patch_me(&user.access, &json!({"bio": "two\nlines\tand a tab"})).await;
        assert_eq!(res.status(), StatusCode::OK, "line breaks and tabs are fine in long text");

        let res = app.post_json("/api/llm/chat/", &json!({"message": "hi\u{0}there"}), Some(&user.access)).await;
        let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert!(body["error"]["fields"]["message"].is_array(), "{body}");
        let res = app.post_json("/api/llm/chat/", &json!({"message": "line one\nline two"}), Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let session = res.json::<Value>().await.unwrap()["session_id"].as_str().unwrap().to_owned();
        for body in [json!({"title": "bad\u{0}title"}), json!({"title": "new\nline"}), json!({"tags": ["ok", "t\u{1b}[31m"]})] {
            let res = app.client.patch(app.url(&format!("/api/llm/sessions/{session}/"))).bearer_auth(&user.access)
                .json(&body).send().await.unwrap();
            assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        }
        let res = app.client.get(app.url("/api/llm/sessions/?search=a%00b")).bearer_auth(&user.access).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = app.post_json("/api/llm/configs/", &json!({"name": "n\u{0}", "provider": "openai", "model": "m"}), Some(&admin.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;

        // A password of only whitespace.
        let res = app.register(&json!({"email": "blank@example.com", "password": "            "})).await;
        let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert!(body["error"]["fields"]["password"].is_array(), "{body}");
    }

    async fn an_idempotency_key_that_breaks_its_format_is_refused(backend: Backend) {
        let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_WORKERS", "0")];
        let app = spawn_app_with(backend, &vars).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        let res = app.post_json("/api/llm/configs/", &json!({"name": "m", "provider": "openai_compatible",
            "model": "m", "base_url": "http://127.0.0.1:9/v1", "is_default": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let user = app.signup("idem@example.com").await;
        let long = "k".repeat(201);
        for key in ["has space", "tab\tkey", long.as_str(), "é"] {
            let res = app.client.post(app.url("/api/llm/chat/")).bearer_auth(&user.access)
                .header("Idempotency-Key", key.as_bytes()).json(&json!({"message": "hi"})).send().await.unwrap();
            assert_error(res, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
        }
        let res = app.client.post(app.url("/api/llm/chat/")).bearer_auth(&user.access)
            .header("Idempotency-Key", "a-good_key.1~").json(&json!({"message": "hi"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }

    async fn enumeration_safe_registration_answers_a_taken_address_like_a_new_one(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_REGISTRATION_MODE", "enumeration_safe")]).await;
        let new = app.register(&json!({"email": "fresh@example.com", "password": PASSWORD})).await;
        assert_eq!(new.status(), StatusCode::ACCEPTED);
        let new: Value = new.json().await.unwrap();
        assert_eq!(new["status"], "check_your_email");
        assert!(new.get("access").is_none() && new.get("user").is_none(), "no tokens: {new}");
        let mails = mail::wait_for(&app.mail_dir(), 1).await;
        assert!(mails[0].to.contains("fresh@example.com"));
        assert!(mails[0].text.contains("verify-email?token="), "{}", mails[0].text);

        let taken = app.register(&json!({"email": "Fresh@example.com", "password": "another password 12"})).await;
        assert_eq!(taken.status(), StatusCode::ACCEPTED);
        let taken: Value = taken.json().await.unwrap();
        assert_eq!(taken, new, "the same answer for a taken address");
        let mails = mail::wait_for(&app.mail_dir(), 2).await;
        let notice = &mails[1];
        assert!(notice.to.contains("fresh@example.com"));
        assert!(notice.subject.contains("tried to register"), "{}", notice.subject);
        assert!(!notice.text.contains("token="), "no link that signs anyone in: {}", notice.text);
        // The original password still signs in; the attempt's does not.
        let res = app.login("fresh@example.com", "another password 12").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = app.login("fresh@example.com", PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);

        // The default mode still tells the caller.
        let open = spawn_app(backend).await;
        open.signup("dup@example.com").await;
        let res = open.register(&json!({"email": "dup@example.com", "password": PASSWORD})).await;
        assert_error(res, StatusCode::CONFLICT, "conflict").await;
    }

    async fn provider_urls_cannot_reach_metadata_or_when_so_set_private_addresses(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["hello"])]).await;
        let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1)];
        let app = spawn_app_with(backend, &vars).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        for url in ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/v1", "http://metadata.google.internal/v1"] {
            let res = app.post_json("/api/llm/configs/", &json!({"name": "meta", "provider": "openai_compatible",
                "model": "m", "base_url": url}), Some(&admin.access)).await;
            let body = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
            assert!(body["error"]["fields"]["base_url"].is_array(), "{url}: {body}");
        }
        // Loopback is allowed by default: a local model server.
        let res = app.post_json("/api/llm/configs/", &json!({"name": "local", "provider": "openai_compatible",
            "model": "m", "base_url": fake.base_url()}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);

        let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_LLM_ALLOW_PRIVATE_HOSTS", "false")];
        let closed = spawn_app_with(backend, &vars).await;
        let admin = closed.signin(ADMIN.0, ADMIN.1).await;
        let res = closed.post_json("/api/llm/configs/", &json!({"name": "local", "provider": "openai_compatible",
            "model": "m", "base_url": fake.base_url()}), Some(&admin.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        // A name is checked when the request is sent, by the address it resolves to.
        let by_name = fake.base_url().replace("127.0.0.1", "localhost");
        let res = closed.post_json("/api/llm/configs/", &json!({"name": "named", "provider": "openai_compatible",
            "model": "m", "base_url": by_name, "is_default": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let user = closed.signup("ssrf@example.com").await;
        let res = closed.post_json("/api/llm/chat/", &json!({"message": "hi"}), Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job_id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
        let job = closed.wait_for_status(&user.access, &job_id, "failed").await;
        assert!(job["error"].as_str().unwrap().starts_with("the provider refused") || job["error"].as_str().unwrap().starts_with("could not reach"), "{job}");
        assert_eq!(fake.request_count(), 0, "nothing reached the private address");
    }

    async fn bodies_are_read_as_the_document_says(backend: Backend) {
        let vars = [("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1), ("PARLEY_WORKERS", "0")];
        let app = spawn_app_with(backend, &vars).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        // A whole number written as a float is the integer it names; a fraction is not.
        let res = app.post_json("/api/llm/configs/", &json!({"name": "m", "provider": "openai_compatible",
            "model": "m", "base_url": "http://127.0.0.1:9/v1", "max_tokens": 8192.0, "context_window": 16384.0,
            "is_default": true}), Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.json::<Value>().await.unwrap()["max_tokens"], 8192);
        let res = app.post_json("/api/llm/configs/", &json!({"name": "f", "provider": "openai",
            "model": "m", "max_tokens": 10.5}), Some(&admin.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        // A create needs name, provider and model.
        let res = app.post_json("/api/llm/configs/", &json!({"name": "x"}), Some(&admin.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        // A body is an object: an array is refused even where every field is optional.
        let user = app.signup("bodies@example.com").await;
        let res = app.client.patch(app.url("/api/users/me/")).bearer_auth(&user.access).json(&json!([null, null])).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
        // An unknown model is not found, like an unknown session.
        let res = app.post_json("/api/llm/chat/", &json!({"message": "hi", "config_id": "nope"}), Some(&user.access)).await;
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        // Sign-out takes no body, `{}` or `null`.
        for body in ["null", "{}", ""] {
            let account = app.signin("bodies@example.com", PASSWORD).await;
            let res = app.client.post(app.url("/api/auth/logout/")).bearer_auth(&account.access)
                .header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::NO_CONTENT, "{body:?}");
        }
        // A cursor is an id as `next_cursor` gives it.
        let res = app.client.get(app.url("/api/jobs/?cursor=")).bearer_auth(&user.access).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }
}
