//! Account security end to end, on SQLite and PostgreSQL: the session list, the activity
//! log, TOTP second factors, and sign-in through identity providers.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod fake_idp;
mod mfa;
mod oauth;
mod sessions;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::Value;

pub const ADMIN: [(&str, &str); 2] =
    [("PARLEY_ADMIN_EMAIL", "root@example.com"), ("PARLEY_ADMIN_PASSWORD", "admin passphrase 1")];

/// GETs `path` with `token`; asserts 200 and returns the body.
pub async fn get_ok(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.json().await.unwrap()
}

/// The actions of a page of activity entries, newest first.
pub fn actions(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}
