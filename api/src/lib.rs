//! Parley's HTTP API: axum routes, extractors, OpenAPI.

pub mod audit;
pub mod error;
pub mod extract;
pub mod headers;
pub mod idempotency;
pub mod metrics;
pub mod mfa;
pub mod openapi;
pub mod pagination;
pub mod ratelimit;
pub mod routes;
pub mod sse;
pub mod startup;
pub mod state;
pub mod tokens;
pub mod v1;
pub mod views;
pub mod web;

pub use startup::Application;
