//! `send_email`: renders and sends one account email. The job makes any token itself (so no
//! secret sits in the queue) and records what it sent, so a re-run sends nothing twice.

use super::{JobError, payload};
use crate::WorkerContext;
use parley_shared::jobs::{EmailKind, SendEmail};
use parley_shared::mail::{PermanentMailError, TemplateName};
use parley_shared::store::jobs::Job;
use parley_shared::store::{email_tokens, users};
use serde_json::json;

pub const VERIFY_TTL_SECS: i64 = 24 * 3600;
pub const RESET_TTL_SECS: i64 = 30 * 60;

pub async fn run(ctx: &WorkerContext, job: &Job) -> Result<serde_json::Value, JobError> {
    let p: SendEmail = payload(job)?;
    let job_key = job.id.to_string();
    let pool = &ctx.db.pool;
    if let Some(message_id) = email_tokens::delivery_recorded(pool, &job_key).await? {
        tracing::info!("email already sent by an earlier attempt");
        return Ok(json!({"message_id": message_id}));
    }
    let user = users::by_id(pool, p.user_id).await?.ok_or_else(|| JobError::fatal("the user no longer exists"))?;
    let base = &ctx.config.public_url;
    let (template, link, expires_in) = match p.email {
        EmailKind::VerifyEmail => {
            if user.email_verified {
                return Ok(json!({"skipped": "the address is already verified"}));
            }
            let token = email_tokens::issue(pool, user.id, email_tokens::VERIFY_EMAIL, VERIFY_TTL_SECS).await?;
            (TemplateName::VerifyEmail, format!("{base}/verify-email?token={token}"), "24 hours")
        }
        EmailKind::PasswordReset => {
            let token = email_tokens::issue(pool, user.id, email_tokens::PASSWORD_RESET, RESET_TTL_SECS).await?;
            (TemplateName::PasswordReset, format!("{base}/reset-password?token={token}"), "30 minutes")
        }
        EmailKind::PasswordChanged => (TemplateName::PasswordChanged, format!("{base}/reset-password"), ""),
    };
    let context = json!({"display_name": user.display_name, "link": link, "expires_in": expires_in});
    let email = ctx.templates.render(template, &context).map_err(JobError::Fatal)?;
    let message_id = ctx
        .mailer
        .send(&user.email, &email)
        .await
        .map_err(|e| if e.is::<PermanentMailError>() { JobError::Fatal(e) } else { JobError::from(e) })?;
    email_tokens::record_delivery(pool, &job_key, template.as_str(), &message_id).await?;
    tracing::info!(user.id = %user.id, template = template.as_str(), "email sent");
    Ok(json!({"message_id": message_id, "template": template.as_str()}))
}
