//! [`LlmError`] and its classification from HTTP statuses, `Retry-After` headers and the
//! error objects providers send in a body or in the middle of a stream.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;

/// Longest provider error message kept in an error text, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a completion failed, in terms the job system can act on: see [`LlmError::is_retryable`]
/// and [`LlmError::retry_after`].
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A missing, wrong or insufficiently privileged key (401/403). Never retried.
    #[error("the provider rejected the credentials: {0}")]
    Auth(String),
    /// A request the provider will never accept: other 4xx (400, 404 unknown model, ...), a
    /// missing base URL, an exhausted quota. Never retried.
    #[error("the provider rejected the request: {0}")]
    BadRequest(String),
    /// The prompt exceeds the model's context window. Never retried.
    #[error("the conversation is too long for the model's context window: {0}")]
    ContextTooLong(String),
    /// 429, or a rate-limit error inside the stream.
    #[error("rate limited by the provider: {message}")]
    RateLimited { message: String, retry_after: Option<Duration> },
    /// 408, 409, 5xx, 529, or a server/overloaded error inside the stream.
    #[error("provider error (status {status}): {message}")]
    Server { status: u16, message: String, retry_after: Option<Duration> },
    /// Connecting, sending, or reading the body failed.
    #[error("could not talk to the provider: {0}")]
    Connection(String),
    /// Nothing arrived for this long, while waiting for the response headers or the next bytes.
    #[error("the provider sent nothing for {0:?}")]
    Stalled(Duration),
    /// The stream was malformed or ended before the completion did.
    #[error("malformed response from the provider: {0}")]
    Protocol(String),
}

impl LlmError {
    /// Whether another attempt may succeed. Auth, bad requests and over-long prompts fail
    /// the same way every time; everything else is transient (a truncated or garbled stream
    /// is usually a dropped connection or a proxy, and attempts are bounded anyway).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, LlmError::Auth(_) | LlmError::BadRequest(_) | LlmError::ContextTooLong(_))
    }

    /// The delay the provider asked for (`Retry-After` / `retry-after-ms`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } | LlmError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A stable snake_case name of the variant, for job error codes and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Auth(_) => "auth",
            LlmError::BadRequest(_) => "bad_request",
            LlmError::ContextTooLong(_) => "context_too_long",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server",
            LlmError::Connection(_) => "connection",
            LlmError::Stalled(_) => "stalled",
            LlmError::Protocol(_) => "protocol",
        }
    }
}

impl LlmError {
    /// What a user is told: the class of failure in Parley's words, never the provider's own
    /// text (it can quote the key, or internals an admin should see first). The full,
    /// redacted text is the error's `Display`, for admins and logs.
    pub fn public_message(&self) -> String {
        match self {
            LlmError::Auth(_) => "the provider rejected Parley's credentials; an admin has been told".into(),
            LlmError::BadRequest(_) => {
                "the provider refused the request (model or settings); an admin has been told".into()
            }
            LlmError::ContextTooLong(_) => "the conversation is too long for the model's context window".into(),
            LlmError::RateLimited { .. } => "the provider is rate limiting requests".into(),
            LlmError::Server { status, .. } => format!("the provider had an error (status {status})"),
            LlmError::Connection(_) => "could not reach the provider".into(),
            LlmError::Stalled(d) => format!("the provider sent nothing for {d:?}"),
            LlmError::Protocol(_) => "the provider sent a malformed response".into(),
        }
    }

