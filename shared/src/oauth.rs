//! Sign-in through identity providers: GitHub (OAuth 2.0, with the `oauth2` crate) and any
//! OpenID Connect provider (Google, or one named in `PARLEY_OIDC_*`, with `openidconnect`).
//!
//! Both use the authorization code grant with PKCE (S256). The flow's own data (provider,
//! return URI, PKCE verifier, nonce, the browser binding, expiry) travels in the `state`
//! parameter, sealed with the server key (XChaCha20-Poly1305: neither readable nor
//! forgeable), so no server-side row is needed between the two legs.

use crate::auth::Keys;
use crate::config::{GithubProvider, OAuthConfig, OidcProvider};
use crate::usecases::identity::ProviderAccount;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    Scope, TokenResponse, TokenUrl,
};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{IssuerUrl, Nonce};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a sign-in may take between the redirect to the provider and the callback.
pub const STATE_TTL_SECS: i64 = 10 * 60;

/// A configured provider.
#[derive(Debug, Clone, Copy)]
pub enum Provider<'a> {
    Github(&'a GithubProvider),
    Oidc(&'a OidcProvider),
}

impl Provider<'_> {
    pub fn name(&self) -> &str {
        match self {
            Provider::Github(_) => "github",
            Provider::Oidc(p) => &p.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Github(_) => "oauth2",
            Provider::Oidc(_) => "oidc",
        }
    }
}

/// The provider named `name`, if configured.
pub fn provider<'a>(config: &'a OAuthConfig, name: &str) -> Option<Provider<'a>> {
    match name {
        "github" => config.github.as_ref().map(Provider::Github),
        _ => config.oidc.iter().find(|p| p.name == name).map(Provider::Oidc),
    }
}

/// Every configured provider.
pub fn providers(config: &OAuthConfig) -> Vec<Provider<'_>> {
    config.github.iter().map(Provider::Github).chain(config.oidc.iter().map(Provider::Oidc)).collect()
}

/// Why a sign-in with a provider failed. The text is for logs; users get the code.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The provider could not be reached, refused the code, or answered nonsense.
    #[error("provider error: {0}")]
    Provider(String),
    /// The ID token's signature, issuer, audience, expiry or nonce is wrong.
    #[error("invalid ID token: {0}")]
    InvalidIdToken(String),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::Provider(_) => "provider_error",
            OAuthError::InvalidIdToken(_) => "invalid_id_token",
        }
    }
}

/// The HTTP client for providers: no redirects (a provider that redirects a back-channel
/// call is refused, not followed), short timeouts.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent("Parley")
        .build()?)
}

/// What the `state` parameter carries between the two legs of a sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowState {
    pub provider: String,
    pub redirect_uri: String,
    pub pkce_verifier: String,
    pub nonce: String,
    /// SHA-256 of the value in the browser's cookie: a state only works in the browser that
    /// started the sign-in.
    pub browser: String,
    pub expires_at: i64,
}

impl FlowState {
    pub fn seal(&self, keys: &Keys) -> anyhow::Result<String> {
        let sealed = crate::crypto::encrypt(&keys.encryption, &serde_json::to_string(self)?)?;
        Ok(URL_SAFE_NO_PAD.encode(STANDARD.decode(sealed)?))
    }

    /// The state, if it was sealed by this server and has not expired.
    pub fn open(keys: &Keys, state: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(state).ok()?;
        let json = crate::crypto::decrypt(&keys.encryption, &STANDARD.encode(raw)).ok()?;
        let state: FlowState = serde_json::from_str(&json).ok()?;
        (state.expires_at > crate::time::now_ms()).then_some(state)
    }
}

/// A fresh PKCE pair: the S256 challenge for the provider, the verifier for the state.
pub fn pkce() -> (PkceCodeChallenge, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (challenge, verifier.secret().to_owned())
}

/// The provider's authorization URL for this sign-in.
pub async fn authorize_url(
    provider: Provider<'_>,
    http: &reqwest::Client,
    callback: &str,
    state: String,
    nonce: String,
    challenge: PkceCodeChallenge,
) -> Result<String, OAuthError> {
    let callback = RedirectUrl::new(callback.to_owned()).map_err(|e| OAuthError::Provider(e.to_string()))?;
    match provider {
        Provider::Github(p) => {
            let client = github_client(p, callback)?;
            let (url, _) = client
                .authorize_url(|| CsrfToken::new(state))
                .add_scope(Scope::new("read:user".into()))
                .add_scope(Scope::new("user:email".into()))
                .set_pkce_challenge(challenge)
                .url();
            Ok(url.to_string())
        }
        Provider::Oidc(p) => {
            let client = oidc_client(p, http, callback).await?;
            let (url, _, _) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    || CsrfToken::new(state),
                    || Nonce::new(nonce),
                )
                .add_scope(Scope::new("email".into()))
                .add_scope(Scope::new("profile".into()))
                .set_pkce_challenge(challenge)
                .url();
            Ok(url.to_string())
        }
    }
}

