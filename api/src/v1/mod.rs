//! What the OpenAI-compatible `/v1` endpoints share: OpenAI's error shape, authentication
//! by personal API key (accepted here only, never on the account, admin or key-management
//! routes), reading OpenAI's request, and answering from the job that runs it.

pub mod answer;
pub mod auth;
pub mod error;
pub mod request;

pub use auth::ApiKeyAuth;
pub use error::{OpenAiError, OpenAiErrorBody, OpenAiErrorEnvelope};
