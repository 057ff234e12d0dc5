//! Single-use tokens sent by email (verification, password reset), stored hashed.

use super::Exec;
use crate::auth::{hash_token, random_token};
use crate::error::StoreError;
use crate::ids::UserId;
use crate::time::now_ms;

pub const VERIFY_EMAIL: &str = "verify_email";
pub const PASSWORD_RESET: &str = "password_reset";

/// Makes a token for `user` valid for `ttl_secs`, replacing the user's unused tokens of the
/// same purpose. Returns the token in clear (to put in the link; never stored).
pub async fn issue<'e, E: Exec<'e> + Copy>(
    ex: E,
    user: UserId,
    purpose: &str,
    ttl_secs: i64,
) -> Result<String, StoreError> {
    let token = random_token();
    let now = now_ms();
    sqlx::query("delete from email_tokens where user_id = $1 and purpose = $2 and used_at is null")
        .bind(user.to_string())
        .bind(purpose)
        .execute(ex)
        .await?;
    sqlx::query(
        "insert into email_tokens (token_hash, user_id, purpose, expires_at, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $5)",
    )
    .bind(hash_token(&token))
    .bind(user.to_string())
    .bind(purpose)
    .bind(now + ttl_secs * 1000)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(token)
}

/// Uses a token: returns its user if it exists, has this purpose, is unexpired and unused.
pub async fn consume<'e, E: Exec<'e>>(ex: E, token: &str, purpose: &str) -> Result<Option<UserId>, StoreError> {
    let now = now_ms();
    let row: Option<(String,)> = sqlx::query_as(
        "update email_tokens set used_at = $3, updated_at = $3
         where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3 returning user_id",
    )
    .bind(hash_token(token))
    .bind(purpose)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    Ok(row.and_then(|(id,)| id.parse().ok()))
}

/// The user of a usable token, without using it.
pub async fn peek<'e, E: Exec<'e>>(ex: E, token: &str, purpose: &str) -> Result<Option<UserId>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "select user_id from email_tokens where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3",
    )
    .bind(hash_token(token))
    .bind(purpose)
    .bind(now_ms())
    .fetch_optional(ex)
    .await?;
    Ok(row.and_then(|(id,)| id.parse().ok()))
}

/// What an earlier attempt of an email job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// No attempt has started sending: this one may.
    Claimed,
    /// An earlier attempt's send was accepted by the transport, with this message id.
    Sent(String),
    /// An earlier attempt started sending and never recorded the outcome (its process
    /// died): the email may have gone out, so it is not sent again.
    Interrupted,
}

/// Claims the sending of job `job_id`'s email before it is handed to the transport, so a
/// re-run after a crash sends nothing twice (at most once). A failed send gives the claim
/// back with [`release_delivery`].
pub async fn claim_delivery<'e, E: Exec<'e> + Copy>(
    ex: E,
    job_id: &str,
    template: &str,
) -> Result<Delivery, StoreError> {
    let now = now_ms();
    let inserted = sqlx::query(
        "insert into email_deliveries (job_id, template, message_id, created_at, updated_at) values ($1, $2, '', $3, $3)
         on conflict (job_id) do nothing",
    )
    .bind(job_id)
    .bind(template)
    .bind(now)
    .execute(ex)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Delivery::Claimed);
    }
    let row: Option<(String,)> = sqlx::query_as("select message_id from email_deliveries where job_id = $1")
        .bind(job_id)
        .fetch_optional(ex)
        .await?;
    Ok(match row {
        Some((m,)) if !m.is_empty() => Delivery::Sent(m),
        _ => Delivery::Interrupted,
    })
}

/// Records that the claimed email of `job_id` was accepted by the transport.
pub async fn record_delivery<'e, E: Exec<'e>>(ex: E, job_id: &str, message_id: &str) -> Result<(), StoreError> {
    sqlx::query("update email_deliveries set message_id = $2, updated_at = $3 where job_id = $1")
        .bind(job_id)
        .bind(message_id)
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

/// Gives back a claim whose send failed before the transport accepted the email, so a
/// retry may send it.
pub async fn release_delivery<'e, E: Exec<'e>>(ex: E, job_id: &str) -> Result<(), StoreError> {
    sqlx::query("delete from email_deliveries where job_id = $1 and message_id = ''").bind(job_id).execute(ex).await?;
    Ok(())
}
