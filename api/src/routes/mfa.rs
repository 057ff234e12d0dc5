//! TOTP second factors: enrolment and confirmation (with recovery codes), the sign-in step
//! that answers a password sign-in's challenge, disabling, new recovery codes, and an
//! admin's removal of a user's factor.

use crate::audit::RequestMeta;
use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AdminUser, AuthUser, Json};
use crate::mfa::{Code, spend_code};
use crate::state::AppState;
use crate::tokens::{self, TokenPair};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use parley_shared::audit::AuditAction;
use parley_shared::auth::hash_token;
use parley_shared::ids::UserId;
use parley_shared::jobs::{EmailKind, JobSpec, SendEmail};
use parley_shared::store::{mfa, sessions, users};
use parley_shared::usecases;
use parley_shared::usecases::mfa as totp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/mfa", get(mfa_status))
        .route("/api/auth/mfa/totp", post(enrol_totp).delete(disable_totp))
        .route("/api/auth/mfa/totp/confirm", post(confirm_totp))
        .route("/api/auth/mfa/recovery-codes", post(regenerate_recovery_codes))
        .route("/api/auth/mfa/verify", post(verify))
        .route("/api/admin/users/{id}/mfa", delete(admin_remove_factor))
}

/// Where the caller's second factor stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatus {
    /// `disabled`, `pending` (enrolled, not confirmed) or `enabled`.
    #[schema(example = "enabled")]
    pub totp: &'static str,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

/// The caller's second-factor status.
#[utoipa::path(get, path = "/api/auth/mfa/", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, body = MfaStatus), (status = 401, body = ErrorEnvelope)))]
pub async fn mfa_status(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<MfaStatus>> {
    let factor = mfa::get_totp(&state.db.pool, auth.user.id).await?;
    let totp = match factor {
        None => "disabled",
        Some(f) if f.confirmed_at.is_none() => "pending",
        Some(_) => "enabled",
    };
    let recovery_codes_left = mfa::recovery_codes_left(&state.db.pool, auth.user.id).await?;
    Ok(Json(MfaStatus { totp, recovery_codes_left }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The current password; needed when the session signed in more than 10 minutes ago.
    pub password: Option<String>,
}

/// A new, unconfirmed TOTP factor, to add to an authenticator app.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// The base32 secret, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/...` with the issuer and the account's email.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code, in a `data:image/svg+xml;base64,` URI.
    pub qr_code: String,
}

/// Starts TOTP enrolment. Needs a verified email and a sign-in within 10 minutes (or the
/// current password). Starting again replaces an unconfirmed factor.
#[utoipa::path(post, path = "/api/auth/mfa/totp/", tag = "accounts", request_body(content = Option<EnrolRequest>), security(("bearer" = [])), responses(
    (status = 201, body = TotpEnrolment),
    (status = 400, description = "a body that is not JSON", body = ErrorEnvelope),
    (status = 401, body = ErrorEnvelope),
    (status = 409, description = "email_not_verified, or mfa_already_enabled", body = ErrorEnvelope),
    (status = 422, description = "reauthentication_required (the session is older than 10 minutes; send the password), or a wrong password", body = ErrorEnvelope)))]
pub async fn enrol_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<TotpEnrolment>)> {
    let req: EnrolRequest = optional_body(body)?;
    let user = &auth.user;
    if !user.email_verified {
        return Err(ApiError::StateConflict {
            code: "email_not_verified",
            message: "verify the account's email address before turning on two-factor authentication".into(),
        });
    }
    match req.password {
        Some(password) => {
            if !state.hasher.verify(&password, &user.password_hash).await?.valid {
                return Err(ApiError::field("password", "is not correct"));
            }
        }
        None => {
            if !auth.signed_in_recently(&state).await? {
                return Err(ApiError::Unprocessable {
                    code: "reauthentication_required",
                    message: "this session signed in more than 10 minutes ago: send the current password".into(),
                });
            }
        }
    }
    let secret = totp::new_secret();
    let enrolment = totp::enrolment(&secret, &state.config.mfa_issuer, &user.email)?;
    let mut tx = state.db.begin_write().await?;
    if !mfa::put_pending_totp(&mut *tx, user.id, &totp::seal(&state.keys, &secret)?).await? {
        return Err(already_enabled());
    }
    meta.event(AuditAction::MfaEnroll).by(user.id).record(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, "TOTP enrolment started");
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrolment {
            secret: enrolment.secret,
            otpauth_uri: enrolment.otpauth_uri,
            qr_code: enrolment.qr_code,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// The six digits the authenticator app shows now.
    pub code: String,
}

/// Recovery codes, shown this once: each signs in once in place of a TOTP code.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    #[schema(example = json!(["k7d2m-x9qpt"]))]
    pub recovery_codes: Vec<String>,
}

