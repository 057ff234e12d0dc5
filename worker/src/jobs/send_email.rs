//! `send_email`: renders and sends one account email. The job makes any token itself (so no
//! secret sits in the queue) and records what it sent, so a re-run sends nothing twice.

use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use parley_shared::jobs::{EmailKind, SendEmail};
use parley_shared::mail::{PermanentMailError, TemplateName};
use parley_shared::store::email_tokens::Delivery;
use parley_shared::store::jobs::Job;
use parley_shared::store::users::User;
use parley_shared::store::{email_tokens, users};
use serde_json::json;

pub const VERIFY_TTL_SECS: i64 = 24 * 3600;
pub const RESET_TTL_SECS: i64 = 30 * 60;

impl RunJob for SendEmail {
    async fn run(self, ctx: &WorkerContext, job: &Job, _cancel: CancelSignal) -> Outcome {
        send(self, ctx, job).await.into()
    }
}

async fn send(p: SendEmail, ctx: &WorkerContext, job: &Job) -> Result<serde_json::Value, JobError> {
    let job_key = job.id.to_string();
    let pool = &ctx.db.writer;
    let user = users::by_id(pool, p.user_id).await?.ok_or_else(|| JobError::fatal("the user no longer exists"))?;
    let template = match p.email {
        EmailKind::VerifyEmail => TemplateName::VerifyEmail,
        EmailKind::PasswordReset => TemplateName::PasswordReset,
        EmailKind::PasswordChanged => TemplateName::PasswordChanged,
        EmailKind::RegistrationAttempt => TemplateName::RegistrationAttempt,
        EmailKind::MfaEnabled => TemplateName::MfaEnabled,
        EmailKind::MfaDisabled => TemplateName::MfaDisabled,
        EmailKind::MfaRemovedByAdmin => TemplateName::MfaRemovedByAdmin,
        EmailKind::RecoveryCodesRegenerated => TemplateName::RecoveryCodesRegenerated,
        EmailKind::RecoveryCodeUsed => TemplateName::RecoveryCodeUsed,
    };
    if template == TemplateName::VerifyEmail && user.email_verified {
        return Ok(json!({"skipped": "the address is already verified"}));
    }
    // The claim comes before the token and the send: a re-run after a crash finds it and
    // sends nothing (and issues no second token that would void the first link).
    match email_tokens::claim_delivery(pool, &job_key, template.as_str()).await? {
        Delivery::Claimed => {}
        Delivery::Sent(message_id) => {
            tracing::info!("email already sent by an earlier attempt");
            return Ok(json!({"message_id": message_id, "template": template.as_str()}));
        }
        Delivery::Interrupted => {
            tracing::warn!("an earlier attempt was cut off while sending; not sending again");
            return Err(JobError::fatal(
                "an earlier attempt was cut off while sending, so the email may have gone out; \
                 not sent again (an admin retry sends it)",
            ));
        }
    }
    match prepare_and_send(ctx, &user, template).await {
        Ok(message_id) => {
            email_tokens::record_delivery(pool, &job_key, &message_id).await?;
            tracing::info!(user.id = %user.id, template = template.as_str(), "email sent");
            Ok(json!({"message_id": message_id, "template": template.as_str()}))
        }
        Err(e) => {
            // The transport did not take the email: a retry may send it.
            email_tokens::release_delivery(pool, &job_key).await?;
            Err(e)
        }
    }
}

/// Issues the link's token, renders the email and hands it to the transport: the message id.
async fn prepare_and_send(ctx: &WorkerContext, user: &User, template: TemplateName) -> Result<String, JobError> {
    let pool = &ctx.db.writer;
    let base = &ctx.config.public_url;
    let (link, expires_in) = match template {
        TemplateName::VerifyEmail => {
            let token = email_tokens::issue(pool, user.id, email_tokens::VERIFY_EMAIL, VERIFY_TTL_SECS).await?;
            (format!("{base}/verify-email?token={token}"), "24 hours")
        }
        TemplateName::PasswordReset => {
            let token = email_tokens::issue(pool, user.id, email_tokens::PASSWORD_RESET, RESET_TTL_SECS).await?;
            (format!("{base}/reset-password?token={token}"), "30 minutes")
        }
        TemplateName::PasswordChanged | TemplateName::RegistrationAttempt => (format!("{base}/reset-password"), ""),
        // Security notices: the link leads to the account's security settings.
        TemplateName::MfaEnabled
        | TemplateName::MfaDisabled
        | TemplateName::MfaRemovedByAdmin
        | TemplateName::RecoveryCodesRegenerated
        | TemplateName::RecoveryCodeUsed => (format!("{base}/account"), ""),
    };
    let context = json!({"display_name": user.display_name, "link": link, "expires_in": expires_in});
    let email = ctx.templates.render(template, &context).map_err(JobError::Fatal)?;
    ctx.mailer
        .send(&user.email, &email)
        .await
        .map_err(|e| if e.is::<PermanentMailError>() { JobError::Fatal(e) } else { JobError::from(e) })
}
