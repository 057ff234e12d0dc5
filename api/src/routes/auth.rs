//! Registration, sign-in, token refresh, sign-out and password change.

use crate::audit::RequestMeta;
use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AuthUser, ClientIp, Json};
use crate::mfa::LoginAnswer;
use crate::state::AppState;
use crate::tokens::{self, TokenPair};
use crate::views::UserProfile;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parley_shared::StoreError;
use parley_shared::audit::AuditAction;
use parley_shared::config::RegistrationMode;
use parley_shared::domain::{DisplayName, Email, Password, Username};
use parley_shared::jobs::{EmailKind, JobSpec};
use parley_shared::store::{sessions, users};
use parley_shared::usecases;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/token/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password/change", post(change_password))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// An address with one `@` and a dotted domain; surrounding whitespace is trimmed.
    #[schema(
        max_length = 254,
        pattern = r"^\s*[^\s@<>\u0000-\u001F\u007F-\u009F]{1,64}@(?:[^\W_]|-)+(?:\.(?:[^\W_]|-)+)+\s*$"
    )]
    pub email: String,
    /// 8 to 128 characters, not only whitespace, and not a commonly used password.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[\s\S]*\S[\s\S]*$")]
    pub password: String,
    /// 3 to 30 letters, digits, `_`, `.` or `-`; empty or `null` for none.
    #[schema(max_length = 30, pattern = r"^([A-Za-z0-9_.-]{3,30})?$")]
    pub username: Option<String>,
    /// At most 100 characters on one line.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub display_name: Option<String>,
}

/// A new account, signed in.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    pub user: UserProfile,
    #[serde(flatten)]
    pub tokens: TokenPair,
}

fn user_agent(headers: &HeaderMap) -> &str {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What an enumeration-safe registration answers to every valid request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationAccepted {
    /// Always `check_your_email`.
    #[schema(example = "check_your_email")]
    pub status: &'static str,
    pub message: &'static str,
}

/// Creates an account. In the default `open` mode it answers 201 with the account signed in
/// (409 for a taken email or username). With `PARLEY_REGISTRATION_MODE=enumeration_safe`
/// every valid request answers 202 "check your email", in the same time, whether the address
/// is new or taken: a new account gets its verification email and no tokens; the owner of a
/// taken address gets a notice instead.
#[utoipa::path(post, path = "/api/auth/register/", tag = "accounts", request_body = RegisterRequest, responses(
    (status = 201, description = "open mode: the account, signed in", body = AuthResponse),
    (status = 202, description = "enumeration_safe mode: check your email", body = RegistrationAccepted),
    (status = 409, description = "email or username taken (username only, in enumeration_safe mode)", body = ErrorEnvelope),
    (status = 422, description = "invalid fields", body = ErrorEnvelope),
    (status = 429, description = "too many attempts from this address; see Retry-After", body = ErrorEnvelope)))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::default();
    let email = errors.check("email", Email::parse(&req.email));
    let password = errors.check("password", Password::parse(&req.password));
    let username =
        req.username.as_deref().filter(|u| !u.is_empty()).map(|u| errors.check("username", Username::parse(u)));
    let display_name = req.display_name.as_deref().map(|d| errors.check("display_name", DisplayName::parse(d)));
    let (Some(email), Some(password)) = (email, password) else { return Err(errors.into()) };
    errors.finish()?;
    let (username, display_name) = (username.flatten(), display_name.flatten());

    // Hashing is costly: sign-ups share the address's sign-in quota.
    state.login_limiter.check_ip(ip)?;
    // Hashed in both modes and for a taken address too, so the answer takes as long.
    let hash = state.hasher.hash(password.expose()).await?;
    let safe = state.config.registration_mode == RegistrationMode::EnumerationSafe;
    // The account and its verification email commit together: no account without its
    // email job, no email for an account that was rolled back.
    let mut tx = state.db.begin_write().await?;
    let created = users::create(
        &mut *tx,
        users::NewUser {
            email: &email,
            username: username.as_ref(),
            display_name: display_name.as_ref(),
            password_hash: &hash,
            is_admin: false,
        },
    )
    .await;
    let user = match created {
        Ok(user) => user,
        Err(StoreError::Conflict { field: "email" }) if safe => {
            tx.rollback().await?;
            notify_taken_address(&state, &email).await?;
            return Ok(check_your_email());
        }
        Err(e) => return Err(e.into()),
    };
    usecases::email::enqueue(&mut *tx, user.id, EmailKind::VerifyEmail).await?;
    let meta = RequestMeta::new(ip, user_agent(&headers));
    meta.event(AuditAction::UserSignup).by(user.id).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    tracing::info!(user.id = %user.id, email = %email.masked(), "account registered");
    if safe {
        return Ok(check_your_email());
    }
    let (_, tokens) = tokens::start_session(&state, user.id, user_agent(&headers), &ip.to_string()).await?;
    let user = UserProfile::new(&user, &state.config);
    Ok((StatusCode::CREATED, Json(AuthResponse { user, tokens })).into_response())
}