/// Confirms the pending factor with a first code: from now on, sign-ins need a second
/// factor. Answers ten recovery codes, ends the account's other sessions, and emails the user.
#[utoipa::path(post, path = "/api/auth/mfa/totp/confirm/", tag = "accounts", request_body = CodeRequest, security(("bearer" = [])), responses(
    (status = 200, body = RecoveryCodes),
    (status = 401, body = ErrorEnvelope),
    (status = 409, description = "mfa_not_enrolled, or mfa_already_enabled", body = ErrorEnvelope),
    (status = 422, description = "the code is not valid", body = ErrorEnvelope),
    (status = 429, description = "too many wrong codes; see Retry-After", body = ErrorEnvelope)))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Json(req): Json<CodeRequest>,
) -> ApiResult<Json<RecoveryCodes>> {
    let user = auth.user.id;
    let factor = mfa::get_totp(&state.db.pool, user).await?.ok_or_else(|| ApiError::StateConflict {
        code: "mfa_not_enrolled",
        message: "start with POST /api/auth/mfa/totp/".into(),
    })?;
    if factor.confirmed_at.is_some() {
        return Err(already_enabled());
    }
    crate::mfa::check_failure_limit(&state, user).await?;
    let secret = totp::unseal(&state.keys, &factor.secret)?;
    let Some(step) = totp::check_code(&secret, &req.code, totp::now_secs())? else {
        let details = serde_json::json!({"method": "totp", "purpose": "confirm", "reason": "wrong_code"});
        meta.event(AuditAction::MfaVerify).target(user).failure().details(details).record(&state.db.writer).await?;
        return Err(wrong_code());
    };
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_code_hash(&state.keys, user, c)).collect();
    let mut tx = state.db.begin_write().await?;
    if !mfa::confirm_totp(&mut *tx, user, step).await? {
        return Err(already_enabled());
    }
    mfa::replace_recovery_codes(&mut tx, user, &hashes).await?;
    let ended = sessions::revoke_all(&mut *tx, user, Some(auth.session), "mfa_enabled").await?;
    usecases::email::enqueue(&mut *tx, user, EmailKind::MfaEnabled).await?;
    let details = serde_json::json!({"sessions_ended": ended});
    meta.event(AuditAction::MfaConfirm).by(user).details(details).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(SendEmail::QUEUE);
    tracing::info!(user.id = %user, "TOTP factor confirmed");
    Ok(Json(RecoveryCodes { recovery_codes: codes }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DisableRequest {
    pub password: String,
    /// A current TOTP code.
    pub code: String,
}

/// Turns the factor off (the recovery codes go with it). Needs the password and a current
/// code; ends the account's other sessions and emails the user.
#[utoipa::path(delete, path = "/api/auth/mfa/totp/", tag = "accounts", request_body = DisableRequest, security(("bearer" = [])), responses(
    (status = 204, description = "turned off"),
    (status = 401, body = ErrorEnvelope),
    (status = 409, description = "mfa_not_enabled", body = ErrorEnvelope),
    (status = 422, description = "a wrong password or code", body = ErrorEnvelope),
    (status = 429, description = "too many wrong codes; see Retry-After", body = ErrorEnvelope)))]
