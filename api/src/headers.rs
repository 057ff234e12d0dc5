//! Security headers on every response: `nosniff` everywhere; a Content-Security-Policy that
//! allows a page only its own assets (and no inline script), with `frame-ancestors 'none'`;
//! no referrer; `no-store` unless a route chose its own caching (API answers carry tokens
//! and private data); HSTS when the public URL is https.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The docs page: its own script, styles, fonts and images (Swagger UI draws icons as
/// `data:` SVGs), and fetches of the OpenAPI document.
const HTML_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Anything else is data, never a document to run.
const DATA_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Whether HSTS is sent: the server is reached over https.
#[derive(Clone, Copy)]
pub struct SecurityHeaders {
    pub hsts: bool,
}

impl SecurityHeaders {
    pub fn new(public_url: &str) -> Self {
        Self { hsts: public_url.trim_start().to_ascii_lowercase().starts_with("https://") }
    }
}

pub async fn set(State(config): State<SecurityHeaders>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    apply(response.headers_mut(), config);
    response
}

fn apply(headers: &mut HeaderMap, config: SecurityHeaders) {
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let policy = if html { HTML_POLICY } else { DATA_POLICY };
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if config.hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
}
