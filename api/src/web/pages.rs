//! Page handlers: each renders a template into the layout; data comes from the JSON API.

use super::cookies;
use crate::state::AppState;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use handlebars::Handlebars;
use parley_shared::ids::SessionId;
use parley_shared::store::sessions;
use parley_shared::store::users::User;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::OnceLock;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("../../web/templates/layout.hbs")),
    ("signin", include_str!("../../web/templates/signin.hbs")),
    ("signup", include_str!("../../web/templates/signup.hbs")),
    ("verify_email", include_str!("../../web/templates/verify_email.hbs")),
    ("forgot_password", include_str!("../../web/templates/forgot_password.hbs")),
    ("reset_password", include_str!("../../web/templates/reset_password.hbs")),
    ("chat", include_str!("../../web/templates/chat.hbs")),
    ("account", include_str!("../../web/templates/account.hbs")),
    ("admin_users", include_str!("../../web/templates/admin_users.hbs")),
    ("admin_jobs", include_str!("../../web/templates/admin_jobs.hbs")),
    ("admin_models", include_str!("../../web/templates/admin_models.hbs")),
    ("admin_audit", include_str!("../../web/templates/admin_audit.hbs")),
    ("admin_stats", include_str!("../../web/templates/admin_stats.hbs")),
    ("admin_exports", include_str!("../../web/templates/admin_exports.hbs")),
    ("shared", include_str!("../../web/templates/shared.hbs")),
    ("error", include_str!("../../web/templates/error.hbs")),
];

fn templates() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut hb = Handlebars::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; a broken one fails the page tests.
            if let Err(e) = hb.register_template_string(name, *source) {
                tracing::error!(template = name, error = %e, "a page template does not parse");
            }
        }
        hb
    })
}

/// The browser's signed-in user, from the session cookie.
struct Visitor {
    user: User,
    session: SessionId,
}

async fn visitor(state: &AppState, headers: &HeaderMap) -> Option<Visitor> {
    let value = cookies::cookie(headers, cookies::SESSION_COOKIE)?;
    let (session, user) = cookies::parse_session(state, value)?;
    let user = cookies::live_session(state, session, user).await.ok().flatten()?;
    Some(Visitor { user, session })
}

/// What a page is: its template, title, script and status.
struct Page<'a> {
    status: StatusCode,
    name: &'a str,
    title: &'a str,
    script: Option<&'a str>,
}

/// Renders `page` with `data` inside the layout, with the CSRF token.
fn render(state: &AppState, headers: &HeaderMap, page: Page<'_>, visitor: Option<&Visitor>, data: Value) -> Response {
    let Page { status, name, title, script } = page;
    let (csrf, set_csrf) = cookies::csrf_token(state, headers);
    let hb = templates();
    let body = match hb.render(name, &data) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(template = name, error = %e, "rendering a page failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response();
        }
    };
    let user = visitor.map(|v| {
        json!({"name": if v.user.display_name.is_empty() { v.user.email.clone() } else { v.user.display_name.clone() },
               "is_admin": v.user.is_admin})
    });
    let page = json!({"title": title, "script": script, "csrf": csrf, "user": user, "body": body, "page": name});
    let html = match hb.render("layout", &page) {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "rendering the layout failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response();
        }
    };
    let mut response = (status, Html(html)).into_response();
    if let Some(cookie) = set_csrf {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A page for signed-in users: its response, or the way to the sign-in page.
async fn signed_in_page(
    state: &AppState,
    headers: &HeaderMap,
    admin_only: bool,
    name: &str,
    title: &str,
    script: &str,
    data: Value,
) -> Response {
    let Some(visitor) = visitor(state, headers).await else {
        return Redirect::to("/signin").into_response();
    };
    if admin_only && !visitor.user.is_admin {
        let data =
            json!({"heading": "Admins only", "message": "This page is for admins. Your account cannot open it."});
        let page = Page { status: StatusCode::FORBIDDEN, name: "error", title: "Forbidden", script: None };
        return render(state, headers, page, Some(&visitor), data);
    }
    let mut data = data;
    data["session_id"] = json!(visitor.session.to_string());
    data["user_id"] = json!(visitor.user.id.to_string());
    render(state, headers, Page { status: StatusCode::OK, name, title, script: Some(script) }, Some(&visitor), data)
}

/// A page for anyone (signing in, resetting a password).
async fn public_page(state: &AppState, headers: &HeaderMap, name: &str, title: &str) -> Response {
    let visitor = visitor(state, headers).await;
    let page = Page { status: StatusCode::OK, name, title, script: Some("auth.js") };
    render(state, headers, page, visitor.as_ref(), json!({}))
}

pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match visitor(&state, &headers).await {
        Some(_) => Redirect::to("/chat").into_response(),
        None => Redirect::to("/signin").into_response(),
    }
}

pub async fn signin(State(state): State<AppState>, headers: HeaderMap) -> Response {
    public_page(&state, &headers, "signin", "Sign in").await
}

pub async fn signup(State(state): State<AppState>, headers: HeaderMap) -> Response {
    public_page(&state, &headers, "signup", "Sign up").await
}

