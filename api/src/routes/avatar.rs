//! Avatar upload (validated here, processed by a `process_avatar` job), removal, and serving.

use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;
use crate::views::JobAccepted;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::avatar::{self, AvatarError};
use parley_shared::jobs::JobSpec;
use parley_shared::jobs::ProcessAvatar;
use parley_shared::media::{new_key, validate_key};
use parley_shared::store::{jobs, users};

pub fn routes(max_avatar_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/api/users/me/avatar",
            post(upload_avatar).delete(delete_avatar).layer(DefaultBodyLimit::max(max_avatar_bytes + 64 * 1024)),
        )
        .route("/media/avatars/{file}", get(serve_avatar))
}

fn image_error(e: AvatarError) -> ApiError {
    match e {
        AvatarError::TooLarge { .. } => ApiError::PayloadTooLarge { code: "invalid_image", message: e.to_string() },
        _ => ApiError::Unprocessable { code: "invalid_image", message: e.to_string() },
    }
}

/// The upload form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AvatarUpload {
    /// The image: PNG, JPEG, WebP or GIF.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Uploads an avatar (multipart field `file`, PNG, JPEG, WebP or GIF, at most 5 MB). The
/// type is read from the content; a job crops and resizes it.
#[utoipa::path(post, path = "/api/users/me/avatar/", tag = "accounts", security(("bearer" = [])),
    request_body(content = AvatarUpload, content_type = "multipart/form-data"), responses(
    (status = 202, body = JobAccepted),
    (status = 413, body = ErrorEnvelope),
    (status = 422, description = "not an image, an unsupported type, or too many pixels", body = ErrorEnvelope)))]
pub async fn upload_avatar(
    State(state): State<AppState>,
    auth: AuthUser,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers, format!("user:{}:avatar", auth.user.id))?;
    if let Some(key) = &key
        && let Some(first) = key.replay(&state.db.pool).await?
    {
        return Ok(first);
    }
    let mut form = form.map_err(|r| {
        let text = format!("expected a multipart/form-data body with a `file` field: {}", r.body_text());
        crate::extract::rejection("invalid_body", r.status(), text)
    })?;
    let bad = |message: String| ApiError::BadRequest { code: "invalid_body", message };
    let max = state.config.max_avatar_bytes;
    let mut bytes = None;
    while let Some(field) = form.next_field().await.map_err(|e| bad(format!("malformed multipart body: {e}")))? {
        if field.name() == Some("file") {
            let data = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    image_error(AvatarError::TooLarge { max_bytes: max })
                } else {
                    bad(e.body_text())
                }
            })?;
            bytes = Some(data);
        }
    }
    let bytes = bytes.ok_or_else(|| ApiError::field("file", "is required"))?;
    let max_pixels = state.config.max_avatar_pixels;
    let checked = bytes.clone();
    tokio::task::spawn_blocking(move || avatar::validate(&checked, max, max_pixels))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(image_error)?;
    let upload_key = new_key("uploads", "bin");
    state.media.put(&upload_key, bytes.to_vec()).await?;
    let payload = ProcessAvatar { user_id: auth.user.id, upload_key: upload_key.clone() };
    match enqueue_processing(&state, key.as_ref(), &payload).await {
        Ok(Ok(accepted)) => {
            state.queue.wake(ProcessAvatar::QUEUE);
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        // Nothing will process this upload: drop it (and answer a concurrent retry's answer).
        Ok(Err(first)) => {
            state.media.delete(&upload_key).await.ok();
            Ok(first)
        }
        Err(e) => {
            state.media.delete(&upload_key).await.ok();
            Err(e)
        }
    }
}

/// The job and the idempotency answer, in one transaction.
async fn enqueue_processing(
    state: &AppState,
    key: Option<&IdempotencyKey>,
    payload: &ProcessAvatar,
) -> ApiResult<Result<JobAccepted, Response>> {
    let mut tx = state.db.begin_write().await?;
    let job_id = jobs::enqueue(&mut *tx, Some(payload.user_id), payload).await?;
    let accepted = JobAccepted { job_id };
    match idempotency::commit(key, tx, &state.db.pool, StatusCode::ACCEPTED, &accepted).await? {
        Some(first) => Ok(Err(first)),
        None => Ok(Ok(accepted)),
    }
}

/// Removes the avatar.
#[utoipa::path(delete, path = "/api/users/me/avatar/", tag = "accounts", security(("bearer" = [])), responses(
    (status = 204, description = "removed")))]
pub async fn delete_avatar(State(state): State<AppState>, auth: AuthUser) -> ApiResult<StatusCode> {
    if let Some(old) = users::set_avatar(&state.db.writer, auth.user.id, None).await? {
        for key in parley_shared::avatar::avatar_files(&old) {
            state.media.delete(&key).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An avatar image (PNG).
#[utoipa::path(get, path = "/media/avatars/{file}", tag = "accounts", params(("file" = String, Path)), responses(
    (status = 200, description = "the image", content_type = "image/png"), (status = 404, body = ErrorEnvelope)))]
pub async fn serve_avatar(State(state): State<AppState>, Path(file): Path<String>) -> ApiResult<Response> {
    let key = format!("avatars/{file}");
    if validate_key(&key).is_err() || !file.ends_with(".png") {
        return Err(ApiError::NotFound);
    }
    let bytes = state.media.get(&key).await?.ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], bytes)
        .into_response())
}