    /// The same error with `secret` (the key the request was sent with) removed from its
    /// text: the exact value, and any word holding a run of its first or last eight
    /// characters (a masked `3f9a1c0d****6978`, a quoted `?api_key=...`). This is on top of
    /// the pattern-based redaction, which cannot know a key without a telltale shape.
    pub fn without_secret(self, secret: &str) -> Self {
        let r = |text: String| redact_secret(&text, secret);
        match self {
            LlmError::Auth(m) => LlmError::Auth(r(m)),
            LlmError::BadRequest(m) => LlmError::BadRequest(r(m)),
            LlmError::ContextTooLong(m) => LlmError::ContextTooLong(r(m)),
            LlmError::RateLimited { message, retry_after } => {
                LlmError::RateLimited { message: r(message), retry_after }
            }
            LlmError::Server { status, message, retry_after } => {
                LlmError::Server { status, message: r(message), retry_after }
            }
            LlmError::Connection(m) => LlmError::Connection(r(m)),
            LlmError::Stalled(d) => LlmError::Stalled(d),
            LlmError::Protocol(m) => LlmError::Protocol(r(m)),
        }
    }
}

/// A failed provider call as users see it: `Display` is [`LlmError::public_message`] (and
/// there is no `source`, so an error chain never reaches the provider's text); the redacted
/// detail stays available to admins through [`UserFacing::detail`].
#[derive(Debug)]
pub struct UserFacing(pub LlmError);

impl UserFacing {
    /// The redacted provider text, for admins and logs.
    pub fn detail(&self) -> String {
        self.0.to_string()
    }
}

impl std::fmt::Display for UserFacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.public_message())
    }
}

impl std::error::Error for UserFacing {}

/// `text` without `secret`: see [`LlmError::without_secret`].
pub fn redact_secret(text: &str, secret: &str) -> String {
    const RUN: usize = 8;
    let secret = secret.trim();
    if secret.is_empty() {
        return text.to_owned();
    }
    let text = text.replace(secret, "[redacted]");
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < RUN {
        return text;
    }
    let head: String = chars[..RUN].iter().collect();
    let tail: String = chars[chars.len() - RUN..].iter().collect();
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains(&head) || word.contains(&tail) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    out
}

/// Classifies a non-2xx response from its status, headers and (possibly partial) body.
pub(crate) fn classify_http(status: u16, headers: &HeaderMap, body: &str) -> LlmError {
    let retry_after = retry_after(headers, Utc::now());
    let message = format!("HTTP {status}: {}", error_message(body));
    classify(status, retry_after, message, body)
}

/// Classifies an error object sent inside a 200 stream: OpenAI's `{"error": {...}}`, or
/// Anthropic's `{"type": "error", "error": {...}}`. Such errors carry no HTTP status, so one
/// is inferred from the error's `code` (a number, or a number in a string as LiteLLM's proxy
/// sends it), else from its `code`/`type` name (known names first, then the words in it, so
/// `throttling_error` or `AuthenticationError` are read too); an unknown error is a server
/// error, as it happened after the provider accepted the request.
pub(crate) fn classify_stream_error(payload: &Value) -> LlmError {
    let error = payload.get("error").unwrap_or(payload);
    let status_code = |v: &Value| {
        let code = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
        u16::try_from(code).ok().filter(|c| (400..=599).contains(c))
    };
    let numeric = error.get("code").and_then(status_code).or_else(|| error.get("status").and_then(status_code));
    let names: Vec<&str> = ["code", "type"].iter().filter_map(|k| error.get(k).and_then(Value::as_str)).collect();
    let named =
        || names.iter().find_map(|n| status_of_kind(n)).or_else(|| names.iter().find_map(|n| status_of_words(n)));
    let status = numeric.or_else(named).unwrap_or(500);
    let body = payload.to_string();
    classify(status, None, error_message(&body), &body)
}

fn classify(status: u16, retry_after: Option<Duration>, message: String, body: &str) -> LlmError {
    let body = body.to_ascii_lowercase();
    match status {
        401 | 403 => LlmError::Auth(message),
        // OpenAI answers an exhausted prepaid balance with a 429 that no wait will fix.
        429 if body.contains("insufficient_quota") => LlmError::BadRequest(message),
        429 => LlmError::RateLimited { message, retry_after },
        400 | 413 | 422 if mentions_context_length(&body) => LlmError::ContextTooLong(message),
        408 | 409 | 500..=599 => LlmError::Server { status, message, retry_after },
        400..=499 => LlmError::BadRequest(message),
        300..=399 => LlmError::BadRequest(format!("{message} (redirects are not followed: check the base URL)")),
        _ => LlmError::Protocol(format!("unexpected {message}")),
    }
}