pub async fn verify_email(State(state): State<AppState>, headers: HeaderMap) -> Response {
    public_page(&state, &headers, "verify_email", "Verify your email").await
}

pub async fn forgot_password(State(state): State<AppState>, headers: HeaderMap) -> Response {
    public_page(&state, &headers, "forgot_password", "Forgot password").await
}

pub async fn reset_password(State(state): State<AppState>, headers: HeaderMap) -> Response {
    public_page(&state, &headers, "reset_password", "Reset password").await
}

pub async fn chat(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, false, "chat", "Chat", "chat.js", json!({})).await
}

pub async fn account(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, false, "account", "Account", "account.js", json!({})).await
}

pub async fn admin_users(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_users", "Users", "admin.js", json!({})).await
}

pub async fn admin_jobs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_jobs", "Jobs and queues", "admin.js", json!({})).await
}

pub async fn admin_models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_models", "Models", "admin.js", json!({})).await
}

pub async fn admin_audit(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_audit", "Audit log", "admin.js", json!({})).await
}

pub async fn admin_stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_stats", "Usage and stats", "admin_stats.js", json!({})).await
}

pub async fn admin_exports(State(state): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&state, &headers, true, "admin_exports", "Exports", "admin_exports.js", json!({})).await
}

/// A shared conversation's public page, for anyone with the link. The page reads the
/// snapshot from the JSON API (which answers 404 for a revoked or expired link); search
/// engines are asked not to index it.
pub async fn shared(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let visitor = visitor(&state, &headers).await;
    let page = Page { status: StatusCode::OK, name: "shared", title: "Shared conversation", script: Some("shared.js") };
    let mut response = render(&state, &headers, page, visitor.as_ref(), json!({}));
    response.headers_mut().insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

/// The sign-in form's last step: the page signed in through the JSON API (password, then
/// the second factor when enrolled) and hands over the access token, whose session the
/// cookie is then bound to.
#[derive(Debug, Deserialize)]
pub struct SessionForm {
    csrf: String,
    access_token: String,
}

fn refused(state: &AppState, headers: &HeaderMap, status: StatusCode, heading: &str, message: &str) -> Response {
    let data = json!({"heading": heading, "message": message});
    render(state, headers, Page { status, name: "error", title: heading, script: None }, None, data)
}

pub async fn start_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SessionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return refused(&state, &headers, StatusCode::BAD_REQUEST, "Bad request", "The form was incomplete.");
    };
    if !cookies::csrf_matches(&headers, Some(&form.csrf)) {
        return csrf_refused(&state, &headers);
    }
    let Ok(claims) = state.jwt.verify(form.access_token.trim()) else {
        return Redirect::to("/signin").into_response();
    };
    match sessions::active_user(&state.db.pool, claims.sid, claims.sub).await {
        Ok(Some(sessions::ActiveUser { user, .. })) => {
            tracing::info!(user.id = %user.id, session.id = %claims.sid, "browser session started");
            let mut response = Redirect::to("/chat").into_response();
            response.headers_mut().append(header::SET_COOKIE, cookies::set_session(&state, claims.sid, user.id));
            response.headers_mut().append(header::SET_COOKIE, cookies::rotate_csrf(&state));
            response
        }
        _ => Redirect::to("/signin").into_response(),
    }
}

fn csrf_refused(state: &AppState, headers: &HeaderMap) -> Response {
    refused(
        state,
        headers,
        StatusCode::FORBIDDEN,
        "Form expired",
        "The form's security token is missing or wrong. Go back, reload the page and try again.",
    )
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Signs the browser out: ends its session (the same record the API uses) and drops the cookie.
pub async fn signout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let presented = form.ok().and_then(|Form(f)| f.csrf);
    if !cookies::csrf_matches(&headers, presented.as_deref()) {
        return csrf_refused(&state, &headers);
    }
    if let Some(visitor) = visitor(&state, &headers).await {
        if let Err(e) = sessions::revoke(&state.db.writer, visitor.session, "logout").await {
            tracing::error!(error = %e, "ending a browser session failed");
            return refused(&state, &headers, StatusCode::SERVICE_UNAVAILABLE, "Try again", "Signing out failed.");
        }
        tracing::info!(user.id = %visitor.user.id, session.id = %visitor.session, "browser signed out");
    }
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().append(header::SET_COOKIE, cookies::clear_session(&state));
    response.headers_mut().append(header::SET_COOKIE, cookies::rotate_csrf(&state));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_the_layout_escapes_what_it_is_given() {
        let mut hb = Handlebars::new();
        for (name, source) in TEMPLATES {
            hb.register_template_string(name, *source).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let page = json!({"title": "<t>", "script": null, "csrf": "\"x", "user": {"name": "<b>me</b>", "is_admin": false},
                          "body": "<p>body</p>", "page": "chat"});
        let html = hb.render("layout", &page).unwrap();
        assert!(html.contains("&lt;b&gt;me&lt;/b&gt;") && html.contains("&lt;t&gt;") && html.contains("&quot;x"));
        assert!(html.contains("<p>body</p>"), "the rendered page body goes in as it is");
        assert!(!html.contains("/admin/jobs"), "no admin links for other users");
    }
}
