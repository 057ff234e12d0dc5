//! Exports end to end: a personal zip read back, admin lists in CSV (escaped against formula
//! injection) and JSON, progress events, downloads for the owner or an admin only, expiry
//! answering 410, and a conversation exported directly.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Account, Backend, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Read;

async fn app_with_model(backend: Backend, fake: &FakeLlm) -> (TestApp, Account) {
    let (app, admin, _) = common::app_with_model(backend, &fake.base_url(), json!({}), &[]).await;
    (app, admin)
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap()
}

/// Chats once and waits for the reply; the session id.
async fn chat_once(app: &TestApp, user: &Account, message: &str) -> String {
    let res = app.post_json("/api/llm/chat/", &json!({"message": message}), Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let accepted: Value = res.json().await.unwrap();
    app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    accepted["session_id"].as_str().unwrap().to_owned()
}

/// Starts an export with `path` and `body`, waits for its job; the accepted answer and the
/// job's result.
async fn export(app: &TestApp, token: &str, path: &str, body: Value) -> (Value, Value) {
    let res = app.post_json(path, &body, Some(token)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "{}", res.text().await.unwrap());
    let accepted: Value = res.json().await.unwrap();
    let job = app.wait_for_status(token, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    (accepted, job["result"].clone())
}

async fn download(app: &TestApp, token: &str, result: &Value) -> reqwest::Response {
    get(app, token, result["download_url"].as_str().unwrap()).await
}

fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            (file.name().unwrap().into_owned(), content)
        })
        .collect()
}

