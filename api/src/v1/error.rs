//! OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, with OpenAI's
//! status codes, so its SDKs raise the matching exception.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_shared::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

/// OpenAI's error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorEnvelope {
    pub error: OpenAiErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `rate_limit_error`, `api_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code, retry_after_secs: None }
    }

    /// 400: a request that cannot be served as sent; `param` names the field.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { param, ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message) }
    }

    /// 400 for a field or value this server does not support.
    pub fn unsupported(param: &'static str, message: impl Into<String>) -> Self {
        Self { param: Some(param), code: Some("unsupported_parameter"), ..Self::invalid(None, message) }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: create one with POST /api/users/me/api-keys/.",
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", Some(code), message)
    }

    pub fn model_not_found(model: &str) -> Self {
        let message = format!("The model `{model}` does not exist: GET /v1/models lists the models you can use.");
        Self {
            param: Some("model"),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"), message)
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", Some(code), message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                "Too many requests with this API key: retry after the time in Retry-After.",
            )
        }
    }

    /// 429 `insufficient_quota` (OpenAI's code for a spent budget), with Retry-After until
    /// the budget resets.
    pub fn quota_exceeded(message: String, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", Some("quota_exceeded"), message)
        }
    }

    /// 502: the provider failed (after the job's retries).
    pub fn provider_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "api_error", Some("provider_error"), message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "The server had an error processing your request.",
        )
    }

    /// The envelope, also sent as an error inside a stream.
    pub fn body(&self) -> OpenAiErrorEnvelope {
        OpenAiErrorEnvelope {
            error: OpenAiErrorBody {
                message: self.message.clone(),
                kind: self.kind.to_owned(),
                param: self.param.map(str::to_owned),
                code: self.code.map(str::to_owned),
            },
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for OpenAiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = format!("{:#}", anyhow::Error::from(err)), "request failed");
        OpenAiError::internal()
    }
}

impl From<sqlx::Error> for OpenAiError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

impl From<parley_shared::usecases::quota::QuotaError> for OpenAiError {
    fn from(err: parley_shared::usecases::quota::QuotaError) -> Self {
        use parley_shared::usecases::quota::QuotaError;
        match err {
            QuotaError::ConfigNotAllowed => {
                OpenAiError::forbidden("model_not_allowed", "Your account may not use this model.")
            }
            QuotaError::Exceeded { period, resets_at } => {
                let secs = (resets_at - chrono::Utc::now()).num_seconds().max(1) as u64;
                OpenAiError::quota_exceeded(
                    format!("Your {} token budget is spent; it resets at {}.", period.as_str(), resets_at.to_rfc3339()),
                    secs,
                )
            }
            QuotaError::Store(e) => e.into(),
        }
    }
}

impl From<crate::error::ApiError> for OpenAiError {
    fn from(err: crate::error::ApiError) -> Self {
        match err {
            crate::error::ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                OpenAiError::internal()
            }
            other => OpenAiError::invalid(None, other.to_string()),
        }
    }
}
