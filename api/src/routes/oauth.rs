//! Sign-in through identity providers: the list of providers, the redirect to one, its
//! callback, and the exchange of the one-time code the callback hands the client.

use crate::audit::RequestMeta;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{Json, Query};
use crate::mfa::LoginAnswer;
use crate::pagination::Page;
use crate::state::AppState;
use crate::tokens;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parley_shared::audit::AuditAction;
use parley_shared::auth::{hash_token, random_token};
use parley_shared::jobs::{JobSpec, SendEmail};
use parley_shared::oauth::{self, FlowState, Provider};
use parley_shared::store::{identities, sessions, users};
use parley_shared::time::now_ms;
use parley_shared::usecases::identity::{self, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The cookie that binds a sign-in's `state` to the browser that started it.
const COOKIE: &str = "parley_oauth";
/// How long the one-time code of a finished sign-in is accepted.
const EXCHANGE_TTL_SECS: i64 = 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/oauth/providers", get(list_providers))
        .route("/api/auth/oauth/{provider}/authorize", get(authorize))
        .route("/api/auth/oauth/{provider}/callback", get(callback))
        .route("/api/auth/oauth/exchange", post(exchange))
}

/// A provider users may sign in with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// The `{provider}` of the sign-in paths: `github`, `google`, or a configured OIDC name.
    pub name: String,
    /// `oauth2` (GitHub) or `oidc`.
    pub kind: &'static str,
}

/// The identity providers configured on this server.
#[utoipa::path(get, path = "/api/auth/oauth/providers/", tag = "accounts", responses((status = 200, body = Page<ProviderView>)))]
pub async fn list_providers(State(state): State<AppState>) -> Json<Page<ProviderView>> {
    let items = oauth::providers(&state.config.oauth)
        .into_iter()
        .map(|p| ProviderView { name: p.name().to_owned(), kind: p.kind() })
        .collect();
    Json(Page::whole(items))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuthorizeQuery {
    /// Where to return after the sign-in, with `?code=` (or `?error=`); must be one of
    /// `PARLEY_OAUTH_REDIRECT_URIS`.
    pub redirect_uri: String,
}

fn find_provider<'a>(state: &'a AppState, name: &str) -> ApiResult<Provider<'a>> {
    oauth::provider(&state.config.oauth, name).ok_or(ApiError::NotFound)
}

fn callback_url(state: &AppState, provider: &str) -> String {
    format!("{}/api/auth/oauth/{provider}/callback/", state.config.public_url)
}

/// Starts a sign-in: redirects to the provider (authorization code with PKCE S256, a sealed
/// `state` bound to this browser by a cookie, and a nonce for OIDC).
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/authorize/", tag = "accounts", params(("provider" = String, Path), AuthorizeQuery), responses(
    (status = 303, description = "to the provider's authorization page; sets the `parley_oauth` cookie"),
    (status = 400, description = "a query that does not parse", body = ErrorEnvelope),
    (status = 404, description = "no such provider", body = ErrorEnvelope),
    (status = 422, description = "redirect_uri is not allowed", body = ErrorEnvelope),
    (status = 503, description = "provider_error: the provider's discovery document could not be read", body = ErrorEnvelope)))]
pub async fn authorize(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<AuthorizeQuery>,
) -> ApiResult<Response> {
    let provider = find_provider(&state, &name)?;
    if !state.config.oauth.redirect_uris.contains(&query.redirect_uri) {
        return Err(ApiError::field("redirect_uri", "is not an allowed redirect URI"));
    }
    let binding = random_token();
    let (challenge, verifier) = oauth::pkce();
    let flow = FlowState {
        provider: provider.name().to_owned(),
        redirect_uri: query.redirect_uri,
        pkce_verifier: verifier,
        nonce: random_token(),
        browser: hash_token(&binding),
        expires_at: now_ms() + oauth::STATE_TTL_SECS * 1000,
    };
    let sealed = flow.seal(&state.keys)?;
    let http = oauth::http_client()?;
    let url =
        oauth::authorize_url(provider, &http, &callback_url(&state, &name), sealed, flow.nonce.clone(), challenge)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %name, error = %e, "starting a provider sign-in failed");
                ApiError::Unavailable {
                    code: "provider_error",
                    message: "the identity provider cannot be reached".into(),
                }
            })?;
    let secure = if state.config.public_url.starts_with("https:") { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={binding}; Max-Age={}; Path=/api/auth/oauth; HttpOnly; SameSite=Lax{secure}",
        oauth::STATE_TTL_SECS
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?);
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// The provider's refusal (`access_denied`, ...).
    pub error: Option<String>,
}