both_backends! {
    async fn a_personal_export_is_a_zip_of_profile_sessions_and_activity(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Paris", " is the capital."]), Step::reply(&["Capitals"])]).await;
        let (app, admin) = app_with_model(backend, &fake).await;
        let user = app.signup("export@example.com").await;
        let session = chat_once(&app, &user, "What is the capital of France?").await;

        let (accepted, result) = export(&app, &user.access, "/api/users/me/export/", json!({})).await;
        assert_eq!(result["download_url"], accepted["download_url"]);
        let res = download(&app, &user.access, &result).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/zip");
        let disposition = res.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert!(disposition.starts_with("attachment; filename=\"parley-personal-") && disposition.ends_with(".zip\""), "{disposition}");
        let files = unzip(&res.bytes().await.unwrap());

        let profile: Value = serde_json::from_slice(&files["profile.json"]).unwrap();
        assert_eq!(profile["email"], "export@example.com");
        assert_eq!(profile["id"], user.id.as_str());
        let convo: Value = serde_json::from_slice(&files[&format!("sessions/{session}.json")]).unwrap();
        assert_eq!(convo["id"], session.as_str());
        let messages = convo["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2, "{convo}");
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(messages[0]["content"], "What is the capital of France?");
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[1]["model"], "fake-model");
        assert_eq!(messages[1]["content"], "Paris is the capital.");
        assert!(messages[1]["created_at"].is_string());
        let markdown = String::from_utf8(files[&format!("sessions/{session}.md")].clone()).unwrap();
        assert!(markdown.contains("## user,") && markdown.contains("## assistant (fake-model),"), "{markdown}");
        assert!(markdown.contains("Paris is the capital."));
        let activity: Value = serde_json::from_slice(&files["activity.json"]).unwrap();
        assert!(activity.as_array().unwrap().iter().any(|e| e["action"] == "user.signup"), "{activity}");

        // Progress: sessions done, of the total.
        let events = common::sse::collect(&app, &user.access, accepted["stream_url"].as_str().unwrap(), None).await;
        let progress: Vec<&Value> = events.iter().filter(|e| e.event == "progress").map(|e| &e.data).collect();
        assert_eq!(progress.first().map(|p| (&p["done"], &p["total"])), Some((&json!(0), &json!(1))));
        assert_eq!(progress.last().map(|p| (&p["done"], &p["total"])), Some((&json!(1), &json!(1))));

        // A retry with the same Idempotency-Key answers the first export.
        let retry = |key: &'static str| {
            app.client.post(app.url("/api/users/me/export/")).bearer_auth(&user.access).header("idempotency-key", key).json(&json!({})).send()
        };
        let first: Value = retry("export-1").await.unwrap().json().await.unwrap();
        let again: Value = retry("export-1").await.unwrap().json().await.unwrap();
        assert_eq!(first["export_id"], again["export_id"]);
        assert_ne!(first["export_id"], accepted["export_id"]);

        // Only its owner or an admin downloads it.
        let other = app.signup("other@example.com").await;
        assert_error(download(&app, &other.access, &result).await, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(download(&app, &admin.access, &result).await.status(), StatusCode::OK);
    }

    async fn admin_csv_exports_escape_formulas_and_json_keeps_the_text(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, admin) = app_with_model(backend, &fake).await;
        let res = app.register(&json!({"email": "mallory@example.com", "password": common::PASSWORD,
                                       "display_name": "=HYPERLINK(\"http://x\")"})).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        app.signup("plain@example.com").await;

        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "users", "format": "csv"})).await;
        let res = download(&app, &admin.access, &result).await;
        assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
        let text = res.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        assert_eq!(&headers[1], "email");
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3, "{text}");
        let mallory = rows.iter().find(|r| &r[1] == "mallory@example.com").expect("mallory's row");
        assert_eq!(&mallory[3], "'=HYPERLINK(\"http://x\")");

        let filters = json!({"search": "mallory"});
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "users", "format": "json", "filters": filters})).await;
        let rows: Value = download(&app, &admin.access, &result).await.json().await.unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
        assert_eq!(rows[0]["display_name"], "=HYPERLINK(\"http://x\")");

        // Usage and the activity log export too.
        let user = app.signup("chatty@example.com").await;
        chat_once(&app, &user, "Hi").await;
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "usage", "format": "json", "filters": {"user_id": user.id}})).await;
        let rows: Value = download(&app, &admin.access, &result).await.json().await.unwrap();
        assert!(rows.as_array().unwrap().iter().any(|r| r["kind"] == "chat" && r["user_id"] == user.id.as_str()), "{rows}");
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "audit", "format": "csv", "filters": {"action": "user.signup"}})).await;
        let text = download(&app, &admin.access, &result).await.text().await.unwrap();
        assert_eq!(text.lines().count(), 1 + 3, "a header and the three sign-ups: {text}");
        // The audit list's own filter names work too: `target` and a `since`/`until` window.
        let filters = json!({"action": "user.signup", "target": user.id, "since": "2000-01-01T00:00:00Z"});
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "audit", "format": "json", "filters": filters})).await;
        let rows: Value = download(&app, &admin.access, &result).await.json().await.unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 1, "only chatty's sign-up: {rows}");
        assert_eq!(rows[0]["target_id"], user.id.as_str());
        let filters = json!({"action": "user.signup", "until": "2000-01-01T00:00:00Z", "to": "2999-01-01"});
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "audit", "format": "csv", "filters": filters})).await;
        assert_eq!(download(&app, &admin.access, &result).await.text().await.unwrap().lines().count(), 1, "the earlier bound applies");

        // Admins only; bad requests are refused.
        assert_error(app.post_json("/api/admin/exports/", &json!({"kind": "users", "format": "csv"}), Some(&user.access)).await, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app.post_json("/api/admin/exports/", &json!({"kind": "users", "format": "zip"}), Some(&admin.access)).await;
        assert!(res.status().is_client_error());
        let res = app.post_json("/api/admin/exports/", &json!({"kind": "users", "format": "csv", "filters": {"group_by": "year"}}), Some(&admin.access)).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
        // An action that does not exist matches nothing.
        let (_, result) = export(&app, &admin.access, "/api/admin/exports/", json!({"kind": "audit", "format": "csv", "filters": {"action": "nope"}})).await;
        assert_eq!(download(&app, &admin.access, &result).await.text().await.unwrap().lines().count(), 1);
    }

    async fn an_expired_export_answers_410_and_its_file_is_deleted(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, _admin) = app_with_model(backend, &fake).await;
        let user = app.signup("expiring@example.com").await;
        let (accepted, result) = export(&app, &user.access, "/api/users/me/export/", json!({})).await;
        assert_eq!(download(&app, &user.access, &result).await.status(), StatusCode::OK);
        let export_id = accepted["export_id"].as_str().unwrap();
        let key: String = sqlx::query_scalar("select storage_key from exports where id = $1")
            .bind(export_id).fetch_one(&app.state.db.pool).await.unwrap();
        let file = std::path::Path::new(&app.vars["PARLEY_EXPORT_DIR"]).join(&key);
        assert!(file.exists());

        sqlx::query("update exports set expires_at = $2 where id = $1")
            .bind(export_id).bind(parley_shared::time::now_ms() - 1).execute(&app.state.db.writer).await.unwrap();
        assert_error(download(&app, &user.access, &result).await, StatusCode::GONE, "export_expired").await;
        assert!(!file.exists(), "the expired file is deleted");
        assert_error(download(&app, &user.access, &result).await, StatusCode::GONE, "export_expired").await;
        assert_error(get(&app, &user.access, "/api/exports/not-an-id/download/").await, StatusCode::NOT_FOUND, "not_found").await;
    }

    async fn a_conversation_exports_directly_as_markdown_or_json(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Blue."])]).await;
        let (app, _admin) = app_with_model(backend, &fake).await;
        let user = app.signup("convo@example.com").await;
        let session = chat_once(&app, &user, "Sky colour?").await;
        let res = get(&app, &user.access, &format!("/api/llm/sessions/{session}/export/")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/markdown; charset=utf-8");
        assert_eq!(res.headers()["content-disposition"], format!("attachment; filename=\"conversation-{session}.md\"").as_str());
        let markdown = res.text().await.unwrap();
        assert!(markdown.starts_with("# ") && markdown.contains("Sky colour?") && markdown.contains("Blue."), "{markdown}");

        let res = get(&app, &user.access, &format!("/api/llm/sessions/{session}/export/?format=json")).await;
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["messages"][1]["content"], "Blue.");
        assert_eq!(body["messages"][1]["model"], "fake-model");
        assert!(body.get("user_id").is_none() && body.get("config_id").is_none());

        let other = app.signup("nosy@example.com").await;
        assert_error(get(&app, &other.access, &format!("/api/llm/sessions/{session}/export/")).await, StatusCode::NOT_FOUND, "not_found").await;
        let res = get(&app, &user.access, &format!("/api/llm/sessions/{session}/export/?format=pdf")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
}

both_backends! {
    async fn deleting_the_account_deletes_its_export_files(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let (app, _admin) = app_with_model(backend, &fake).await;
        let user = app.signup("leaving@example.com").await;
        let (accepted, _) = export(&app, &user.access, "/api/users/me/export/", json!({})).await;
        let key: String = sqlx::query_scalar("select storage_key from exports where id = $1")
            .bind(accepted["export_id"].as_str().unwrap()).fetch_one(&app.state.db.pool).await.unwrap();
        let file = std::path::Path::new(&app.vars["PARLEY_EXPORT_DIR"]).join(&key);
        assert!(file.exists());
        assert_eq!(app.delete_me(&user.access, common::PASSWORD).await.status(), StatusCode::NO_CONTENT);
        assert!(!file.exists(), "the account's export file is deleted with it");
    }
}