pub async fn disable_totp(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Json(req): Json<DisableRequest>,
) -> ApiResult<StatusCode> {
    let user = auth.user.id;
    require_enabled(&state, user).await?;
    if !state.hasher.verify(&req.password, &auth.user.password_hash).await?.valid {
        let details = serde_json::json!({"reason": "wrong_password"});
        meta.event(AuditAction::MfaDisable).by(user).failure().details(details).record(&state.db.writer).await?;
        return Err(ApiError::field("password", "is not correct"));
    }
    if !spend_code(&state, &meta, user, Code::Totp(&req.code), "disable").await? {
        return Err(wrong_code());
    }
    let mut tx = state.db.begin_write().await?;
    if !mfa::delete_totp(&mut tx, user).await? {
        return Err(not_enabled());
    }
    let ended = sessions::revoke_all(&mut *tx, user, Some(auth.session), "mfa_disabled").await?;
    usecases::email::enqueue(&mut *tx, user, EmailKind::MfaDisabled).await?;
    let details = serde_json::json!({"sessions_ended": ended});
    meta.event(AuditAction::MfaDisable).by(user).details(details).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(SendEmail::QUEUE);
    tracing::info!(user.id = %user, "TOTP factor turned off");
    Ok(StatusCode::NO_CONTENT)
}

/// New recovery codes for a current TOTP code; the old ones stop working. Emails the user.
#[utoipa::path(post, path = "/api/auth/mfa/recovery-codes/", tag = "accounts", request_body = CodeRequest, security(("bearer" = [])), responses(
    (status = 200, body = RecoveryCodes),
    (status = 401, body = ErrorEnvelope),
    (status = 409, description = "mfa_not_enabled", body = ErrorEnvelope),
    (status = 422, description = "the code is not valid", body = ErrorEnvelope),
    (status = 429, description = "too many wrong codes; see Retry-After", body = ErrorEnvelope)))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Json(req): Json<CodeRequest>,
) -> ApiResult<Json<RecoveryCodes>> {
    let user = auth.user.id;
    require_enabled(&state, user).await?;
    if !spend_code(&state, &meta, user, Code::Totp(&req.code), "regenerate_recovery_codes").await? {
        return Err(wrong_code());
    }
    let codes = totp::new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| totp::recovery_code_hash(&state.keys, user, c)).collect();
    let mut tx = state.db.begin_write().await?;
    mfa::replace_recovery_codes(&mut tx, user, &hashes).await?;
    usecases::email::enqueue(&mut *tx, user, EmailKind::RecoveryCodesRegenerated).await?;
    meta.event(AuditAction::RecoveryCodesRegenerate).by(user).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(SendEmail::QUEUE);
    Ok(Json(RecoveryCodes { recovery_codes: codes }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// From the sign-in's `{mfa_required, mfa_token, expires_in}` answer.
    pub mfa_token: String,
    /// A TOTP code; or else
    pub code: Option<String>,
    /// a recovery code (each works once).
    pub recovery_code: Option<String>,
}

/// Completes a password sign-in with a second factor: answers the session's token pair.
/// A TOTP code is accepted once; a recovery code is spent. Wrong codes are limited per account.
#[utoipa::path(post, path = "/api/auth/mfa/verify/", tag = "accounts", request_body = VerifyRequest, responses(
    (status = 200, body = TokenPair),
    (status = 400, description = "invalid_mfa_token (unknown, expired or used), or invalid_code (wrong, or already used)", body = ErrorEnvelope),
    (status = 422, description = "neither or both of code and recovery_code", body = ErrorEnvelope),
    (status = 429, description = "too many wrong codes on this account; see Retry-After", body = ErrorEnvelope)))]
