//! TOTP second factors: enrolment, confirmation, sign-in with a code or a recovery code,
//! and the attacks on them (replays, reused codes, the mfa_token as an access token).

use crate::common::{Account, Backend, PASSWORD, TestApp, assert_error, spawn_app, spawn_app_with};
use crate::{ADMIN, actions, both_backends, get_ok};
use base64::Engine;
use parley_shared::usecases::mfa::{code_at, now_secs};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Waits until at least 10 s of the current 30 s TOTP step remain, so that codes made for
/// this step and its neighbours stay valid for the whole test; answers the time to make
/// codes from.
async fn fresh_step() -> u64 {
    let into = now_secs() % 30;
    if into >= 20 {
        tokio::time::sleep(Duration::from_millis((30 - into) * 1000 + 200)).await;
    }
    now_secs()
}

async fn verified(app: &TestApp, email: &str) -> Account {
    let account = app.signup(email).await;
    parley_shared::store::users::mark_email_verified(&app.state.db.writer, account.id.parse().unwrap()).await.unwrap();
    account
}

async fn enrol(app: &TestApp, token: &str) -> Value {
    let res = app.post_json("/api/auth/mfa/totp/", &json!({}), Some(token)).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Enrols and confirms with the code of the step before `t`; answers the secret and the
/// recovery codes.
async fn enable(app: &TestApp, token: &str, t: u64) -> (String, Vec<String>) {
    let secret = enrol(app, token).await["secret"].as_str().unwrap().to_owned();
    let res = app
        .post_json("/api/auth/mfa/totp/confirm/", &json!({"code": code_at(&secret, t - 30).unwrap()}), Some(token))
        .await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    let codes = body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    (secret, codes)
}

/// Signs in with the password; asserts the second-factor challenge and answers its token.
async fn challenge(app: &TestApp, email: &str) -> String {
    let res = app.login(email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post_json("/api/auth/mfa/verify/", body, None).await
}

fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Waits (20 s at most) for an email whose subject contains `needle`.
async fn wait_for_email(app: &TestApp, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(app.mail_dir()).into_iter().flatten().flatten().any(|entry| {
            std::fs::read_to_string(entry.path())
                .is_ok_and(|raw| crate::common::mail::parse(&raw).subject.contains(needle))
        });
        if found {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no email about {needle:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends! {
    async fn enrolment_needs_a_verified_email_and_a_recent_sign_in(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_MFA_ISSUER", "Acme Chat")]).await;
        let account = app.signup("enrol@example.com").await;
        let res = app.post_json("/api/auth/mfa/totp/", &json!({}), Some(&account.access)).await;
        assert_error(res, StatusCode::CONFLICT, "email_not_verified").await;
        parley_shared::store::users::mark_email_verified(&app.state.db.writer, account.id.parse().unwrap()).await.unwrap();

        // No body at all is fine too.
        let res = app.client.post(app.url("/api/auth/mfa/totp/")).bearer_auth(&account.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        let secret = body["secret"].as_str().unwrap();
        assert!(secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)), "{secret}");
        let uri = body["otpauth_uri"].as_str().unwrap();
        assert!(uri.starts_with("otpauth://totp/Acme%20Chat:enrol%40example.com?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")) && uri.contains("issuer=Acme%20Chat"), "{uri}");
        let svg = body["qr_code"].as_str().unwrap().strip_prefix("data:image/svg+xml;base64,").unwrap();
        let svg = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(svg).unwrap()).unwrap();
        assert!(svg.contains("<svg"));
        assert_eq!(get_ok(&app, "/api/auth/mfa/", &account.access).await, json!({"totp": "pending", "recovery_codes_left": 0}));
        // The secret is stored sealed.
        let (stored,): (String,) = sqlx::query_as("select secret from mfa_totp").fetch_one(&app.state.db.pool).await.unwrap();
        assert!(!stored.contains(secret));

        // A session older than 10 minutes must give the password.
        sqlx::query("update sessions set created_at = $1").bind(parley_shared::time::now_ms() - 11 * 60_000)
            .execute(&app.state.db.writer).await.unwrap();
        let res = app.post_json("/api/auth/mfa/totp/", &json!({}), Some(&account.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "reauthentication_required").await;
        let res = app.post_json("/api/auth/mfa/totp/", &json!({"password": "not the password"}), Some(&account.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = app.post_json("/api/auth/mfa/totp/", &json!({"password": PASSWORD}), Some(&account.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = app.client.post(app.url("/api/auth/mfa/totp/")).bearer_auth(&account.access).header("content-type", "application/json").body("{oops").send().await.unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "invalid_body").await;

        // Until confirmed, sign-in needs no second factor.
        assert!(app.signin("enrol@example.com", PASSWORD).await.access.len() > 20);
        let page = get_ok(&app, "/api/users/me/activity/?action=mfa.totp.enroll", &account.access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
    }

    async fn confirming_answers_ten_recovery_codes_ends_other_sessions_and_emails_the_user(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = verified(&app, "confirm@example.com").await;
        let other = app.signin("confirm@example.com", PASSWORD).await;
        let t = fresh_step().await;
        let secret = enrol(&app, &account.access).await["secret"].as_str().unwrap().to_owned();
        let res = app.post_json("/api/auth/mfa/totp/confirm/", &json!({"code": "000000"}), Some(&account.access)).await;
        if code_at(&secret, t).unwrap() != "000000" {
            assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        }
        let res = app.post_json("/api/auth/mfa/totp/confirm/", &json!({"code": code_at(&secret, t).unwrap()}), Some(&account.access)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let codes: Vec<String> = res.json::<Value>().await.unwrap()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);
        // Stored only as keyed hashes.
        let stored: Vec<(String,)> = sqlx::query_as("select code_hash from mfa_recovery_codes").fetch_all(&app.state.db.pool).await.unwrap();
        assert_eq!(stored.len(), 10);
        assert!(stored.iter().all(|(h,)| codes.iter().all(|c| !h.contains(&c.replace('-', "")))));

        assert_error(app.me(&other.access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(app.me(&account.access).await.status(), StatusCode::OK);
        assert_eq!(get_ok(&app, "/api/auth/mfa/", &account.access).await, json!({"totp": "enabled", "recovery_codes_left": 10}));
        let res = app.post_json("/api/auth/mfa/totp/", &json!({}), Some(&account.access)).await;
        assert_error(res, StatusCode::CONFLICT, "mfa_already_enabled").await;
        let res = app.post_json("/api/auth/mfa/totp/confirm/", &json!({"code": code_at(&secret, t).unwrap()}), Some(&account.access)).await;
        assert_error(res, StatusCode::CONFLICT, "mfa_already_enabled").await;
        wait_for_email(&app, "Two-factor authentication is on").await;
        let page = get_ok(&app, "/api/users/me/activity/", &account.access).await;
        assert_eq!(actions(&page)[..3], ["mfa.totp.confirm", "mfa.verify", "mfa.totp.enroll"], "{page}");
        assert_eq!(page["items"][1]["result"], "failure");
        assert!(!page.to_string().contains(&codes[0]));
    }

    async fn a_password_sign_in_then_needs_a_code_and_each_code_works_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = verified(&app, "twice@example.com").await;
        let t = fresh_step().await;
        let (secret, _) = enable(&app, &account.access, t).await;

        let token = challenge(&app, "twice@example.com").await;
        // The mfa_token is no access token.
        assert_error(app.me(&token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let res = app.client.get(app.url("/api/auth/sessions/")).bearer_auth(&token).send().await.unwrap();
        assert_error(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        // Neither or both of the codes.
        assert_error(verify(&app, &json!({"mfa_token": token})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "code": "1", "recovery_code": "2"})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(verify(&app, &json!({"mfa_token": "made-up", "code": code_at(&secret, t).unwrap()})).await, StatusCode::BAD_REQUEST, "invalid_mfa_token").await;
        // Nor is an access token an mfa_token: the second step cannot be skipped with one.
        assert_error(verify(&app, &json!({"mfa_token": account.access, "code": code_at(&secret, t).unwrap()})).await, StatusCode::BAD_REQUEST, "invalid_mfa_token").await;

        let code = code_at(&secret, t).unwrap();
        let res = verify(&app, &json!({"mfa_token": token, "code": code})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let pair: Value = res.json().await.unwrap();
        let access = pair["access_token"].as_str().unwrap();
        assert_eq!(claims(access)["amr"], json!(["pwd", "otp"]));
        assert_eq!(get_ok(&app, "/api/auth/sessions/", access).await["items"][0]["amr"], json!(["pwd", "otp"]));
        // A refreshed pair keeps how the session signed in.
        let refreshed: Value = app.refresh(pair["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
        assert_eq!(claims(refreshed["access_token"].as_str().unwrap())["amr"], json!(["pwd", "otp"]));

        // The same mfa_token again, and the same code on a new sign-in: both refused.
        assert_error(verify(&app, &json!({"mfa_token": token, "code": code_at(&secret, t + 30).unwrap()})).await, StatusCode::BAD_REQUEST, "invalid_mfa_token").await;
        let token = challenge(&app, "twice@example.com").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "code": code})).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        // An older code than the last one accepted is refused too.
        assert_error(verify(&app, &json!({"mfa_token": token, "code": code_at(&secret, t - 30).unwrap()})).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        // The next step's code works.
        assert_eq!(verify(&app, &json!({"mfa_token": token, "code": code_at(&secret, t + 30).unwrap()})).await.status(), StatusCode::OK);

        let page = get_ok(&app, "/api/users/me/activity/?action=mfa.verify&result=failure", access).await;
        let reasons: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["details"]["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["replayed_code", "replayed_code"]);
    }

    async fn an_expired_mfa_token_is_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = verified(&app, "late@example.com").await;
        let t = fresh_step().await;
        let (secret, _) = enable(&app, &account.access, t).await;
        let token = challenge(&app, "late@example.com").await;
        sqlx::query("update mfa_challenges set expires_at = $1").bind(parley_shared::time::now_ms() - 1)
            .execute(&app.state.db.writer).await.unwrap();
        assert_error(verify(&app, &json!({"mfa_token": token, "code": code_at(&secret, t).unwrap()})).await, StatusCode::BAD_REQUEST, "invalid_mfa_token").await;
        // The code was not spent on it.
        let token = challenge(&app, "late@example.com").await;
        assert_eq!(verify(&app, &json!({"mfa_token": token, "code": code_at(&secret, t).unwrap()})).await.status(), StatusCode::OK);
    }

    async fn recovery_codes_work_once_and_new_ones_void_the_old(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = verified(&app, "recover@example.com").await;
        let t = fresh_step().await;
        let (secret, codes) = enable(&app, &account.access, t).await;

        let token = challenge(&app, "recover@example.com").await;
        let res = verify(&app, &json!({"mfa_token": token, "recovery_code": codes[0]})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let access = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let token = challenge(&app, "recover@example.com").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "recovery_code": codes[0]})).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        // The owner hears of the code's use.
        wait_for_email(&app, "A recovery code was used").await;
        // Case, spaces and dashes do not matter.
        let typed = codes[1].to_uppercase().replace('-', " ");
        assert_eq!(verify(&app, &json!({"mfa_token": token, "recovery_code": typed})).await.status(), StatusCode::OK);
        assert_eq!(get_ok(&app, "/api/auth/mfa/", &access).await["recovery_codes_left"], 8);

        // New codes need a current TOTP code; the old ones stop working.
        let res = app.post_json("/api/auth/mfa/recovery-codes/", &json!({"code": "12"}), Some(&access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = app.post_json("/api/auth/mfa/recovery-codes/", &json!({"code": code_at(&secret, t).unwrap()}), Some(&access)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let fresh: Vec<String> = res.json::<Value>().await.unwrap()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
        assert_eq!(fresh.len(), 10);
        let token = challenge(&app, "recover@example.com").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "recovery_code": codes[2]})).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        assert_eq!(verify(&app, &json!({"mfa_token": token, "recovery_code": fresh[0]})).await.status(), StatusCode::OK);
        // Another account's codes are not this one's.
        let other = verified(&app, "other@example.com").await;
        let (_, other_codes) = enable(&app, &other.access, t).await;
        let token = challenge(&app, "recover@example.com").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "recovery_code": other_codes[0]})).await, StatusCode::BAD_REQUEST, "invalid_code").await;

        let page = get_ok(&app, "/api/users/me/activity/?action=mfa.recovery_code.use", &access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 3);
        assert_eq!(page["items"][0]["details"]["codes_left"], 9);
        let page = get_ok(&app, "/api/users/me/activity/?action=mfa.recovery_codes.regenerate", &access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        wait_for_email(&app, "New recovery codes").await;
    }

    async fn wrong_codes_are_limited_per_account(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_MFA_MAX_FAILURES", "3")]).await;
        let account = verified(&app, "limit@example.com").await;
        let t = fresh_step().await;
        let (secret, _) = enable(&app, &account.access, t).await;
        let right = code_at(&secret, t).unwrap();
        let wrong = if right == "000000" { "111111" } else { "000000" };
        let token = challenge(&app, "limit@example.com").await;
        for _ in 0..3 {
            assert_error(verify(&app, &json!({"mfa_token": token, "code": wrong})).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        }
        let res = verify(&app, &json!({"mfa_token": token, "code": right})).await;
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        assert_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        // A new sign-in does not reset it.
        let token = challenge(&app, "limit@example.com").await;
        assert_error(verify(&app, &json!({"mfa_token": token, "code": right})).await, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        // Another account is not limited.
        let other = verified(&app, "free@example.com").await;
        let (other_secret, _) = enable(&app, &other.access, t).await;
        let token = challenge(&app, "free@example.com").await;
        assert_eq!(verify(&app, &json!({"mfa_token": token, "code": code_at(&other_secret, t).unwrap()})).await.status(), StatusCode::OK);
    }

    async fn turning_the_factor_off_needs_the_password_and_a_code(backend: Backend) {
        let app = spawn_app(backend).await;
        let account = verified(&app, "off@example.com").await;
        let t = fresh_step().await;
        let (secret, codes) = enable(&app, &account.access, t).await;
        let token = challenge(&app, "off@example.com").await;
        let other: Value = verify(&app, &json!({"mfa_token": token, "recovery_code": codes[0]})).await.json().await.unwrap();

        let off = |body: Value| app.client.delete(app.url("/api/auth/mfa/totp/")).bearer_auth(&account.access).json(&body).send();
        let code = code_at(&secret, t).unwrap();
        assert_error(off(json!({"password": "not the password", "code": code})).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_error(off(json!({"password": PASSWORD, "code": "12345"})).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        assert_eq!(off(json!({"password": PASSWORD, "code": code})).await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_error(off(json!({"password": PASSWORD, "code": code})).await.unwrap(), StatusCode::CONFLICT, "mfa_not_enabled").await;

        assert_error(app.me(other["access_token"].as_str().unwrap()).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_eq!(get_ok(&app, "/api/auth/mfa/", &account.access).await, json!({"totp": "disabled", "recovery_codes_left": 0}));
        let fresh = app.signin("off@example.com", PASSWORD).await;
        assert_eq!(claims(&fresh.access)["amr"], json!(["pwd"]));
        wait_for_email(&app, "Two-factor authentication is off").await;
    }

    async fn an_admin_removes_a_users_factor(backend: Backend) {
        let app = spawn_app_with(backend, &ADMIN).await;
        let admin = app.signin("root@example.com", "admin passphrase 1").await;
        let user = verified(&app, "lost@example.com").await;
        let t = fresh_step().await;
        enable(&app, &user.access, t).await;
        let url = app.url(&format!("/api/admin/users/{}/mfa/", user.id));
        assert_error(app.client.delete(&url).bearer_auth(&user.access).send().await.unwrap(), StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(app.client.delete(&url).bearer_auth(&admin.access).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_error(app.client.delete(&url).bearer_auth(&admin.access).send().await.unwrap(), StatusCode::CONFLICT, "mfa_not_enabled").await;
        let res = app.client.delete(app.url(&format!("/api/admin/users/{}/mfa/", uuid::Uuid::now_v7()))).bearer_auth(&admin.access).send().await.unwrap();
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;

        // Every session of the user ended; a password sign-in is enough again.
        assert_error(app.me(&user.access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let again = app.signin("lost@example.com", PASSWORD).await;
        let page = get_ok(&app, "/api/users/me/activity/?action=admin.mfa.remove", &again.access).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        assert_eq!(page["items"][0]["target_id"], user.id.as_str());
        wait_for_email(&app, "An administrator removed two-factor authentication").await;
    }
}
