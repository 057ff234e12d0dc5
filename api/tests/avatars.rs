//! Avatars: validated on upload, processed by a job, served with the right type.

mod common;

use common::{Backend, assert_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, _| {
        if x < width / 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn upload(app: &common::TestApp, token: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_owned()));
    app.client.post(app.url("/api/users/me/avatar/")).bearer_auth(token).multipart(form).send().await.unwrap()
}

both_backends! {
    async fn a_cancelled_avatar_job_removes_its_upload(backend: Backend) {
        // No workers: the job waits, and the cancel ends it. Its kind's end removes the file
        // that will now never be processed.
        let app = spawn_app_with(backend, &[("PARLEY_WORKERS", "0")]).await;
        let user = app.signup("cancelavatar@example.com").await;
        let res = upload(&app, &user.access, "me.png", png(64, 64)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        let id = job["job_id"].as_str().unwrap();
        let uploads = std::path::Path::new(&app.vars["PARLEY_MEDIA_DIR"]).join("uploads");
        let files = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(files(&uploads), 1, "the upload waits for its job");
        let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&user.access)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(app.job(&user.access, id).await["status"], "cancelled");
        assert_eq!(files(&uploads), 0, "the upload is removed");
    }

    async fn an_uploaded_image_becomes_a_square_png_avatar(backend: Backend) {
        let app = spawn_app(backend).await;
        let user = app.signup("avatar@example.com").await;
        let res = upload(&app, &user.access, "me.gif", png(300, 200)).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        app.wait_for_status(&user.access, job["job_id"].as_str().unwrap(), "succeeded").await;
        let me: Value = app.me(&user.access).await.json().await.unwrap();
        let url = me["avatar_url"].as_str().expect("an avatar url");
        let path = &url[url.find("/media/").unwrap()..];
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "image/png");
        let img = image::load_from_memory(&res.bytes().await.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (256, 256));
        // The crop is centred: the red left eighth of the wide image is cut away.
        assert_eq!(img.to_rgb8().get_pixel(0, 128).0, [0, 0, 255]);

        assert_eq!(app.client.delete(app.url("/api/users/me/avatar/")).bearer_auth(&user.access).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        let me: Value = app.me(&user.access).await.json().await.unwrap();
        assert!(me["avatar_url"].is_null());
        assert_eq!(app.client.get(app.url(path)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }

    async fn a_file_that_is_not_an_image_is_refused_and_nothing_is_stored(backend: Backend) {
        // A small size limit, so the oversized upload fits in the socket buffers and the client
        // reads the early 413 instead of a reset while still sending.
        let app = spawn_app_with(backend, &[("PARLEY_MAX_AVATAR_BYTES", "100000")]).await;
        let user = app.signup("notimage@example.com").await;
        let res = upload(&app, &user.access, "evil.png", b"<?php echo 1; ?>".to_vec()).await;
        assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_image").await;
        // A real PNG header over a cut-off body: refused at upload, not by the job.
        let whole = png(300, 200);
        let truncated = upload(&app, &user.access, "cut.png", whole[..whole.len() / 2].to_vec()).await;
        assert_error(truncated, StatusCode::UNPROCESSABLE_ENTITY, "invalid_image").await;
        let jobs: Value = app.client.get(app.url("/api/jobs/?status=queued")).bearer_auth(&user.access).send().await.unwrap().json().await.unwrap();
        assert!(jobs["items"].as_array().unwrap().iter().all(|j| j["kind"] != "process_avatar"));
        let media = std::path::Path::new(&app.vars["PARLEY_MEDIA_DIR"]).join("uploads");
        assert!(!media.exists() || std::fs::read_dir(&media).unwrap().next().is_none());
        let big = upload(&app, &user.access, "big.png", vec![0u8; 200_000]).await;
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let form = Form::new().text("other", "x");
        let missing = app.client.post(app.url("/api/users/me/avatar/")).bearer_auth(&user.access).multipart(form).send().await.unwrap();
        assert_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "validation_error").await;
    }
}