pub async fn verify(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(req): Json<VerifyRequest>,
) -> ApiResult<Json<TokenPair>> {
    let code = match (req.code.as_deref(), req.recovery_code.as_deref()) {
        (Some(code), None) => Code::Totp(code),
        (None, Some(code)) => Code::Recovery(code),
        _ => {
            let mut errors = FieldErrors::default();
            errors.add("code", "send exactly one of code and recovery_code");
            return Err(errors.into());
        }
    };
    let token_hash = hash_token(req.mfa_token.trim());
    let (user, first) = mfa::live_challenge(&state.db.pool, &token_hash).await?.ok_or_else(invalid_mfa_token)?;
    let account = users::by_id(&state.db.pool, user).await?.filter(|u| u.is_active).ok_or_else(invalid_mfa_token)?;
    if !spend_code(&state, &meta, user, code, "sign_in").await? {
        return Err(ApiError::BadRequest { code: "invalid_code", message: "the code is not valid".into() });
    }
    let amr = [first.as_str(), sessions::AMR_OTP];
    let mut tx = state.db.begin_write().await?;
    if !mfa::consume_challenge(&mut *tx, &token_hash).await? {
        return Err(invalid_mfa_token());
    }
    let (session, refresh) =
        tokens::insert_session(&mut tx, &state, user, &meta.user_agent, &meta.ip.to_string(), &amr).await?;
    users::record_login(&mut *tx, user).await?;
    let details = serde_json::json!({"session_id": session, "second_factor": match code {
        Code::Totp(_) => "totp",
        Code::Recovery(_) => "recovery_code",
    }});
    meta.event(AuditAction::Login).by(account.id).details(details).record(&mut *tx).await?;
    if matches!(code, Code::Recovery(_)) {
        usecases::email::enqueue(&mut *tx, user, EmailKind::RecoveryCodeUsed).await?;
    }
    tx.commit().await?;
    tracing::info!(user.id = %user, session.id = %session, "signed in with a second factor");
    Ok(Json(tokens::issue_pair(&state, user, session, refresh, &amr)?))
}

/// Removes a user's second factor (they lost their device and their recovery codes): every
/// session of theirs ends, and they are emailed.
#[utoipa::path(delete, path = "/api/admin/users/{id}/mfa/", tag = "admin", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "removed"),
    (status = 401, body = ErrorEnvelope),
    (status = 403, body = ErrorEnvelope),
    (status = 404, body = ErrorEnvelope),
    (status = 409, description = "mfa_not_enabled: the user has no factor", body = ErrorEnvelope)))]
pub async fn admin_remove_factor(
    State(state): State<AppState>,
    admin: AdminUser,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: UserId = id.parse().map_err(|_| ApiError::NotFound)?;
    let user = users::by_id(&state.db.pool, id).await?.ok_or(ApiError::NotFound)?;
    let mut tx = state.db.begin_write().await?;
    if !mfa::delete_totp(&mut tx, user.id).await? {
        return Err(not_enabled());
    }
    let ended = sessions::revoke_all(&mut *tx, user.id, None, "mfa_removed_by_admin").await?;
    usecases::email::enqueue(&mut *tx, user.id, EmailKind::MfaRemovedByAdmin).await?;
    let details = serde_json::json!({"sessions_ended": ended});
    meta.event(AuditAction::AdminMfaRemove)
        .actor(admin.0.user.id)
        .target(user.id)
        .details(details)
        .record(&mut *tx)
        .await?;
    tx.commit().await?;
    state.queue.wake(SendEmail::QUEUE);
    tracing::info!(user.id = %user.id, "second factor removed by an admin");
    Ok(StatusCode::NO_CONTENT)
}

async fn require_enabled(state: &AppState, user: UserId) -> ApiResult<()> {
    match mfa::get_totp(&state.db.pool, user).await? {
        Some(f) if f.confirmed_at.is_some() => Ok(()),
        _ => Err(not_enabled()),
    }
}

/// A JSON body that may be absent (or empty).
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<T> {
    let body = body.map_err(|r| crate::extract::rejection("invalid_body", r.status(), r.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // `null` is no body too.
    serde_json::from_slice::<Option<T>>(&body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::BadRequest { code: "invalid_body", message: format!("the body is not valid: {e}") })
}

fn already_enabled() -> ApiError {
    ApiError::StateConflict { code: "mfa_already_enabled", message: "two-factor authentication is already on".into() }
}

fn not_enabled() -> ApiError {
    ApiError::StateConflict { code: "mfa_not_enabled", message: "two-factor authentication is not on".into() }
}

fn wrong_code() -> ApiError {
    ApiError::field("code", "is not valid")
}

fn invalid_mfa_token() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_mfa_token",
        message: "the mfa_token is invalid, expired or already used: sign in again".into(),
    }
}