/// The provider returns here. Checks the state (sealed, unexpired, this provider's, this
/// browser's), exchanges the code with the PKCE verifier, checks the ID token (signature,
/// issuer, audience, expiry, nonce), finds or links or creates the account, and redirects
/// to the sign-in's `redirect_uri` with a one-time `code` (or an `error`).
#[utoipa::path(get, path = "/api/auth/oauth/{provider}/callback/", tag = "accounts", params(("provider" = String, Path), CallbackQuery), responses(
    (status = 303, description = "to the redirect_uri with `?code=` for POST /api/auth/oauth/exchange/, or `?error=` (access_denied, provider_error, invalid_id_token, email_required, account_exists, account_inactive)"),
    (status = 400, description = "invalid_state: missing, forged, expired, another provider's or another browser's", body = ErrorEnvelope),
    (status = 404, description = "no such provider", body = ErrorEnvelope)))]
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<Response> {
    let provider = find_provider(&state, &name)?;
    let invalid_state = || ApiError::BadRequest {
        code: "invalid_state",
        message: "the sign-in state is invalid or expired: start again".into(),
    };
    let flow = query.state.as_deref().and_then(|s| FlowState::open(&state.keys, s)).ok_or_else(invalid_state)?;
    let binding = cookie(&headers, COOKIE).ok_or_else(invalid_state)?;
    if flow.provider != provider.name() || flow.browser != hash_token(&binding) {
        return Err(invalid_state());
    }
    let back = |params: &[(&str, &str)]| -> ApiResult<Response> {
        let mut url = url::Url::parse(&flow.redirect_uri).map_err(anyhow::Error::from)?;
        url.query_pairs_mut().extend_pairs(params);
        let clear = format!("{COOKIE}=; Max-Age=0; Path=/api/auth/oauth; HttpOnly; SameSite=Lax");
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response();
        response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).map_err(anyhow::Error::from)?);
        Ok(response)
    };
    let code = match (query.error.as_deref(), query.code.as_deref()) {
        (None, Some(code)) => code,
        (error, _) => {
            tracing::info!(provider = %name, error = error.unwrap_or("no code"), "the provider refused the sign-in");
            let code = if error == Some("access_denied") { "access_denied" } else { "provider_error" };
            return back(&[("error", code)]);
        }
    };
    let http = oauth::http_client()?;
    let account = match oauth::finish(provider, &http, &callback_url(&state, &name), code, &flow).await {
        Ok(account) => account,
        Err(e) => {
            tracing::warn!(provider = %name, error = %e, "a provider sign-in failed");
            let event = meta.event(AuditAction::Login).failure();
            event.details(serde_json::json!({"provider": name, "reason": e.code()})).record(&state.db.writer).await?;
            return back(&[("error", e.code())]);
        }
    };
    let (user, outcome) = match identity::resolve(&state.db, &account).await? {
        Ok(found) => found,
        Err(refusal) => {
            tracing::info!(provider = %name, reason = refusal.code(), "a provider sign-in was refused");
            let details = serde_json::json!({"provider": name, "reason": refusal.code()});
            meta.event(AuditAction::Login).failure().details(details).record(&state.db.writer).await?;
            return back(&[("error", refusal.code())]);
        }
    };
    if outcome != Outcome::Known {
        if outcome == Outcome::Created {
            meta.event(AuditAction::UserSignup)
                .by(user.id)
                .details(serde_json::json!({"provider": name}))
                .record(&state.db.writer)
                .await?;
            state.queue.wake(SendEmail::QUEUE);
        }
        let details = serde_json::json!({"provider": name, "created": outcome == Outcome::Created});
        meta.event(AuditAction::IdentityLink).by(user.id).details(details).record(&state.db.writer).await?;
    }
    let one_time = random_token();
    let expires_at = now_ms() + EXCHANGE_TTL_SECS * 1000;
    identities::create_exchange_code(&state.db.writer, &hash_token(&one_time), user.id, &name, expires_at).await?;
    back(&[("code", &one_time)])
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ExchangeRequest {
    /// The `code` the callback redirected with (single use, 60 s).
    pub code: String,
}

/// Turns a provider sign-in's one-time code into the token pair (`amr: ["oauth"]`), or, when
/// the account has a second factor, into `{mfa_required, mfa_token, expires_in}`.
#[utoipa::path(post, path = "/api/auth/oauth/exchange/", tag = "accounts", request_body = ExchangeRequest, responses(
    (status = 200, body = LoginAnswer),
    (status = 400, description = "invalid_code: unknown, used or expired", body = ErrorEnvelope)))]
pub async fn exchange(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(req): Json<ExchangeRequest>,
) -> ApiResult<Json<LoginAnswer>> {
    let invalid =
        || ApiError::BadRequest { code: "invalid_code", message: "the code is invalid, used or expired".into() };
    let (user, provider) =
        identities::consume_exchange_code(&state.db.writer, &hash_token(req.code.trim())).await?.ok_or_else(invalid)?;
    let user = users::by_id(&state.db.pool, user).await?.filter(|u| u.is_active).ok_or_else(invalid)?;
    if let Some(challenge) = crate::mfa::challenge_if_enrolled(&state, user.id, sessions::AMR_OAUTH).await? {
        let details = serde_json::json!({"provider": provider, "second_factor": "required"});
        meta.event(AuditAction::Login).by(user.id).details(details).record(&state.db.writer).await?;
        return Ok(Json(LoginAnswer::MfaRequired(challenge)));
    }
    users::record_login(&state.db.writer, user.id).await?;
    let amr = [sessions::AMR_OAUTH];
    let (session, pair) =
        tokens::start_session_with(&state, user.id, &meta.user_agent, &meta.ip.to_string(), &amr).await?;
    let details = serde_json::json!({"provider": provider, "session_id": session});
    meta.event(AuditAction::Login).by(user.id).details(details).record(&state.db.writer).await?;
    tracing::info!(user.id = %user.id, session.id = %session, provider = %provider, "signed in through a provider");
    Ok(Json(LoginAnswer::Tokens(pair)))
}