/// Exchanges the callback's code (with the PKCE verifier) and reads who signed in.
pub async fn finish(
    provider: Provider<'_>,
    http: &reqwest::Client,
    callback: &str,
    code: &str,
    flow: &FlowState,
) -> Result<ProviderAccount, OAuthError> {
    let callback = RedirectUrl::new(callback.to_owned()).map_err(|e| OAuthError::Provider(e.to_string()))?;
    let code = AuthorizationCode::new(code.to_owned());
    let verifier = PkceCodeVerifier::new(flow.pkce_verifier.clone());
    match provider {
        Provider::Github(p) => {
            let token = github_client(p, callback)?
                .exchange_code(code)
                .set_pkce_verifier(verifier)
                .request_async(http)
                .await
                .map_err(|e| OAuthError::Provider(format!("token exchange: {e}")))?;
            github_account(p, http, token.access_token().secret()).await
        }
        Provider::Oidc(p) => {
            let client = oidc_client(p, http, callback).await?;
            let response = client
                .exchange_code(code)
                .map_err(|e| OAuthError::Provider(e.to_string()))?
                .set_pkce_verifier(verifier)
                .request_async(http)
                .await
                .map_err(|e| OAuthError::Provider(format!("token exchange: {e}")))?;
            let id_token = openidconnect::TokenResponse::id_token(&response)
                .ok_or_else(|| OAuthError::InvalidIdToken("the token response has no ID token".into()))?;
            let claims = id_token
                .claims(&client.id_token_verifier(), &Nonce::new(flow.nonce.clone()))
                .map_err(|e| OAuthError::InvalidIdToken(e.to_string()))?;
            Ok(ProviderAccount {
                provider: p.name.clone(),
                subject: claims.subject().as_str().to_owned(),
                email: claims.email().map(|e| e.as_str().to_owned()),
                email_verified: claims.email_verified().unwrap_or(false),
            })
        }
    }
}

type GithubClient = oauth2::basic::BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn github_client(p: &GithubProvider, callback: RedirectUrl) -> Result<GithubClient, OAuthError> {
    use secrecy::ExposeSecret;
    let bad = |e: oauth2::url::ParseError| OAuthError::Provider(format!("a GitHub URL is not valid: {e}"));
    Ok(oauth2::basic::BasicClient::new(ClientId::new(p.client_id.clone()))
        .set_client_secret(ClientSecret::new(p.client_secret.expose_secret().to_owned()))
        .set_auth_uri(AuthUrl::new(p.authorize_url.clone()).map_err(bad)?)
        .set_token_uri(TokenUrl::new(p.token_url.clone()).map_err(bad)?)
        .set_redirect_uri(callback))
}

#[derive(Deserialize)]
struct GithubUser {
    id: i64,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

/// The GitHub user, and their primary email from the emails API (verified or not: only a
/// verified one ever links).
async fn github_account(
    p: &GithubProvider,
    http: &reqwest::Client,
    token: &str,
) -> Result<ProviderAccount, OAuthError> {
    let get = |path: &str| {
        http.get(format!("{}{path}", p.api_url))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .send()
    };
    let failed = |what: &str, e: reqwest::Error| OAuthError::Provider(format!("GitHub {what}: {e}"));
    let user: GithubUser = get("/user")
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed("user", e))?
        .json()
        .await
        .map_err(|e| failed("user", e))?;
    let emails: Vec<GithubEmail> = get("/user/emails")
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed("emails", e))?
        .json()
        .await
        .map_err(|e| failed("emails", e))?;
    let primary = emails.into_iter().find(|e| e.primary);
    Ok(ProviderAccount {
        provider: "github".into(),
        subject: user.id.to_string(),
        email_verified: primary.as_ref().is_some_and(|e| e.verified),
        email: primary.map(|e| e.email),
    })
}

async fn oidc_client(
    p: &OidcProvider,
    http: &reqwest::Client,
    callback: RedirectUrl,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    OAuthError,
> {
    use secrecy::ExposeSecret;
    let issuer = IssuerUrl::new(p.issuer.clone()).map_err(|e| OAuthError::Provider(format!("issuer URL: {e}")))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| OAuthError::Provider(format!("discovery: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        openidconnect::ClientId::new(p.client_id.clone()),
        Some(openidconnect::ClientSecret::new(p.client_secret.expose_secret().to_owned())),
    )
    .set_redirect_uri(callback))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(expires_at: i64) -> FlowState {
        FlowState {
            provider: "github".into(),
            redirect_uri: "https://app.example.com/cb".into(),
            pkce_verifier: "verifier".into(),
            nonce: "nonce".into(),
            browser: "binding-hash".into(),
            expires_at,
        }
    }

    #[test]
    fn a_sealed_state_opens_only_unexpired_untouched_and_with_its_key() {
        let keys = Keys::derive(b"master key");
        let sealed = flow(crate::time::now_ms() + 60_000).seal(&keys).unwrap();
        assert!(!sealed.contains("verifier") && !sealed.contains('+') && !sealed.contains('/'));
        let opened = FlowState::open(&keys, &sealed).unwrap();
        assert_eq!((opened.provider.as_str(), opened.pkce_verifier.as_str()), ("github", "verifier"));
        assert!(FlowState::open(&Keys::derive(b"another key"), &sealed).is_none());
        let mut tampered = sealed.clone().into_bytes();
        let i = tampered.len() / 2;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        assert!(FlowState::open(&keys, &String::from_utf8(tampered).unwrap()).is_none());
        let expired = flow(crate::time::now_ms() - 1).seal(&keys).unwrap();
        assert!(FlowState::open(&keys, &expired).is_none());
        assert!(FlowState::open(&keys, "not a state").is_none());
    }
}
