//! The browser's session cookie and its CSRF token.
//!
//! The session cookie names a server-side session (the same records as the API's bearer
//! tokens) and carries a MAC, so it cannot be forged; ending the session (sign-out,
//! deactivation, "end" on the sessions page) ends the cookie at once. The CSRF token is a
//! random value in its own cookie that every state-changing form or fetch repeats (double
//! submit); a request that only carries cookies cannot be made to repeat it from another site.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use parley_shared::auth::{hmac, random_token};
use parley_shared::ids::{SessionId, UserId};

pub const SESSION_COOKIE: &str = "parley_session";
pub const CSRF_COOKIE: &str = "parley_csrf";
/// The header a fetch repeats the CSRF token in; forms use the field `csrf`.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn mac(state: &AppState, session: SessionId, user: UserId) -> String {
    let key = hmac(&state.keys.refresh, b"parley web session cookie v1");
    let tag = hmac(&key, format!("{session}.{user}").as_bytes());
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie value for a session.
pub fn session_value(state: &AppState, session: SessionId, user: UserId) -> String {
    format!("{session}.{user}.{}", mac(state, session, user))
}

/// The session and user a cookie value names, when its MAC is right.
pub fn parse_session(state: &AppState, value: &str) -> Option<(SessionId, UserId)> {
    let mut parts = value.split('.');
    let (session, user, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (session, user): (SessionId, UserId) = (session.parse().ok()?, user.parse().ok()?);
    constant_time_eq(tag.as_bytes(), mac(state, session, user).as_bytes()).then_some((session, user))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn attributes(state: &AppState) -> &'static str {
    if state.config.public_url.trim_start().to_ascii_lowercase().starts_with("https://") {
        "; Path=/; HttpOnly; SameSite=Lax; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Lax"
    }
}

/// `Set-Cookie` for a signed-in browser.
pub fn set_session(state: &AppState, session: SessionId, user: UserId) -> HeaderValue {
    let max_age = state.config.session_max_age_secs;
    let value =
        format!("{SESSION_COOKIE}={}{}; Max-Age={max_age}", session_value(state, session, user), attributes(state));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session(state: &AppState) -> HeaderValue {
    let value = format!("{SESSION_COOKIE}={}; Max-Age=0", attributes(state));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The request's CSRF token, or a new one with the `Set-Cookie` that stores it.
pub fn csrf_token(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(token) = cookie(headers, CSRF_COOKIE) {
        return (token.to_owned(), None);
    }
    let token = random_token();
    let value = format!("{CSRF_COOKIE}={token}{}", attributes(state));
    (token, HeaderValue::from_str(&value).ok())
}

/// `Set-Cookie` with a fresh CSRF token: when a browser signs in or out, a token that was
/// known before does not carry over.
pub fn rotate_csrf(state: &AppState) -> HeaderValue {
    let value = format!("{CSRF_COOKIE}={}{}", random_token(), attributes(state));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether `presented` repeats the request's CSRF cookie.
pub fn csrf_matches(headers: &HeaderMap, presented: Option<&str>) -> bool {
    match (cookie(headers, CSRF_COOKIE), presented) {
        (Some(expected), Some(presented)) => constant_time_eq(expected.as_bytes(), presented.trim().as_bytes()),
        _ => false,
    }
}

/// For a request authenticated by the session cookie: a state-changing method must repeat
/// the CSRF token in the `X-CSRF-Token` header.
pub fn check_fetch_csrf(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if csrf_matches(headers, presented) {
        Ok(())
    } else {
        tracing::debug!("cookie-authenticated request without a matching CSRF token");
        Err(ApiError::CsrfFailed)
    }
}

/// How long a cookie session's `last_used_at` may lag before a request records its use.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The user of a cookie's live session. Like a refresh, a request after the idle timeout
/// ends the session; a request in use records it (at most once a minute), so the sessions
/// page shows when the browser was last used.
pub async fn live_session(
    state: &AppState,
    session: SessionId,
    user: UserId,
) -> Result<Option<parley_shared::store::users::User>, ApiError> {
    use parley_shared::store::sessions;
    let Some(active) = sessions::active_user(&state.db.pool, session, user).await? else { return Ok(None) };
    let idle_ms = parley_shared::time::now_ms() - active.session_last_used_at;
    if idle_ms > state.config.session_idle_timeout_secs * 1000 {
        sessions::revoke(&state.db.writer, session, "idle_timeout").await?;
        tracing::debug!(session.id = %session, "browser session idle too long");
        return Ok(None);
    }
    if idle_ms > TOUCH_EVERY_MS {
        sessions::touch_if_stale(&state.db.writer, session, TOUCH_EVERY_MS).await?;
    }
    Ok(Some(active.user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; xparley_csrf=evil"));
        headers.append(header::COOKIE, HeaderValue::from_static("parley_csrf=good ; parley_session="));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("good"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), None, "an empty value is no cookie");
        assert!(csrf_matches(&headers, Some("good")));
        assert!(!csrf_matches(&headers, Some("evil")) && !csrf_matches(&headers, None));
        assert!(check_fetch_csrf(&Method::GET, &headers).is_ok());
        assert!(matches!(check_fetch_csrf(&Method::POST, &headers), Err(ApiError::CsrfFailed)));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("good"));
        assert!(check_fetch_csrf(&Method::DELETE, &headers).is_ok());
    }
}
