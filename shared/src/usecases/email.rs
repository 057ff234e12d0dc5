//! Account emails are `send_email` jobs.

use crate::error::StoreError;
use crate::ids::{JobId, UserId};
use crate::jobs::{EmailKind, SendEmail};
use crate::store::{Exec, jobs};

/// Enqueues `email` to `user` in the caller's transaction; wake the default queue after
/// commit.
pub async fn enqueue<'e>(ex: impl Exec<'e>, user: UserId, email: EmailKind) -> Result<JobId, StoreError> {
    jobs::enqueue(ex, Some(user), &SendEmail { user_id: user, email }).await
}
