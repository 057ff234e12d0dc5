//! Everything the Parley binaries share: configuration, domain types, the stores over
//! SQLite and PostgreSQL, and the authentication primitives.

pub mod audit;
pub mod auth;
pub mod avatar;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod exports;
pub mod ids;
pub mod jobs;
pub mod llm;
pub mod mail;
pub mod media;
pub mod metrics;
pub mod oauth;
pub mod queue;
pub mod redis_sub;
pub mod schedules;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod usecases;

pub use config::Config;
pub use db::Db;
pub use error::StoreError;
