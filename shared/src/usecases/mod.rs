//! Use cases, each one function, so that the HTTP handlers (and start-up, and jobs) that
//! run them stay thin: a handler parses, calls one of these, and shapes the answer.

pub mod accounts;
pub mod api_completion;
pub mod chat;
pub mod email;
pub mod exports;
pub mod identity;
pub mod llm_config;
pub mod mfa;
pub mod quota;
