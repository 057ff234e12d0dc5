//! Extractors: JSON bodies with enveloped rejections, the authenticated user, and the
//! client's address.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use parley_shared::ids::SessionId;
use parley_shared::store::{sessions, users::User};
use parley_shared::time::now_ms;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// `axum::Json`, but a bad body gets the error envelope with a message that says what to fix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType {
                message: "expected a body with Content-Type: application/json".to_owned(),
            });
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| rejection("invalid_body", r.status(), r.body_text()))?;
        // Every request body is an object: serde would also take a struct from an array.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
            return Err(ApiError::Unprocessable {
                code: "invalid_body",
                message: "the body must be a JSON object".to_owned(),
            });
        }
        axum::Json::<T>::from_bytes(&bytes).map(|axum::Json(value)| Json(value)).map_err(json_rejection)
    }
}

/// `application/json`, or any `+json` type, as axum's own extractor accepts.
fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match &r {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType { message: "expected a body with Content-Type: application/json".to_owned() }
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest {
            code: "invalid_json",
            message: format!("the body is not valid JSON: {}", r.body_text()),
        },
        JsonRejection::JsonDataError(_) => ApiError::Unprocessable { code: "invalid_body", message: r.body_text() },
        _ => rejection("invalid_body", r.status(), r.body_text()),
    }
}

/// `axum::extract::Query`, with a bad query string answered in the error envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::BadRequest { code: "invalid_query", message: rejection.body_text() }),
        }
    }
}

/// The error for an extractor's rejection (a body, multipart or query the handler could
/// not take), answered with the status the rejection carries.
pub fn rejection(code: &'static str, status: StatusCode, message: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { code: "payload_too_large", message: "the request body is too large".into() }
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType { message },
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable { code, message },
        _ => ApiError::BadRequest { code, message },
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// How stale a session's `last_used_at` may get before a request moves it.
const LAST_USE_RESOLUTION_MS: i64 = 60_000;

/// A signed-in user on a live session. Any problem with the token is a 401; the reason is
/// logged at debug only.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session: SessionId,
}

impl AuthUser {
    /// Whether this session signed in within the last 10 minutes: what stands in for the
    /// password where a request may leave it out (enrolling a factor, deleting an account
    /// that has none).
    pub async fn signed_in_recently(&self, state: &AppState) -> Result<bool, ApiError> {
        let session = sessions::get(&state.db.pool, self.session).await?.ok_or(ApiError::Unauthorized)?;
        Ok(now_ms() - session.created_at.millis() <= parley_shared::usecases::mfa::RECENT_SIGN_IN_SECS * 1000)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return cookie_user(parts, state).await;
        };
        let header = header.to_str().map_err(|_| ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        let claims = state.jwt.verify(token).map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            ApiError::Unauthorized
        })?;
        let active = sessions::active_user(&state.db.pool, claims.sid, claims.sub).await?.ok_or_else(|| {
            tracing::debug!(session.id = %claims.sid, "access token of an ended session");
            ApiError::Unauthorized
        })?;
        // The session list shows when each session was last used, to the minute.
        if now_ms() - active.session_last_used_at > LAST_USE_RESOLUTION_MS {
            let (writer, sid) = (state.db.writer.clone(), claims.sid);
            tokio::spawn(async move {
                if let Err(e) = sessions::touch_if_stale(&writer, sid, LAST_USE_RESOLUTION_MS).await {
                    tracing::debug!(error = %e, "recording a session's last use");
                }
            });
        }
        let user = active.user;
        tracing::Span::current().record("user.id", tracing::field::display(user.id));
        let auth = AuthUser { user, session: claims.sid };
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

/// A browser signed in with the session cookie (no `Authorization` header). A
/// state-changing request must also repeat the CSRF token in `X-CSRF-Token`.
async fn cookie_user(parts: &mut Parts, state: &AppState) -> Result<AuthUser, ApiError> {
    let value = crate::web::cookies::cookie(&parts.headers, crate::web::cookies::SESSION_COOKIE)
        .ok_or(ApiError::Unauthorized)?;
    let (session, user) = crate::web::cookies::parse_session(state, value).ok_or_else(|| {
        tracing::debug!("session cookie with a wrong MAC");
        ApiError::Unauthorized
    })?;
    crate::web::cookies::check_fetch_csrf(&parts.method, &parts.headers)?;
    let user = crate::web::cookies::live_session(state, session, user).await?.ok_or_else(|| {
        tracing::debug!(session.id = %session, "session cookie of an ended session");
        ApiError::Unauthorized
    })?;
    tracing::Span::current().record("user.id", tracing::field::display(user.id));
    let auth = AuthUser { user, session };
    parts.extensions.insert(auth.clone());
    Ok(auth)
}

/// A signed-in admin; other users get 403.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if !user.user.is_admin {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminUser(user))
    }
}

/// The client's address: the socket peer, or, when the peer is a configured trusted proxy,
/// the last untrusted hop in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let trusted = &state.config.trusted_proxies;
        if !trusted.contains(&peer) {
            return Ok(ClientIp(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        let client = forwarded.into_iter().rev().find(|ip| !trusted.contains(ip)).unwrap_or(peer);
        Ok(ClientIp(client))
    }
}
