//! The `parley-api` commands as a user runs them: `migrate`, `create-admin`, and a clear
//! error for a bad setting.

mod common;

use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Output};

fn parley_api(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parley-api"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars)
        .output()
        .expect("parley-api runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_database_and_create_admin_makes_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("not/yet/there/parley.db");
    let vars: HashMap<String, String> = [
        ("PARLEY_DATABASE_URL".to_owned(), format!("sqlite://{}", db.display())),
        ("PARLEY_ARGON2_MEMORY_KIB".to_owned(), "1024".to_owned()),
        ("PARLEY_ARGON2_ITERATIONS".to_owned(), "1".to_owned()),
    ]
    .into();

    let out = parley_api(&vars, &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.exists());

    let out = parley_api(&vars, &["create-admin", "--email", "boss@example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password"));
    let out =
        parley_api(&vars, &["create-admin", "--email", "boss@example.com", "--password", "a long admin passphrase"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The server on that database knows the admin.
    let mut serve = common::base_vars(dir.path());
    serve.extend(vars);
    let app = common::start(serve, std::sync::Arc::new(dir)).await;
    let admin = app.signin("boss@example.com", "a long admin passphrase").await;
    let me: Value = app.me(&admin.access).await.json().await.unwrap();
    assert_eq!(me["is_admin"], true);
    let res = app.client.get(app.url("/api/admin/queues/")).bearer_auth(&admin.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[test]
fn a_bad_setting_stops_start_up_with_an_error_naming_the_variable() {
    let vars: HashMap<String, String> = [("PARLEY_BIND".to_owned(), "not-an-address".to_owned())].into();
    let out = parley_api(&vars, &["migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PARLEY_BIND"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = parley_api(&HashMap::new(), &["frobnicate"]);
    assert!(!out.status.success());
}