/// The wordings of "prompt too long" across OpenAI, Anthropic, vLLM, llama.cpp, Ollama and
/// Gemini (`body` is lowercase).
fn mentions_context_length(body: &str) -> bool {
    const PHRASES: [&str; 9] = [
        "context_length_exceeded",
        "context length",
        "context window",
        "context size",
        "maximum context",
        "prompt is too long",
        "too many tokens",
        "input token count",
        "exceed_context_size",
    ];
    PHRASES.iter().any(|p| body.contains(p))
}

/// The HTTP status equivalent to an OpenAI `code`/`type` or Anthropic error `type`.
fn status_of_kind(kind: &str) -> Option<u16> {
    Some(match kind {
        "authentication_error" | "invalid_api_key" => 401,
        "permission_error" | "permission_denied" => 403,
        "not_found_error" | "model_not_found" => 404,
        "invalid_request_error" | "context_length_exceeded" | "exceed_context_size_error" => 400,
        "request_too_large" => 413,
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" => 429,
        "overloaded_error" => 529,
        "api_error" | "server_error" => 500,
        "timeout_error" => 504,
        _ => return None,
    })
}

/// The HTTP status an error name hints at by its words, for names no table lists
/// (`throttling_error`, Python exception names such as `RateLimitError`).
fn status_of_words(name: &str) -> Option<u16> {
    let name: String = name.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
    Some(if has(&["ratelimit", "throttl", "toomanyrequests", "quota"]) {
        429
    } else if has(&["auth", "apikey", "unauthori"]) {
        401
    } else if has(&["permission", "forbidden"]) {
        403
    } else if has(&["notfound"]) {
        404
    } else if has(&["badrequest", "invalidrequest", "unprocessable", "validation", "contextwindow", "contextlength"]) {
        400
    } else if has(&["timeout"]) {
        504
    } else if has(&["overload", "unavailable"]) {
        503
    } else {
        return None;
    })
}

/// The provider's own words from an error body: `error.message` (OpenAI, Anthropic),
/// `error` as a string (Ollama), `message` (vLLM) or `detail`; else the body itself.
/// Whitespace is collapsed and the result truncated.
pub(crate) fn error_message(body: &str) -> String {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let from_json = json.as_ref().and_then(|v| {
        let candidates =
            [v.get("error").and_then(|e| e.get("message")), v.get("error"), v.get("message"), v.get("detail")];
        candidates.into_iter().flatten().find_map(Value::as_str).map(str::to_owned)
    });
    let text = from_json.unwrap_or_else(|| body.to_owned());
    // Provider messages can quote (part of) the key they refused; users see these texts.
    let collapsed = text.split_whitespace().map(redact_key).collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(no error message)".to_owned();
    }
    truncate(&collapsed, MAX_MESSAGE_CHARS)
}

/// A word that holds something like an API key (or a masked one), also glued to other text
/// as in `api_key=sk-...`, becomes `[redacted]`.
fn redact_key(word: &str) -> &str {
    let looks_like_key = |piece: &str| {
        let prefixed = ["sk-", "sk_", "key-", "AIza", "xai-", "gsk_"].iter().any(|p| piece.starts_with(p));
        // Random-looking: long, and mixing upper case, lower case and digits (model names and
        // request ids are lower case).
        let opaque = piece.len() >= 24
            && piece.chars().any(|c| c.is_ascii_uppercase())
            && piece.chars().any(|c| c.is_ascii_lowercase())
            && piece.chars().any(|c| c.is_ascii_digit());
        prefixed || opaque
    };
    let key_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*');
    if word.split(|c: char| !key_chars(c)).any(looks_like_key) { "[redacted]" } else { word }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// The delay asked for by `retry-after-ms` (OpenAI, milliseconds) or else `retry-after`
/// (seconds or an HTTP date).
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(parse_non_negative) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    parse_retry_after(header("retry-after")?, now)
}