fn check_your_email() -> Response {
    let body = RegistrationAccepted {
        status: "check_your_email",
        message: "if the address can be used, an email is on its way: follow its link to go on",
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Tells the owner of `email` that someone tried to register with it.
async fn notify_taken_address(state: &AppState, email: &Email) -> ApiResult<()> {
    let mut tx = state.db.begin_write().await?;
    let Some(owner) = users::by_email(&mut *tx, email).await? else { return Ok(()) };
    usecases::email::enqueue(&mut *tx, owner.id, EmailKind::RegistrationAttempt).await?;
    tx.commit().await?;
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    tracing::info!(user.id = %owner.id, email = %email.masked(), "registration attempt with a taken address");
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/api/auth/login/", tag = "accounts", request_body = LoginRequest, responses(
    (status = 200, description = "a token pair, or with a second factor on `{mfa_required, mfa_token, expires_in}`", body = LoginAnswer),
    (status = 401, description = "invalid_credentials, for any wrong pair", body = ErrorEnvelope),
    (status = 429, description = "too many attempts; see Retry-After", body = ErrorEnvelope)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginAnswer>> {
    state.login_limiter.check(ip, &req.email.trim().to_lowercase())?;
    let meta = RequestMeta::new(ip, user_agent(&headers));
    let user = match Email::parse(&req.email) {
        Ok(email) => users::by_email(&state.db.pool, &email).await?.filter(|u| u.is_active),
        Err(_) => None,
    };
    let Some(user) = user else {
        // Same work as a wrong password, so the answer time does not reveal accounts.
        state.hasher.verify_dummy(&req.password).await;
        let details = serde_json::json!({"reason": "unknown_account"});
        meta.event(AuditAction::Login).failure().details(details).record(&state.db.writer).await?;
        return Err(ApiError::InvalidCredentials);
    };
    let verification = state.hasher.verify(&req.password, &user.password_hash).await?;
    if !verification.valid {
        tracing::info!(user.id = %user.id, "sign-in with a wrong password");
        let details = serde_json::json!({"reason": "wrong_password"});
        meta.event(AuditAction::Login).target(user.id).failure().details(details).record(&state.db.writer).await?;
        return Err(ApiError::InvalidCredentials);
    }
    if verification.needs_rehash {
        let hash = state.hasher.hash(&req.password).await?;
        users::set_password_hash(&state.db.writer, user.id, &hash).await?;
        tracing::info!(user.id = %user.id, "password hash upgraded to current parameters");
    }
    if let Some(challenge) = crate::mfa::challenge_if_enrolled(&state, user.id, sessions::AMR_PASSWORD).await? {
        let details = serde_json::json!({"second_factor": "required"});
        meta.event(AuditAction::Login).by(user.id).details(details).record(&state.db.writer).await?;
        return Ok(Json(LoginAnswer::MfaRequired(challenge)));
    }
    users::record_login(&state.db.writer, user.id).await?;
    let (session, tokens) = tokens::start_session(&state, user.id, user_agent(&headers), &ip.to_string()).await?;
    let details = serde_json::json!({"session_id": session});
    meta.event(AuditAction::Login).by(user.id).details(details).record(&state.db.writer).await?;
    tracing::info!(user.id = %user.id, session.id = %session, "signed in");
    Ok(Json(LoginAnswer::Tokens(tokens)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Exchanges a refresh token for a new pair (the old refresh token stops working).
#[utoipa::path(post, path = "/api/auth/token/refresh/", tag = "accounts", request_body = RefreshRequest, responses(
    (status = 200, body = TokenPair),
    (status = 401, description = "unknown, expired or reused token", body = ErrorEnvelope)))]
pub async fn refresh(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(tokens::refresh(&state, req.refresh_token.trim(), &meta).await?))
}

/// Which sessions a logout ends.
#[derive(Debug, Default, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogoutScope {
    /// This session (the default).
    #[default]
    Local,
    /// Every other session of the user.
    Others,
    /// Every session of the user.
    Global,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// Accepted for clients that send it; the session is the access token's.
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: LogoutScope,
}

/// Signs out. The access tokens of ended sessions stop working at once.
#[utoipa::path(post, path = "/api/auth/logout/", tag = "accounts", request_body(content = Option<LogoutRequest>), security(("bearer" = [])), responses(
    (status = 204, description = "signed out"), (status = 401, body = ErrorEnvelope)))]
