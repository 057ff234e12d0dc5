//! Second factors at sign-in: the challenge a password sign-in answers when the account has
//! a confirmed factor, and the per-account limit on failed attempts.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tokens::TokenPair;
use parley_shared::audit::{AuditAction, AuditResult};
use parley_shared::auth::{hash_token, random_token};
use parley_shared::config::MFA_FAILURE_WINDOW_SECS;
use parley_shared::ids::UserId;
use parley_shared::store::{audit, mfa};
use parley_shared::time::now_ms;
use parley_shared::usecases::mfa::CHALLENGE_TTL_SECS;
use serde::Serialize;
use utoipa::ToSchema;

/// A password sign-in that needs its second factor: send `mfa_token` with a code to
/// `POST /api/auth/mfa/verify/`. It is accepted nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaChallenge {
    /// Always `true`.
    pub mfa_required: bool,
    pub mfa_token: String,
    /// Seconds until `mfa_token` expires.
    pub expires_in: i64,
}

/// What a password sign-in answers: a token pair, or a second-factor challenge.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Tokens(TokenPair),
    MfaRequired(MfaChallenge),
}

/// A challenge for `user` when the account has a confirmed factor; `amr` is how the first
/// step signed in (`pwd`, `oauth`).
pub async fn challenge_if_enrolled(state: &AppState, user: UserId, amr: &str) -> ApiResult<Option<MfaChallenge>> {
    let confirmed = mfa::get_totp(&state.db.pool, user).await?.is_some_and(|f| f.confirmed_at.is_some());
    if !confirmed {
        return Ok(None);
    }
    let token = random_token();
    let expires_at = now_ms() + CHALLENGE_TTL_SECS * 1000;
    mfa::create_challenge(&state.db.writer, &hash_token(&token), user, amr, expires_at).await?;
    Ok(Some(MfaChallenge { mfa_required: true, mfa_token: token, expires_in: CHALLENGE_TTL_SECS }))
}

/// Refuses with 429 once `user` has had `PARLEY_MFA_MAX_FAILURES` failed second-factor
/// attempts in the window (counted in the activity log, so every API process agrees).
pub async fn check_failure_limit(state: &AppState, user: UserId) -> ApiResult<()> {
    let window_ms = MFA_FAILURE_WINDOW_SECS * 1000;
    let now = now_ms();
    let (failures, oldest) =
        audit::count_since(&state.db.pool, user, AuditAction::MfaVerify, AuditResult::Failure, now - window_ms).await?;
    if failures >= state.config.mfa_max_failures {
        let wait_ms = oldest.map_or(window_ms, |t| t + window_ms - now).max(1000);
        return Err(ApiError::RateLimited { retry_after_secs: u64::try_from((wait_ms + 999) / 1000).unwrap_or(1) });
    }
    Ok(())
}

/// A second-factor code as presented.
#[derive(Debug, Clone, Copy)]
pub enum Code<'a> {
    Totp(&'a str),
    Recovery(&'a str),
}

impl Code<'_> {
    fn method(self) -> &'static str {
        match self {
            Code::Totp(_) => "totp",
            Code::Recovery(_) => "recovery_code",
        }
    }
}

/// Checks `code` against `user`'s confirmed factor and spends it: a TOTP code's time step
/// (so the code, or an older one, is refused from then on) or a recovery code. `Ok(false)`
/// when refused. Every attempt is logged, and failures count towards the per-account limit.
pub async fn spend_code(
    state: &AppState,
    meta: &crate::audit::RequestMeta,
    user: UserId,
    code: Code<'_>,
    purpose: &'static str,
) -> ApiResult<bool> {
    use parley_shared::usecases::mfa as totp;
    check_failure_limit(state, user).await?;
    let factor = mfa::get_totp(&state.db.pool, user).await?.filter(|f| f.confirmed_at.is_some());
    let outcome = match (factor, code) {
        (None, _) => Err("no_factor"),
        (Some(factor), Code::Totp(code)) => {
            let secret = totp::unseal(&state.keys, &factor.secret)?;
            match totp::check_code(&secret, code, totp::now_secs())? {
                None => Err("wrong_code"),
                Some(step) if mfa::use_step(&state.db.writer, user, step).await? => Ok(()),
                Some(_) => Err("replayed_code"),
            }
        }
        (Some(_), Code::Recovery(code)) => {
            let hash = totp::recovery_code_hash(&state.keys, user, code);
            if mfa::use_recovery_code(&state.db.writer, user, &hash).await? { Ok(()) } else { Err("wrong_code") }
        }
    };
    let details = serde_json::json!({"method": code.method(), "purpose": purpose});
    match outcome {
        Ok(()) => {
            meta.event(AuditAction::MfaVerify).target(user).details(details).record(&state.db.writer).await?;
            if let Code::Recovery(_) = code {
                let left = mfa::recovery_codes_left(&state.db.pool, user).await?;
                let details = serde_json::json!({"purpose": purpose, "codes_left": left});
                meta.event(AuditAction::RecoveryCodeUse).target(user).details(details).record(&state.db.writer).await?;
            }
            Ok(true)
        }
        Err(reason) => {
            let mut details = details;
            details["reason"] = reason.into();
            meta.event(AuditAction::MfaVerify).target(user).failure().details(details).record(&state.db.writer).await?;
            tracing::info!(user.id = %user, reason, "second factor refused");
            Ok(false)
        }
    }
}