/// `Retry-After` as delta-seconds (fractions tolerated) or an IMF-fixdate; a date in the
/// past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(secs) = parse_non_negative(value) {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = DateTime::parse_from_rfc2822(value.trim()).ok()?;
    Some((date.with_timezone(&Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

fn parse_non_negative(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn http_errors_are_classified_by_status_and_body() {
        let openai_context = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        let anthropic_context = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 201000 tokens > 200000 maximum"}}"#;
        let llama_context = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#;
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota"}}"#;
        let cases: [(u16, &str, &str, bool); 17] = [
            (401, r#"{"error":{"message":"Incorrect API key provided"}}"#, "auth", false),
            (403, "forbidden", "auth", false),
            (400, r#"{"error":{"message":"temperature must be <= 2"}}"#, "bad_request", false),
            (404, r#"{"error":"model 'llama9' not found"}"#, "bad_request", false),
            (422, "unprocessable", "bad_request", false),
            (400, openai_context, "context_too_long", false),
            (400, anthropic_context, "context_too_long", false),
            (400, llama_context, "context_too_long", false),
            (413, "Too many tokens in the prompt", "context_too_long", false),
            (429, r#"{"error":{"message":"Rate limit reached"}}"#, "rate_limited", true),
            (429, quota, "bad_request", false),
            (408, "", "server", true),
            (409, "", "server", true),
            (500, "<html><body>Internal Server Error</body></html>", "server", true),
            (503, "", "server", true),
            (301, "", "bad_request", false),
            (529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, "server", true),
        ];
        for (status, body, kind, retryable) in cases {
            let err = classify_http(status, &HeaderMap::new(), body);
            assert_eq!(err.kind(), kind, "{status} {body}");
            assert_eq!(err.is_retryable(), retryable, "{status} {body}");
        }
    }

    #[test]
    fn error_text_carries_the_provider_message_truncated() {
        let err = classify_http(401, &HeaderMap::new(), r#"{"error":{"message":"Incorrect API key provided"}}"#);
        assert_eq!(err.to_string(), "the provider rejected the credentials: HTTP 401: Incorrect API key provided");
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(1000));
        let LlmError::Server { message, .. } = classify_http(502, &HeaderMap::new(), &long) else { panic!() };
        assert_eq!(message.chars().count(), "HTTP 502: ".len() + MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(error_message("  \n "), "(no error message)");
    }

    #[test]
    fn keys_quoted_by_the_provider_are_redacted() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys."}}"#;
        let text = classify_http(401, &HeaderMap::new(), body).to_string();
        assert!(!text.contains("abcd") && text.contains("[redacted]"), "{text}");
        assert!(text.contains("Incorrect API key provided"), "{text}");
        let text = error_message("invalid x-api-key 0a1B2c3D4e5F6g7H8i9J0k1L2m3N");
        assert_eq!(text, "invalid x-api-key [redacted]");
        assert_eq!(error_message("bad api_key=sk-abc123; try again"), "bad [redacted] try again");
        // Model names and the like stay readable.
        let text = error_message("model claude-3-5-sonnet-20241022 not found (request req_0123456789abcdef0123)");
        assert_eq!(text, "model claude-3-5-sonnet-20241022 not found (request req_0123456789abcdef0123)");
    }

    #[test]
    fn the_configured_key_is_redacted_by_value() {
        let key = "3f9a1c0d5e6b7a8f9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f6978";
        let masked = "3f9a1c0d****6978";
        let cases = [
            format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}"}}}}"#),
            format!("key {masked} refused"),
            format!("see https://llm.example/v1?api_key={key}&x=1"),
            "tail only: ...d9e0f6978\tand more".to_owned(),
        ];
        for body in cases {
            let err = classify_http(401, &HeaderMap::new(), &body).without_secret(key);
            let text = err.to_string();
            assert!(!text.contains(key) && !text.contains("3f9a1c0d") && !text.contains("d9e0f6978"), "{text}");
            assert!(!err.public_message().contains("3f9a"), "{}", err.public_message());
        }
        assert_eq!(redact_secret("nothing here", key), "nothing here");
        assert_eq!(redact_secret("short abc key", "abc"), "short [redacted] key");
        assert_eq!(redact_secret("no secret", ""), "no secret");
    }

    #[test]
    fn users_see_the_class_of_failure_not_the_provider_text() {
        let err = classify_http(401, &HeaderMap::new(), r#"{"error":{"message":"Incorrect API key provided: zz"}}"#);
        let public = UserFacing(err);
        assert_eq!(public.to_string(), "the provider rejected Parley's credentials; an admin has been told");
        assert!(public.detail().contains("Incorrect API key provided"));
        let chained = format!("{:#}", anyhow::Error::new(public));
        assert!(!chained.contains("Incorrect"), "{chained}");
    }

    #[test]
    fn retry_after_is_read_as_seconds_milliseconds_or_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(&[("retry-after", "1.5")]), now), Some(Duration::from_millis(1500)));
        let both = headers(&[("retry-after", "2"), ("retry-after-ms", "250")]);
        assert_eq!(retry_after(&both, now), Some(Duration::from_millis(250)));
        let date = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn rate_limit_and_server_errors_keep_retry_after() {
        let h = headers(&[("retry-after", "12")]);
        let err = classify_http(429, &h, "slow down");
        assert!(matches!(err, LlmError::RateLimited { .. }));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(12)));
        assert_eq!(classify_http(503, &h, "").retry_after(), Some(Duration::from_secs(12)));
        assert_eq!(classify_http(400, &h, "").retry_after(), None);
    }

    #[test]
    fn stream_errors_are_classified_by_code_or_type() {
        let cases = [
            (r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, "server", Some(529)),
            (r#"{"type":"error","error":{"type":"api_error","message":"Internal"}}"#, "server", Some(500)),
            (r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#, "rate_limited", None),
            (r#"{"error":{"message":"boom","type":"server_error","code":null}}"#, "server", Some(500)),
            (
                r#"{"error":{"message":"x","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
                "context_too_long",
                None,
            ),
            (
                r#"{"error":{"object":"error","message":"bad","type":"BadRequestError","code":400}}"#,
                "bad_request",
                None,
            ),
            (r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#, "server", Some(503)),
            (r#"{"error":{"message":"something odd"}}"#, "server", Some(500)),
            // LiteLLM's proxy: the code is a string, the type a name of its own.
            (
                r#"{"error":{"message":"litellm.RateLimitError: RateLimitError: OpenAIException - slow","type":"throttling_error","param":null,"code":"429"}}"#,
                "rate_limited",
                None,
            ),
            (r#"{"error":{"message":"bad key","type":"auth_error","param":null,"code":"401"}}"#, "auth", None),
            (r#"{"error":{"message":"bad","type":"None","param":null,"code":"400"}}"#, "bad_request", None),
            (r#"{"error":{"message":"down","type":"None","code":"503"}}"#, "server", Some(503)),
            // No code: the words of the type.
            (r#"{"error":{"message":"slow","type":"throttling_error"}}"#, "rate_limited", None),
            (r#"{"error":{"message":"who?","type":"AuthenticationError"}}"#, "auth", None),
            (r#"{"error":{"message":"no","type":"BadRequestError"}}"#, "bad_request", None),
            (r#"{"error":{"message":"odd","type":"weird_error","code":"E42"}}"#, "server", Some(500)),
        ];
        for (payload, kind, status) in cases {
            let err = classify_stream_error(&serde_json::from_str(payload).unwrap());
            assert_eq!(err.kind(), kind, "{payload}");
            if let LlmError::Server { status: s, .. } = err {
                assert_eq!(Some(s), status, "{payload}");
            }
        }
    }
}