pub async fn logout(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<StatusCode> {
    let body = body.map_err(|r| crate::extract::rejection("invalid_body", r.status(), r.body_text()))?;
    // No body, or `null`, is the default request.
    let req: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        serde_json::from_slice::<Option<LogoutRequest>>(&body)
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_body",
                message: format!("the body is not a valid logout request: {e}"),
            })?
            .unwrap_or_default()
    };
    let mut tx = state.db.begin_write().await?;
    let scope = match req.scope {
        LogoutScope::Local => {
            sessions::revoke(&mut *tx, auth.session, "logout").await?;
            "local"
        }
        LogoutScope::Others => {
            sessions::revoke_all(&mut *tx, auth.user.id, Some(auth.session), "logout_others").await?;
            "others"
        }
        LogoutScope::Global => {
            sessions::revoke_all(&mut *tx, auth.user.id, None, "logout_global").await?;
            "global"
        }
    };
    let details = serde_json::json!({"session_id": auth.session, "scope": scope});
    meta.event(AuditAction::Logout).by(auth.user.id).details(details).record(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    /// 8 to 128 characters, not only whitespace, and not a commonly used password.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[\s\S]*\S[\s\S]*$")]
    pub new_password: String,
}

/// Changes the password and ends the user's other sessions.
#[utoipa::path(post, path = "/api/auth/password/change/", tag = "accounts", request_body = ChangePasswordRequest, security(("bearer" = [])), responses(
    (status = 204, description = "changed"),
    (status = 401, body = ErrorEnvelope),
    (status = 422, description = "wrong current password or a weak new one", body = ErrorEnvelope)))]
pub async fn change_password(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Json(req): Json<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    let mut errors = FieldErrors::default();
    let new = errors.check("new_password", Password::parse(&req.new_password));
    if !state.hasher.verify(&req.current_password, &auth.user.password_hash).await?.valid {
        errors.add("current_password", "is not correct");
        let details = serde_json::json!({"reason": "wrong_password"});
        meta.event(AuditAction::PasswordChange)
            .by(auth.user.id)
            .failure()
            .details(details)
            .record(&state.db.writer)
            .await?;
    }
    let Some(new) = new else { return Err(errors.into()) };
    errors.finish()?;
    let hash = state.hasher.hash(new.expose()).await?;
    let mut tx = state.db.begin_write().await?;
    users::set_password_hash(&mut *tx, auth.user.id, &hash).await?;
    sessions::revoke_all(&mut *tx, auth.user.id, Some(auth.session), "password_change").await?;
    usecases::email::enqueue(&mut *tx, auth.user.id, EmailKind::PasswordChanged).await?;
    meta.event(AuditAction::PasswordChange).by(auth.user.id).record(&mut *tx).await?;
    tx.commit().await?;
    state.queue.wake(parley_shared::jobs::SendEmail::QUEUE);
    tracing::info!(user.id = %auth.user.id, "password changed");
    Ok(StatusCode::NO_CONTENT)
}
