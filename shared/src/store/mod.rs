//! Stores: query functions over any executor (the pool, a connection or a transaction), so a
//! caller can compose several writes, and an enqueue, in one transaction. The SQL is the
//! portable subset that SQLite and PostgreSQL share.

pub mod api_completions;
pub mod api_keys;
pub mod audit;
pub mod chat;
pub mod email_tokens;
pub mod exports;
pub mod idempotency;
pub mod identities;
pub mod job_events;
pub mod jobs;
pub mod llm_configs;
pub mod mfa;
pub mod quotas;
pub mod secrets;
pub mod sessions;
pub mod shares;
pub mod stats;
pub mod usage;
pub mod users;

/// Anything a query can run on: `&AnyPool`, `&mut AnyConnection`, `&mut Transaction<Any>`.
pub trait Exec<'e>: sqlx::Executor<'e, Database = sqlx::Any> {}
impl<'e, T: sqlx::Executor<'e, Database = sqlx::Any>> Exec<'e> for T {}

/// `s` matched literally by `like ... escape '\'`.
pub(crate) fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
