//! Shared conversations: a public snapshot without authentication, up to the latest complete
//! message; listed and revoked by the owner; gone with the session or the account.

mod common;

use common::fake_llm::{FakeLlm, Step};
use common::{Account, Backend, TestApp, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn app_with_model(backend: Backend, fake: &FakeLlm) -> TestApp {
    common::app_with_model(backend, &fake.base_url(), json!({}), &[]).await.0
}

async fn chat(app: &TestApp, user: &Account, body: Value) -> Value {
    let res = app.post_json("/api/llm/chat/", &body, Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let accepted: Value = res.json().await.unwrap();
    app.wait_for_status(&user.access, accepted["job_id"].as_str().unwrap(), "succeeded").await;
    accepted
}

async fn share(app: &TestApp, user: &Account, session: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/api/llm/sessions/{session}/share/"), &body, Some(&user.access)).await
}

/// The public snapshot, fetched without any credentials.
async fn public(app: &TestApp, share_id: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/api/shared/{share_id}/"))).send().await.unwrap()
}

both_backends! {
    async fn a_shared_session_is_a_public_snapshot_up_to_its_latest_complete_message(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Four."])]).await;
        let app = app_with_model(backend, &fake).await;
        let user = app.signup("sharer@example.com").await;
        let first = chat(&app, &user, json!({"message": "Two plus two?"})).await;
        let session = first["session_id"].as_str().unwrap();

        let res = share(&app, &user, session, json!({})).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let link: Value = res.json().await.unwrap();
        let share_id = link["share_id"].as_str().unwrap();
        assert!(share_id.len() >= 43, "at least 256 bits in base64url: {share_id}");
        assert!(link["url"].as_str().unwrap().ends_with(&format!("/api/shared/{share_id}/")));
        assert!(link["page_url"].as_str().unwrap().ends_with(&format!("/shared/{share_id}")));
        assert!(link["expires_at"].is_null());

        // A later exchange is not in the snapshot.
        chat(&app, &user, json!({"message": "And three?", "session_id": session})).await;
        let res = public(&app, share_id).await;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        assert!(!text.contains("sharer@example.com") && !text.contains("fake-model") && !text.contains("tokens"), "{text}");
        let snapshot: Value = serde_json::from_str(&text).unwrap();
        let items = snapshot["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{snapshot}");
        assert_eq!((items[0]["role"].as_str(), items[0]["content"].as_str()), (Some("user"), Some("Two plus two?")));
        assert_eq!((items[1]["role"].as_str(), items[1]["content"].as_str()), (Some("assistant"), Some("Four.")));
        assert!(snapshot["title"].is_string());

        let list: Value = app.client.get(app.url("/api/llm/shares/")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["share_id"], share_id);
    }

    async fn a_revoked_or_expired_share_answers_404(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let app = app_with_model(backend, &fake).await;
        let user = app.signup("revoker@example.com").await;
        let session = chat(&app, &user, json!({"message": "Hi"})).await["session_id"].as_str().unwrap().to_owned();
        let link: Value = share(&app, &user, &session, json!({"expires_in_days": 7})).await.json().await.unwrap();
        assert!(link["expires_at"].is_string());
        let share_id = link["share_id"].as_str().unwrap();
        assert_eq!(public(&app, share_id).await.status(), StatusCode::OK);

        let url = app.url(&format!("/api/llm/shares/{}/", link["id"].as_str().unwrap()));
        let res = app.client.delete(&url).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(public(&app, share_id).await, StatusCode::NOT_FOUND, "not_found").await;
        let res = app.client.delete(&url).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        let expiring: Value = share(&app, &user, &session, json!({"expires_in_days": 1})).await.json().await.unwrap();
        sqlx::query("update shared_sessions set expires_at = $2 where id = $1")
            .bind(expiring["id"].as_str().unwrap()).bind(parley_shared::time::now_ms() - 1)
            .execute(&app.state.db.writer).await.unwrap();
        assert_error(public(&app, expiring["share_id"].as_str().unwrap()).await, StatusCode::NOT_FOUND, "not_found").await;
        assert_error(public(&app, "not-a-share").await, StatusCode::NOT_FOUND, "not_found").await;
        assert_error(share(&app, &user, &session, json!({"expires_in_days": 0})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }

    async fn a_share_of_another_users_session_is_refused(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let app = app_with_model(backend, &fake).await;
        let owner = app.signup("owner@example.com").await;
        let session = chat(&app, &owner, json!({"message": "Private"})).await["session_id"].as_str().unwrap().to_owned();
        let intruder = app.signup("intruder@example.com").await;
        assert_error(share(&app, &intruder, &session, json!({})).await, StatusCode::NOT_FOUND, "not_found").await;
        // Nor can another user revoke the owner's link.
        let link: Value = share(&app, &owner, &session, json!({})).await.json().await.unwrap();
        let url = app.url(&format!("/api/llm/shares/{}/", link["id"].as_str().unwrap()));
        let res = app.client.delete(&url).bearer_auth(&intruder.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(public(&app, link["share_id"].as_str().unwrap()).await.status(), StatusCode::OK);
    }

    async fn deleting_the_session_or_the_account_revokes_its_links(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["ok"])]).await;
        let app = app_with_model(backend, &fake).await;
        let user = app.signup("leaver@example.com").await;
        let first = chat(&app, &user, json!({"message": "One"})).await["session_id"].as_str().unwrap().to_owned();
        let second = chat(&app, &user, json!({"message": "Two"})).await["session_id"].as_str().unwrap().to_owned();
        let a: Value = share(&app, &user, &first, json!({})).await.json().await.unwrap();
        let b: Value = share(&app, &user, &second, json!({})).await.json().await.unwrap();

        let res = app.client.delete(app.url(&format!("/api/llm/sessions/{first}/"))).bearer_auth(&user.access).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(public(&app, a["share_id"].as_str().unwrap()).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(public(&app, b["share_id"].as_str().unwrap()).await.status(), StatusCode::OK);

        let res = app.delete_me(&user.access, common::PASSWORD).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(public(&app, b["share_id"].as_str().unwrap()).await.status(), StatusCode::NOT_FOUND);
    }
}
