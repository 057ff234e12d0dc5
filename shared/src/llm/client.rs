//! [`LlmClient`]: one HTTP client for every provider. Sends the request, classifies a failed
//! response, and hands a successful body to the provider's stream parser.

use super::anthropic::{self, AnthropicParser};
use super::error::classify_http;
use super::hosts::{ADDRESS_REFUSED, HostPolicy};
use super::openai::{self, OpenAiParser};
use super::sse::{drive, error_chain};
use super::{ChatMessage, LlmError, Provider, ProviderSettings, StreamItem};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::HeaderValue;
use secrecy::ExposeSecret;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Enough of an error body for its message; a proxy's HTML page can be large.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The largest whole message accepted in place of a stream.
const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Streams chat completions. Cheap to clone: one connection pool shared by all clones.
#[derive(Clone, Debug)]
pub struct LlmClient {
    http: reqwest::Client,
    stall_timeout: Duration,
    hosts: HostPolicy,
}

impl LlmClient {
    /// A client that gives up on a provider that sends nothing for `stall_timeout`, be it
    /// before the response headers or between two reads of the body.
    ///
    /// Requests reach only the addresses `hosts` allows: every address a name resolves to is
    /// checked, and an address written in the URL too.
    pub fn new(stall_timeout: Duration, hosts: HostPolicy) -> Self {
        Self::with_builder(reqwest::Client::builder(), stall_timeout, hosts)
    }

    pub(super) fn with_builder(builder: reqwest::ClientBuilder, stall_timeout: Duration, hosts: HostPolicy) -> Self {
        let http = builder
            .dns_resolver(hosts.resolver())
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect would carry `x-api-key` to wherever it points (reqwest only strips
            // `Authorization` across hosts), and an API answering a POST with one is
            // misconfigured anyway: a 3xx is reported as a bad request.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's TLS backend initialises");
        Self { http, stall_timeout, hosts }
    }

    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    /// Starts a streamed completion; the error before the first byte is returned directly.
    ///
    /// The stream yields items until the provider's end marker, and ends after the first
    /// error it yields ([`LlmError::Stalled`], [`LlmError::Connection`], [`LlmError::Protocol`],
    /// or an error the provider sent inside the stream). Dropping it closes the connection.
    ///
    /// Every error's text has the configured key removed by value (see
    /// [`LlmError::without_secret`]), whatever the provider quoted.
    #[tracing::instrument(skip_all, fields(llm.provider = %settings.provider, llm.model = %settings.model))]
    pub async fn stream_chat(
        &self,
        settings: &ProviderSettings,
        messages: &[ChatMessage],
    ) -> Result<BoxStream<'static, Result<StreamItem, LlmError>>, LlmError> {
        let stream = self.start_stream(settings, messages).await;
        let Some(key) = settings.api_key.as_ref().map(|k| k.expose_secret().to_owned()) else {
            return stream;
        };
        match stream {
            Err(e) => Err(e.without_secret(&key)),
            Ok(items) => Ok(items.map(move |item| item.map_err(|e| e.without_secret(&key))).boxed()),
        }
    }

    async fn start_stream(
        &self,
        settings: &ProviderSettings,
        messages: &[ChatMessage],
    ) -> Result<BoxStream<'static, Result<StreamItem, LlmError>>, LlmError> {
        let request = match settings.provider {
            Provider::Openai | Provider::OpenaiCompatible => openai::build_request(&self.http, settings, messages)?,
            Provider::Anthropic => anthropic::build_request(&self.http, settings, messages)?,
        };
        // Names are checked by the resolver; an address in the URL never reaches it.
        let literal = match request.url().host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(reason) = literal.and_then(|ip| self.hosts.refusal(ip)) {
            return Err(LlmError::BadRequest(format!("{ADDRESS_REFUSED}: {reason}")));
        }
        let response = match tokio::time::timeout(self.stall_timeout, self.http.execute(request)).await {
            Err(_) => return Err(LlmError::Stalled(self.stall_timeout)),
            Ok(Err(err)) => return Err(send_error(err)),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response, self.stall_timeout).await;
            return Err(classify_http(status, &headers, &body));
        }
        if is_json(response.headers()) {
            // A proxy that ignores `stream: true` answers with the whole message.
            let body = read_json_body(response, self.stall_timeout).await?;
            let items = match settings.provider {
                Provider::Openai | Provider::OpenaiCompatible => openai::whole_completion(&body)?,
                Provider::Anthropic => anthropic::whole_message(&body)?,
            };
            tracing::debug!(http.status = status, "LLM answered a streaming request with a whole message");
            return Ok(futures::stream::iter(items.into_iter().map(Ok)).boxed());
        }
        tracing::debug!(http.status = status, "LLM stream started");
        let body = response.bytes_stream();
        Ok(match settings.provider {
            Provider::Openai | Provider::OpenaiCompatible => drive(body, self.stall_timeout, OpenAiParser::default()),
            Provider::Anthropic => drive(body, self.stall_timeout, AnthropicParser::default()),
        })
    }
}

/// Whether a response declares a JSON body (rather than server-sent events).
fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A whole JSON body, read with the stall timeout on every read and a size limit.
async fn read_json_body(mut response: reqwest::Response, stall: Duration) -> Result<serde_json::Value, LlmError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(stall, response.chunk()).await {
            Err(_) => return Err(LlmError::Stalled(stall)),
            Ok(Err(err)) => {
                return Err(LlmError::Connection(format!("reading the response: {}", error_chain(&err.without_url()))));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
        }
        if body.len() > MAX_JSON_BODY_BYTES {
            return Err(LlmError::Protocol(format!("a JSON answer larger than {MAX_JSON_BODY_BYTES} bytes")));
        }
    }
    serde_json::from_slice(&body).map_err(|e| LlmError::Protocol(format!("a JSON answer that does not parse: {e}")))
}

/// The start of an error response's body; whatever arrived if reading it fails or stalls.
async fn read_error_body(mut response: reqwest::Response, stall: Duration) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match tokio::time::timeout(stall, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&body).into_owned()
}

fn send_error(err: reqwest::Error) -> LlmError {
    if err.is_builder() {
        return builder_error(err);
    }
    let chain = error_chain(&err.without_url());
    // The resolver refused every address of the name: no retry can change that.
    if chain.contains(ADDRESS_REFUSED) {
        return LlmError::BadRequest(format!("sending the request: {chain}"));
    }
    LlmError::Connection(format!("sending the request: {chain}"))
}

pub(super) fn builder_error(err: reqwest::Error) -> LlmError {
    LlmError::BadRequest(format!("cannot build the request (check the base URL): {}", error_chain(&err.without_url())))
}

/// The configured base URL without a trailing `/`, else `default`; none at all is a bad
/// request (an `openai_compatible` config without one).
pub(super) fn base_url<'a>(settings: &'a ProviderSettings, default: Option<&'static str>) -> Result<&'a str, LlmError> {
    match settings.base_url.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
        Some(base) => Ok(base.trim_end_matches('/')),
        None => default.ok_or_else(|| LlmError::BadRequest(format!("a {} model needs a base URL", settings.provider))),
    }
}

/// A header value holding a key, marked sensitive so that `Debug` output and HTTP/2 header
/// compression leave it out. The error does not echo the key.
pub(super) fn secret_header(value: &str) -> Result<HeaderValue, LlmError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| LlmError::BadRequest("the API key holds characters not allowed in an HTTP header".into()))?;
    header.set_sensitive(true);
    Ok(header)
}
