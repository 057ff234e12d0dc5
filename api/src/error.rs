//! The one error type of the HTTP layer and its JSON envelope:
//! `{"error": {"code", "message", "fields"?}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_shared::StoreError;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The error envelope every non-2xx answer uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// A machine-readable `code`, a human-readable `message`, and per-field messages for
/// validation errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "validation_error")]
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Vec<String>>>,
    /// With `quota_exceeded`: when the spent budget resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation { message: String, fields: BTreeMap<String, Vec<String>> },
    /// 400: a request the server cannot read (a malformed body, query, header or token).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 422: a well-formed request whose content is refused (an image that does not decode).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 409: the resource's state does not allow this (a finished job, a verified address).
    #[error("{message}")]
    StateConflict { code: &'static str, message: String },
    /// 413: the body, or what it holds (an image), is larger than allowed.
    #[error("{message}")]
    PayloadTooLarge { code: &'static str, message: String },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    /// 503: the server cannot do this until an operator acts (no model configured).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthorized,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("admin rights required")]
    Forbidden,
    /// 403: a request authenticated by the browser's session cookie without the CSRF token.
    #[error("the CSRF token is missing or wrong; reload the page")]
    CsrfFailed,
    #[error("not found")]
    NotFound,
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    /// 429 `quota_exceeded`: a token budget is spent until `resets_at`.
    #[error("{message}")]
    QuotaExceeded { message: String, resets_at: chrono::DateTime<chrono::Utc> },
    /// 410: the resource existed and is gone for good (an expired export).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// 403 for something the caller's account may not do (a model it may not use).
    #[error("{message}")]
    NotAllowed { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A validation error on one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::default();
        errors.add(field, message);
        errors.into()
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::StateConflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::PayloadTooLarge { code, .. } => (StatusCode::PAYLOAD_TOO_LARGE, code),
            ApiError::UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::CsrfFailed => (StatusCode::FORBIDDEN, "csrf_failed"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            ApiError::NotAllowed { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::Gone { code, .. } => (StatusCode::GONE, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict { field } => ApiError::Conflict { field },
            StoreError::InvalidText => {
                ApiError::Unprocessable { code: "invalid_text", message: "text must not contain NUL characters".into() }
            }
            StoreError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

/// Whether `err` comes from the app database being out of reach (connections refused or
/// cut, the pool timed out): a passing condition, answered 503 with `Retry-After`, not 500.
fn database_unavailable(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<sqlx::Error>()).any(|e| match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // PostgreSQL: connection exceptions (08), operator intervention (57: shut down,
        // connection terminated), no new connections allowed (55000 on connect).
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c == "55000")
        }
        _ => false,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self
            && database_unavailable(err)
        {
            tracing::warn!(error = format!("{err:#}"), "the database is unavailable");
            let body = ErrorEnvelope {
                error: ErrorBody {
                    code: "database_unavailable",
                    message: "the database is unavailable; retry shortly".into(),
                    fields: None,
                    resets_at: None,
                },
            };
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            return response;
        }
        let (status, code) = self.status_and_code();
        let (message, fields) = match &self {
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "request failed");
                ("internal server error".to_owned(), None)
            }
            ApiError::Validation { message, fields } => (message.clone(), Some(fields.clone())),
            ApiError::Conflict { field } => {
                (self.to_string(), Some(BTreeMap::from([(field.to_string(), vec!["is already taken".to_owned()])])))
            }
            other => (other.to_string(), None),
        };
        let resets_at = match &self {
            ApiError::QuotaExceeded { resets_at, .. } => Some(*resets_at),
            _ => None,
        };
        let body = ErrorEnvelope { error: ErrorBody { code, message, fields, resets_at } };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::QuotaExceeded { resets_at, .. } => {
                let secs = (resets_at - chrono::Utc::now()).num_seconds().max(1) as u64;
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::RateLimited { retry_after_secs } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            ApiError::Unauthorized | ApiError::InvalidCredentials => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

pub use parley_shared::domain::FieldErrors;

impl From<parley_shared::usecases::quota::QuotaError> for ApiError {
    fn from(err: parley_shared::usecases::quota::QuotaError) -> Self {
        use parley_shared::usecases::quota::QuotaError;
        match err {
            QuotaError::ConfigNotAllowed => ApiError::NotAllowed {
                code: "model_not_allowed",
                message: "this model is not one your account may use".into(),
            },
            QuotaError::Exceeded { period, resets_at } => ApiError::QuotaExceeded {
                message: format!(
                    "your {} token budget is spent; it resets at {}",
                    period.as_str(),
                    resets_at.to_rfc3339()
                ),
                resets_at,
            },
            QuotaError::Store(e) => e.into(),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::Validation { message: errors.summary(), fields: errors.into_map() }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
