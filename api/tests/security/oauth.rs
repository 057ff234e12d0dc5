//! Sign-in through GitHub and OpenID Connect providers (wire-level fakes), identities, and
//! the attacks on the flow.

use crate::common::{Backend, PASSWORD, TestApp, assert_error, spawn_app_with};
use crate::fake_idp::{FakeIdp, Grant};
use crate::{actions, both_backends, get_ok};
use parley_shared::usecases::mfa::{code_at, now_secs};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;

const RETURN_TO: &str = "https://app.example.com/after-sign-in";

/// An app with the fake as its GitHub and as an OIDC provider named `acme`.
async fn app_with(backend: Backend) -> (TestApp, FakeIdp) {
    let fake = FakeIdp::start("parley-client").await;
    let vars = [
        ("PARLEY_OAUTH_REDIRECT_URIS", format!("{RETURN_TO}, https://other.example.com/cb")),
        ("PARLEY_OAUTH_GITHUB_CLIENT_ID", "parley-client".into()),
        ("PARLEY_OAUTH_GITHUB_CLIENT_SECRET", "gh-secret".into()),
        ("PARLEY_OAUTH_GITHUB_AUTHORIZE_URL", format!("{}/login/oauth/authorize", fake.base)),
        ("PARLEY_OAUTH_GITHUB_TOKEN_URL", format!("{}/login/oauth/access_token", fake.base)),
        ("PARLEY_OAUTH_GITHUB_API_URL", format!("{}/api", fake.base)),
        ("PARLEY_OIDC_ACME_ISSUER", fake.base.clone()),
        ("PARLEY_OIDC_ACME_CLIENT_ID", "parley-client".into()),
        ("PARLEY_OIDC_ACME_CLIENT_SECRET", "oidc-secret".into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (spawn_app_with(backend, &vars).await, fake)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The first leg, as a browser: the provider URL's query and the cookie.
struct Started {
    query: HashMap<String, String>,
    cookie: String,
}

async fn start(app: &TestApp, provider: &str) -> Started {
    let res = no_redirects()
        .get(app.url(&format!("/api/auth/oauth/{provider}/authorize/?redirect_uri={RETURN_TO}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    Started { query: location.query_pairs().into_owned().collect(), cookie }
}

/// The provider's answer to the browser: the callback, with `code` and the state.
async fn callback(
    app: &TestApp,
    provider: &str,
    started: &Started,
    code: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = no_redirects()
        .get(app.url(&format!("/api/auth/oauth/{provider}/callback/")))
        .query(&[("code", code), ("state", started.query["state"].as_str())]);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

/// Where the callback sent the browser back: `code` or `error` on the return URI.
fn returned(res: &reqwest::Response) -> HashMap<String, String> {
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(RETURN_TO), "{location}");
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

/// A whole sign-in: the provider signs in `grant`; answers where the browser was sent back.
async fn sign_in(app: &TestApp, fake: &FakeIdp, provider: &str, mut grant: Grant) -> HashMap<String, String> {
    let started = start(app, provider).await;
    grant.challenge = started.query["code_challenge"].clone();
    grant.nonce = started.query.get("nonce").cloned();
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    fake.grant(&code, grant);
    returned(&callback(app, provider, &started, &code, Some(&started.cookie)).await)
}

async fn exchange(app: &TestApp, code: &str) -> reqwest::Response {
    app.post_json("/api/auth/oauth/exchange/", &json!({"code": code}), None).await
}

async fn tokens(app: &TestApp, back: &HashMap<String, String>) -> Value {
    let code = back.get("code").unwrap_or_else(|| panic!("no code: {back:?}"));
    let res = exchange(app, code).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn claims(access: &str) -> Value {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

both_backends! {
    async fn the_configured_providers_are_listed_and_the_redirect_carries_pkce_state_and_nonce(backend: Backend) {
        let (app, _fake) = app_with(backend).await;
        let list = get_ok(&app, "/api/auth/oauth/providers/", "").await;
        assert_eq!(list["items"], json!([{"name": "github", "kind": "oauth2"}, {"name": "acme", "kind": "oidc"}]));

        let gh = start(&app, "github").await;
        assert_eq!(gh.query["code_challenge_method"], "S256");
        assert_eq!(gh.query["client_id"], "parley-client");
        assert_eq!(gh.query["response_type"], "code");
        assert!(gh.query["redirect_uri"].ends_with("/api/auth/oauth/github/callback/"));
        assert!(gh.query["scope"].contains("user:email"));
        assert!(gh.query["state"].len() > 40 && gh.query["code_challenge"].len() == 43);
        let oidc = start(&app, "acme").await;
        assert!(oidc.query["nonce"].len() >= 32);
        assert!(oidc.query["scope"].contains("openid") && oidc.query["scope"].contains("email"));
        assert_ne!(oidc.query["state"], gh.query["state"]);

        // Unknown providers and return URIs off the allow-list.
        let res = no_redirects().get(app.url(&format!("/api/auth/oauth/nope/authorize/?redirect_uri={RETURN_TO}"))).send().await.unwrap();
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let res = no_redirects().get(app.url("/api/auth/oauth/github/authorize/?redirect_uri=https://evil.example.com/")).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        let res = no_redirects().get(app.url("/api/auth/oauth/github/authorize/")).send().await.unwrap();
        assert_error(res, StatusCode::BAD_REQUEST, "invalid_query").await;
        let res = no_redirects().get(app.url("/api/auth/oauth/nope/callback/?code=x&state=y")).send().await.unwrap();
        assert_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }

    async fn a_provider_that_cannot_be_reached_is_a_503_and_creates_nothing(backend: Backend) {
        // A port that nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let app = spawn_app_with(backend, &[
            ("PARLEY_OAUTH_REDIRECT_URIS", RETURN_TO),
            ("PARLEY_OIDC_DOWN_ISSUER", &format!("http://{closed}")),
            ("PARLEY_OIDC_DOWN_CLIENT_ID", "id"),
            ("PARLEY_OIDC_DOWN_CLIENT_SECRET", "secret"),
        ]).await;
        let res = no_redirects().get(app.url(&format!("/api/auth/oauth/down/authorize/?redirect_uri={RETURN_TO}"))).send().await.unwrap();
        assert!(res.headers().get("set-cookie").is_none());
        let body = assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "provider_error").await;
        assert!(!body.to_string().contains(&closed.to_string()), "{body}");
    }

    async fn a_github_sign_in_creates_an_account_and_signs_in_again_with_it(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let back = sign_in(&app, &fake, "github", Grant::new("4242", "octo@example.com", true)).await;
        let pair = tokens(&app, &back).await;
        let access = pair["access_token"].as_str().unwrap();
        assert_eq!(claims(access)["amr"], json!(["oauth"]));
        let me = get_ok(&app, "/api/users/me/", access).await;
        assert_eq!(me["email"], "octo@example.com");
        assert_eq!(me["email_verified"], true);
        let ids = get_ok(&app, "/api/users/me/identities/", access).await;
        assert_eq!(ids["items"].as_array().unwrap().len(), 1);
        assert_eq!(ids["items"][0]["provider"], "github");
        assert_eq!(ids["items"][0]["email"], "octo@example.com");
        // The token request carried the PKCE verifier; the fake checked it.
        assert!(fake.token_requests().iter().all(|r| r.contains_key("code_verifier")));

        // The code works once.
        assert_error(exchange(&app, &back["code"]).await, StatusCode::BAD_REQUEST, "invalid_code").await;
        // The same GitHub account again: the same user, even with another email now.
        let back = sign_in(&app, &fake, "github", Grant::new("4242", "renamed@example.com", true)).await;
        let again = tokens(&app, &back).await;
        assert_eq!(get_ok(&app, "/api/users/me/", again["access_token"].as_str().unwrap()).await["id"], me["id"]);
        // No password: a password sign-in fails like any wrong one.
        assert_error(app.login("octo@example.com", "").await, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

        let page = get_ok(&app, "/api/users/me/activity/", access).await;
        assert_eq!(actions(&page), ["auth.login", "auth.login", "auth.login", "identity.link", "user.signup"], "{page}");
        assert_eq!(page["items"][0]["result"], "failure");
        assert_eq!(page["items"][1]["details"]["provider"], "github");
        assert_eq!(page["items"][3]["details"]["created"], true);
    }

    async fn a_verified_provider_email_links_only_to_an_account_that_verified_it_too(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let ann = app.signup("ann@example.com").await;
        // The account has not verified its email: no link, and nothing created.
        let back = sign_in(&app, &fake, "acme", Grant::new("ann-sub", "ann@example.com", true)).await;
        assert_eq!(back.get("error").map(String::as_str), Some("account_exists"), "{back:?}");
        assert!(!back.contains_key("code"));
        parley_shared::store::users::mark_email_verified(&app.state.db.writer, ann.id.parse().unwrap()).await.unwrap();
        // The provider does not vouch for the email: never links.
        let back = sign_in(&app, &fake, "acme", Grant::new("ann-sub", "ann@example.com", false)).await;
        assert_eq!(back.get("error").map(String::as_str), Some("account_exists"), "{back:?}");
        assert!(get_ok(&app, "/api/users/me/identities/", &ann.access).await["items"].as_array().unwrap().is_empty());
        let (users,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&app.state.db.pool).await.unwrap();
        assert_eq!(users, 1);

        // Both verified: linked to Ann's account.
        let back = sign_in(&app, &fake, "acme", Grant::new("ann-sub", "ANN@example.com", true)).await;
        let pair = tokens(&app, &back).await;
        let me = get_ok(&app, "/api/users/me/", pair["access_token"].as_str().unwrap()).await;
        assert_eq!(me["id"], ann.id.as_str());
        let ids = get_ok(&app, "/api/users/me/identities/", &ann.access).await;
        assert_eq!(ids["items"][0]["provider"], "acme");

        // GitHub's primary email unverified (a verified secondary one does not count): no link.
        let bob = app.signup("bob@example.com").await;
        parley_shared::store::users::mark_email_verified(&app.state.db.writer, bob.id.parse().unwrap()).await.unwrap();
        let back = sign_in(&app, &fake, "github", Grant::new("31", "bob@example.com", false)).await;
        assert_eq!(back.get("error").map(String::as_str), Some("account_exists"), "{back:?}");
        assert!(get_ok(&app, "/api/users/me/identities/", &bob.access).await["items"].as_array().unwrap().is_empty());

        // A new person whose email the provider does not vouch for gets an unverified account.
        let back = sign_in(&app, &fake, "github", Grant::new("77", "new@example.com", false)).await;
        let pair = tokens(&app, &back).await;
        assert_eq!(get_ok(&app, "/api/users/me/", pair["access_token"].as_str().unwrap()).await["email_verified"], false);
    }

    async fn state_from_another_browser_forged_expired_or_missing_is_refused(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let started = start(&app, "github").await;
        let mut grant = Grant::new("1", "victim@example.com", true);
        grant.challenge = started.query["code_challenge"].clone();
        fake.grant("the-code", grant);
        // Another browser (another cookie, or none) presents the state.
        let other = start(&app, "github").await;
        for cookie in [Some(other.cookie.as_str()), None] {
            assert_error(callback(&app, "github", &started, "the-code", cookie).await, StatusCode::BAD_REQUEST, "invalid_state").await;
        }
        // A state meant for another provider.
        assert_error(callback(&app, "acme", &started, "the-code", Some(&started.cookie)).await, StatusCode::BAD_REQUEST, "invalid_state").await;
        // A forged state.
        let mut forged = Started { query: started.query.clone(), cookie: started.cookie.clone() };
        let state = forged.query.get_mut("state").unwrap();
        let flipped = if state.ends_with('A') { 'B' } else { 'A' };
        state.pop();
        state.push(flipped);
        assert_error(callback(&app, "github", &forged, "the-code", Some(&started.cookie)).await, StatusCode::BAD_REQUEST, "invalid_state").await;
        // The same state, sealed by this server, once its ten minutes are over.
        let mut flow = parley_shared::oauth::FlowState::open(&app.state.keys, &started.query["state"]).expect("a sealed state");
        flow.expires_at = parley_shared::time::now_ms() - 1;
        let mut expired = Started { query: started.query.clone(), cookie: started.cookie.clone() };
        expired.query.insert("state".into(), flow.seal(&app.state.keys).unwrap());
        assert_error(callback(&app, "github", &expired, "the-code", Some(&started.cookie)).await, StatusCode::BAD_REQUEST, "invalid_state").await;
        // Nothing was exchanged or created.
        assert!(fake.token_requests().is_empty());
        let (users,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&app.state.db.pool).await.unwrap();
        assert_eq!(users, 0);
        // The right browser still can.
        let back = returned(&callback(&app, "github", &started, "the-code", Some(&started.cookie)).await);
        assert!(back.contains_key("code"), "{back:?}");
    }

    async fn id_tokens_with_a_wrong_nonce_key_or_audience_are_refused(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        type Attack = fn(&mut Grant);
        let attacks: [(&str, Attack); 3] = [
            ("nonce", |g| g.wrong_nonce = true),
            ("key", |g| g.sign_with_other_key = true),
            ("audience", |g| g.audience = Some("another-client".into())),
        ];
        for (what, attack) in attacks {
            let mut grant = Grant::new("eve", "eve@example.com", true);
            attack(&mut grant);
            let back = sign_in(&app, &fake, "acme", grant).await;
            assert_eq!(back.get("error").map(String::as_str), Some("invalid_id_token"), "{what}: {back:?}");
        }
        let (users,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&app.state.db.pool).await.unwrap();
        assert_eq!(users, 0);
        // A replayed code (already exchanged at the provider) is a provider error.
        let started = start(&app, "acme").await;
        let back = returned(&callback(&app, "acme", &started, "never-issued", Some(&started.cookie)).await);
        assert_eq!(back.get("error").map(String::as_str), Some("provider_error"));
        // The provider's own refusal comes back as an error too.
        let started = start(&app, "acme").await;
        let res = no_redirects().get(app.url("/api/auth/oauth/acme/callback/"))
            .query(&[("error", "access_denied"), ("state", started.query["state"].as_str())])
            .header("cookie", &started.cookie).send().await.unwrap();
        assert_eq!(returned(&res).get("error").map(String::as_str), Some("access_denied"));
        // A good token signs in.
        let back = sign_in(&app, &fake, "acme", Grant::new("eve", "eve@example.com", true)).await;
        let pair = tokens(&app, &back).await;
        assert_eq!(claims(pair["access_token"].as_str().unwrap())["amr"], json!(["oauth"]));
    }

    async fn a_second_factor_still_applies_after_a_provider_sign_in(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let back = sign_in(&app, &fake, "github", Grant::new("9", "two@example.com", true)).await;
        let pair = tokens(&app, &back).await;
        let access = pair["access_token"].as_str().unwrap().to_owned();
        let into = now_secs() % 30;
        if into >= 20 {
            tokio::time::sleep(std::time::Duration::from_secs(30 - into + 1)).await;
        }
        let t = now_secs();
        let secret = {
            let res = app.post_json("/api/auth/mfa/totp/", &json!({}), Some(&access)).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            res.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned()
        };
        let res = app.post_json("/api/auth/mfa/totp/confirm/", &json!({"code": code_at(&secret, t - 30).unwrap()}), Some(&access)).await;
        assert_eq!(res.status(), StatusCode::OK);

        let back = sign_in(&app, &fake, "github", Grant::new("9", "two@example.com", true)).await;
        let answer = tokens(&app, &back).await;
        assert_eq!(answer["mfa_required"], true, "{answer}");
        assert!(answer.get("access_token").is_none());
        let res = app.post_json("/api/auth/mfa/verify/", &json!({"mfa_token": answer["mfa_token"], "code": code_at(&secret, t).unwrap()}), None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let pair: Value = res.json().await.unwrap();
        assert_eq!(claims(pair["access_token"].as_str().unwrap())["amr"], json!(["oauth", "otp"]));
    }

    async fn an_identity_unlinks_but_never_the_last_way_to_sign_in(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let back = sign_in(&app, &fake, "github", Grant::new("5", "solo@example.com", true)).await;
        let access = tokens(&app, &back).await["access_token"].as_str().unwrap().to_owned();
        let github = get_ok(&app, "/api/users/me/identities/", &access).await["items"][0]["id"].as_str().unwrap().to_owned();
        let unlink = |id: String| app.client.delete(app.url(&format!("/api/users/me/identities/{id}/"))).bearer_auth(&access).send();
        // Its only identity and no password.
        assert_error(unlink(github.clone()).await.unwrap(), StatusCode::CONFLICT, "last_sign_in_method").await;

        // A second identity (the OIDC provider vouches for the same, verified email).
        let back = sign_in(&app, &fake, "acme", Grant::new("solo-sub", "solo@example.com", true)).await;
        tokens(&app, &back).await;
        assert_eq!(unlink(github.clone()).await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_error(unlink(github).await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
        let ids = get_ok(&app, "/api/users/me/identities/", &access).await;
        assert_eq!(ids["items"].as_array().unwrap().len(), 1);
        assert_eq!(ids["items"][0]["provider"], "acme");
        let page = get_ok(&app, "/api/users/me/activity/?action=identity.unlink", &access).await;
        assert_eq!(page["items"][0]["details"]["provider"], "github");

        // An account with a password may unlink its last identity.
        let pw = app.signup("pw@example.com").await;
        parley_shared::store::users::mark_email_verified(&app.state.db.writer, pw.id.parse().unwrap()).await.unwrap();
        let back = sign_in(&app, &fake, "github", Grant::new("6", "pw@example.com", true)).await;
        tokens(&app, &back).await;
        let id = get_ok(&app, "/api/users/me/identities/", &pw.access).await["items"][0]["id"].as_str().unwrap().to_owned();
        let res = app.client.delete(app.url(&format!("/api/users/me/identities/{id}/"))).bearer_auth(&pw.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.login("pw@example.com", PASSWORD).await.status(), StatusCode::OK);
    }

    async fn an_account_without_a_password_deletes_itself_after_a_fresh_sign_in(backend: Backend) {
        let (app, fake) = app_with(backend).await;
        let back = sign_in(&app, &fake, "github", Grant::new("9", "gone@example.com", true)).await;
        let pair = tokens(&app, &back).await;
        let access = pair["access_token"].as_str().unwrap();
        let me = get_ok(&app, "/api/users/me/", access).await;
        let delete = || app.client.delete(app.url("/api/users/me/")).bearer_auth(access).json(&json!({})).send();
        // A session that signed in more than ten minutes ago must sign in again first.
        sqlx::query("update sessions set created_at = created_at - 700000 where user_id = $1")
            .bind(me["id"].as_str().unwrap())
            .execute(&app.state.db.writer)
            .await
            .unwrap();
        assert_error(delete().await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY, "reauthentication_required").await;
        // A fresh provider sign-in may.
        let back = sign_in(&app, &fake, "github", Grant::new("9", "gone@example.com", true)).await;
        let fresh = tokens(&app, &back).await["access_token"].as_str().unwrap().to_owned();
        let res = app.client.delete(app.url("/api/users/me/")).bearer_auth(&fresh).json(&json!({})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (users,): (i64,) = sqlx::query_as("select count(*) from users").fetch_one(&app.state.db.pool).await.unwrap();
        assert_eq!(users, 0);

        // An account with a password still needs it.
        let pw = app.signup("kept@example.com").await;
        let res = app.client.delete(app.url("/api/users/me/")).bearer_auth(&pw.access).json(&json!({})).send().await.unwrap();
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }
}
