//! Signing in through an identity provider: which account a provider account belongs to.
//!
//! A known (provider, subject) signs in to its account. Otherwise an email the provider
//! vouches for links to the account with that email, but only if that account verified it
//! too; with no such account, a new one is made (without a password). An email the provider
//! does not vouch for never links.

use crate::Db;
use crate::domain::Email;
use crate::error::StoreError;
use crate::jobs::EmailKind;
use crate::store::identities;
use crate::store::users::{self, NewUser, User};

/// What the provider says about the signed-in account.
#[derive(Debug, Clone)]
pub struct ProviderAccount {
    pub provider: String,
    /// The provider's stable id for the account.
    pub subject: String,
    pub email: Option<String>,
    /// Whether the provider vouches for `email`.
    pub email_verified: bool,
}

/// How the provider account was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A known identity.
    Known,
    /// Linked to the existing account with the same, verified email.
    Linked,
    /// A new account.
    Created,
}

/// Why a provider sign-in was refused (the code the client is redirected with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The provider gave no usable email for an unknown account.
    EmailRequired,
    /// An account has this email, and it cannot be linked: the provider or the account has
    /// not verified it.
    AccountExists,
    /// The account is deactivated.
    Inactive,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::EmailRequired => "email_required",
            Refusal::AccountExists => "account_exists",
            Refusal::Inactive => "account_inactive",
        }
    }
}

/// The account `account` signs in to, linking or creating it as the rules say.
pub async fn resolve(db: &Db, account: &ProviderAccount) -> Result<Result<(User, Outcome), Refusal>, StoreError> {
    if let Some(identity) = identities::find(&db.pool, &account.provider, &account.subject).await? {
        let user = users::by_id(&db.pool, identity.user_id).await?.ok_or(StoreError::NotFound)?;
        return Ok(if user.is_active { Ok((user, Outcome::Known)) } else { Err(Refusal::Inactive) });
    }
    let Some(email) = account.email.as_deref().and_then(|e| Email::parse(e).ok()) else {
        return Ok(Err(Refusal::EmailRequired));
    };
    if let Some(user) = users::by_email(&db.pool, &email).await? {
        if !user.is_active {
            return Ok(Err(Refusal::Inactive));
        }
        if !(account.email_verified && user.email_verified) {
            return Ok(Err(Refusal::AccountExists));
        }
        let mut tx = db.begin_write().await?;
        identities::insert(&mut *tx, user.id, &account.provider, &account.subject, email.as_str()).await?;
        tx.commit().await?;
        return Ok(Ok((user, Outcome::Linked)));
    }
    let mut tx = db.begin_write().await?;
    let created = users::create(
        &mut *tx,
        NewUser { email: &email, username: None, display_name: None, password_hash: "", is_admin: false },
    )
    .await;
    let mut user = match created {
        Ok(user) => user,
        // Someone took the address a moment ago.
        Err(StoreError::Conflict { .. }) => return Ok(Err(Refusal::AccountExists)),
        Err(e) => return Err(e),
    };
    identities::insert(&mut *tx, user.id, &account.provider, &account.subject, email.as_str()).await?;
    if account.email_verified {
        users::mark_email_verified(&mut *tx, user.id).await?;
        user.email_verified = true;
    } else {
        crate::usecases::email::enqueue(&mut *tx, user.id, EmailKind::VerifyEmail).await?;
    }
    tx.commit().await?;
    Ok(Ok((user, Outcome::Created)))
}
