//! The activity log: security events (sign-ins, factor changes, admin actions) with who did
//! what to whom, the outcome, and where from. Entries are only ever added, and deleted by
//! age (the `prune_audit` schedule, [`prune`]); passwords, tokens and codes never enter them.

use crate::Db;
use crate::error::StoreError;
use crate::ids::UserId;
use crate::jobs::UnknownValue;
use crate::store::Exec;
use serde::Serialize;

macro_rules! actions {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum AuditAction {
            $($(#[$meta])* #[serde(rename = $name)] $variant,)*
        }

        impl AuditAction {
            pub const ALL: &[AuditAction] = &[$(AuditAction::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    UserSignup = "user.signup",
    /// A password sign-in (a failure is logged after its throttle).
    Login = "auth.login",
    Logout = "auth.logout",
    /// A rotated refresh token presented again: the session is ended.
    RefreshTokenReuse = "auth.refresh_token_reuse",
    PasswordChange = "password.change",
    PasswordReset = "password.reset",
    EmailVerify = "email.verify",
    /// A TOTP factor set up (not yet confirmed).
    MfaEnroll = "mfa.totp.enroll",
    MfaConfirm = "mfa.totp.confirm",
    /// A second factor presented at sign-in.
    MfaVerify = "mfa.verify",
    RecoveryCodeUse = "mfa.recovery_code.use",
    RecoveryCodesRegenerate = "mfa.recovery_codes.regenerate",
    MfaDisable = "mfa.totp.disable",
    /// A session ended by its owner from the session list.
    SessionEnd = "session.end",
    /// A provider account linked to a user (by a verified email, or with a new account).
    IdentityLink = "identity.link",
    IdentityUnlink = "identity.unlink",
    /// A personal API key made or revoked by its owner.
    ApiKeyCreate = "api_key.create",
    ApiKeyRevoke = "api_key.revoke",
    AdminUserUpdate = "admin.user.update",
    AdminUserDelete = "admin.user.delete",
    AdminMfaRemove = "admin.mfa.remove",
    AdminLlmConfigCreate = "admin.llm_config.create",
    AdminLlmConfigUpdate = "admin.llm_config.update",
    AdminLlmConfigDelete = "admin.llm_config.delete",
    AdminJobCreate = "admin.job.create",
    AdminJobRetry = "admin.job.retry",
    AdminApiKeyRevoke = "admin.api_key.revoke",
}

// By hand: the derive cannot read the names the macro passes to `serde(rename)`.
impl utoipa::PartialSchema for AuditAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(AuditAction::ALL.iter().map(|a| a.as_str())))
            .description(Some("What happened."))
            .into()
    }
}

impl utoipa::ToSchema for AuditAction {}

impl AuditAction {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

impl TryFrom<String> for AuditAction {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownValue { what: "audit action", value: s })
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Success,
    Failure,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Success => "success",
            AuditResult::Failure => "failure",
        }
    }
}

impl TryFrom<String> for AuditResult {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "success" => Ok(AuditResult::Success),
            "failure" => Ok(AuditResult::Failure),
            _ => Err(UnknownValue { what: "audit result", value: s }),
        }
    }
}

/// An event to record; built with the request's address and user agent, then
/// [`record`](AuditEvent::record)ed, in the transaction of the change it describes when
/// there is one.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: AuditAction,
    pub result: AuditResult,
    pub actor: Option<UserId>,
    pub target: Option<UserId>,
    pub ip: String,
    pub user_agent: String,
    /// Ids and outcomes only: never a password, token or code.
    pub details: Option<serde_json::Value>,
}

impl AuditEvent {
    pub fn new(action: AuditAction, ip: &str, user_agent: &str) -> Self {
        Self {
            action,
            result: AuditResult::Success,
            actor: None,
            target: None,
            ip: ip.to_owned(),
            user_agent: user_agent.chars().take(255).collect(),
            details: None,
        }
    }

    /// The user acting on their own account: actor and target.
    pub fn by(self, user: UserId) -> Self {
        self.actor(user).target(user)
    }

    pub fn actor(mut self, user: UserId) -> Self {
        self.actor = Some(user);
        self
    }

    pub fn target(mut self, user: UserId) -> Self {
        self.target = Some(user);
        self
    }

    pub fn failure(mut self) -> Self {
        self.result = AuditResult::Failure;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub async fn record<'e>(self, ex: impl Exec<'e>) -> Result<(), StoreError> {
        crate::store::audit::insert(ex, &self).await
    }
}

/// Deletes entries older than `retention_days`; how many went.
pub async fn prune(db: &Db, retention_days: u64) -> Result<u64, StoreError> {
    let age_ms = i64::try_from(retention_days).unwrap_or(i64::MAX / 86_400_000).saturating_mul(86_400_000);
    crate::store::audit::delete_before(&db.writer, crate::time::now_ms().saturating_sub(age_ms)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_back_from_its_name() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(*action));
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
        assert!(AuditAction::try_from("auth.nope".to_owned()).is_err());
    }
}
