//! Email verification and password reset. Handlers only write and enqueue; the emails go out
//! from `send_email` jobs.

use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AuthUser, ClientIp, Json};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;
use crate::views::JobAccepted;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parley_shared::domain::{Email, Password};
use parley_shared::jobs::JobSpec;
use parley_shared::jobs::{EmailKind, JobKind};
use parley_shared::store::{email_tokens, jobs, sessions, users};
use parley_shared::time::now_ms;
use parley_shared::usecases;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// At most one verification or reset email per user per this many seconds.
const EMAIL_INTERVAL_SECS: i64 = 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/send-verification", post(send_verification))
        .route("/api/auth/verify-email", post(verify_email))
        .route("/api/auth/password/reset", post(request_password_reset))
        .route("/api/auth/password/reset/confirm", post(confirm_password_reset))
}

/// Seconds to wait before `EmailKind` may be sent to `user` again, if any.
async fn email_wait(state: &AppState, user: parley_shared::ids::UserId, kind: &str) -> ApiResult<Option<u64>> {
    let last = jobs::last_created(&state.db.pool, user, JobKind::SendEmail, kind).await?;
    let elapsed = last.map(|t| (now_ms() - t) / 1000);
    Ok(elapsed.filter(|e| *e < EMAIL_INTERVAL_SECS).map(|e| (EMAIL_INTERVAL_SECS - e) as u64))
}

/// Sends (again) the verification email. `Idempotency-Key` makes a retried request return
/// the first answer.
#[utoipa::path(post, path = "/api/auth/send-verification/", tag = "accounts", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header)), responses(
    (status = 202, body = JobAccepted),
    (status = 409, description = "already verified", body = ErrorEnvelope),
    (status = 429, description = "one per minute; see Retry-After", body = ErrorEnvelope)))]
pub async fn send_verification(
    State(state): State<AppState>,
    auth: AuthUser,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers, format!("user:{}:send-verification", auth.user.id))?;
    if let Some(key) = &key
        && let Some(first) = key.replay(&state.db.pool).await?
    {
        return Ok(first);
    }
    if auth.user.email_verified {
        return Err(ApiError::StateConflict {
            code: "already_verified",
            message: "the email address is already verified".into(),
        });
    }
    if let Some(wait) = email_wait(&state, auth.user.id, "verify_email").await? {
        return Err(ApiError::RateLimited { retry_after_secs: wait });
    }
    let mut tx = state.db.begin_write().await?;
    let job_id = usecases::email::enqueue(&mut *tx, auth.user.id, EmailKind::VerifyEmail).await?;
    let body = JobAccepted { job_id };
    if let Some(first) = idempotency::commit(key.as_ref(), tx, &state.db.pool, StatusCode::ACCEPTED, &body).await? {
        return Ok(first);
    }
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub token: String,
}

/// Confirms the email address with the token from the verification email.
#[utoipa::path(post, path = "/api/auth/verify-email/", tag = "accounts", request_body = TokenRequest, responses(
    (status = 200, description = "verified"),
    (status = 400, description = "invalid, used or expired token", body = ErrorEnvelope)))]
pub async fn verify_email(
    State(state): State<AppState>,
    meta: crate::audit::RequestMeta,
    Json(req): Json<TokenRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut tx = state.db.begin_write().await?;
    let user = email_tokens::consume(&mut *tx, req.token.trim(), email_tokens::VERIFY_EMAIL)
        .await?
        .ok_or_else(invalid_token)?;
    users::mark_email_verified(&mut *tx, user).await?;
    meta.event(parley_shared::audit::AuditAction::EmailVerify).by(user).record(&mut *tx).await?;
    tx.commit().await?;
    Ok(Json(serde_json::json!({"email_verified": true})))
}

fn invalid_token() -> ApiError {
    ApiError::BadRequest { code: "invalid_token", message: "the token is invalid, already used or expired".into() }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    pub email: String,
}

/// The same answer whether or not the account exists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetAccepted {
    pub detail: &'static str,
}

const RESET_DETAIL: &str = "If an account exists for this address, a reset link is on its way.";

/// Asks for a password reset link. Answers 202 with the same body, in about the same time,
/// for known and unknown addresses and while rate limited.
#[utoipa::path(post, path = "/api/auth/password/reset/", tag = "accounts", request_body = ResetRequest, responses(
    (status = 202, body = ResetAccepted)))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    Json(req): Json<ResetRequest>,
) -> ApiResult<(StatusCode, Json<ResetAccepted>)> {
    // Every answer waits until the same moment after the request came in, so its timing
    // does not tell an unknown address from a known one (which does a few more writes).
    let answer_at = tokio::time::Instant::now() + RESET_ANSWER_AFTER;
    let result = reset_request(&state, &req.email).await;
    tokio::time::sleep_until(answer_at).await;
    result.map(|()| (StatusCode::ACCEPTED, Json(ResetAccepted { detail: RESET_DETAIL })))
}

/// How long after the request every password reset answer goes out.
pub const RESET_ANSWER_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

async fn reset_request(state: &AppState, email: &str) -> ApiResult<()> {
    let Ok(email) = Email::parse(email) else { return Ok(()) };
    let Some(user) = users::by_email(&state.db.pool, &email).await?.filter(|u| u.is_active) else {
        return Ok(());
    };
    if email_wait(state, user.id, "password_reset").await?.is_some() {
        tracing::info!(user.id = %user.id, "password reset throttled");
        return Ok(());
    }
    usecases::email::enqueue(&state.db.writer, user.id, EmailKind::PasswordReset).await?;
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetConfirm {
    pub token: String,
    /// 8 to 128 characters, not only whitespace, and not a commonly used password.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[\s\S]*\S[\s\S]*$")]
    pub new_password: String,
}

/// Sets a new password with the token from the reset email; ends every session.
#[utoipa::path(post, path = "/api/auth/password/reset/confirm/", tag = "accounts", request_body = ResetConfirm, responses(
    (status = 204, description = "password set"),
    (status = 400, description = "invalid, used or expired token", body = ErrorEnvelope),
    (status = 422, description = "weak password", body = ErrorEnvelope)))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    meta: crate::audit::RequestMeta,
    Json(req): Json<ResetConfirm>,
) -> ApiResult<StatusCode> {
    let mut errors = FieldErrors::default();
    let Some(password) = errors.check("new_password", Password::parse(&req.new_password)) else {
        return Err(errors.into());
    };
    // Hashing is costly: only for a client within its quota and a token that is valid now.
    state.login_limiter.check_ip(ip)?;
    if email_tokens::peek(&state.db.pool, req.token.trim(), email_tokens::PASSWORD_RESET).await?.is_none() {
        return Err(invalid_token());
    }
    let hash = state.hasher.hash(password.expose()).await?;
    let mut tx = state.db.begin_write().await?;
    let user = email_tokens::consume(&mut *tx, req.token.trim(), email_tokens::PASSWORD_RESET)
        .await?
        .ok_or_else(invalid_token)?;
    users::set_password_hash(&mut *tx, user, &hash).await?;
    sessions::revoke_all(&mut *tx, user, None, "password_reset").await?;
    usecases::email::enqueue(&mut *tx, user, EmailKind::PasswordChanged).await?;
    meta.event(parley_shared::audit::AuditAction::PasswordReset).by(user).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    tracing::info!(user.id = %user, "password reset");
    Ok(StatusCode::NO_CONTENT)
}
