//! The shapes of answers that several route modules share.

use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, Utc};
use parley_shared::Config;
use parley_shared::ids::{JobId, UserId};
use parley_shared::jobs::{JobKind, JobStatus};
use parley_shared::store::jobs::Job;
use parley_shared::store::users::User;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// A user's profile as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserProfile {
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    pub email: String,
    pub username: Option<String>,
    pub display_name: String,
    pub bio: String,
    pub avatar_url: Option<String>,
    pub email_verified: bool,
    pub is_admin: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

impl UserProfile {
    pub fn new(user: &User, config: &Config) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            bio: user.bio.clone(),
            avatar_url: user.avatar_key.as_ref().map(|k| format!("{}/media/avatars/{k}-256.png", config.public_url)),
            email_verified: user.email_verified,
            is_admin: user.is_admin,
            date_joined: user.date_joined.0,
            last_login: user.last_login.map(DateTime::from),
        }
    }
}

/// A job was accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
}

/// A job as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    /// What went wrong, as the job's owner is told (a provider failure is named by its class).
    pub error: Option<String>,
    /// Admin views only: the full text behind `error` (a provider's own message, with keys
    /// redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobView {
    /// The job as an admin sees it: with the error's detail.
    pub fn for_admin(job: Job) -> Self {
        let detail = job.error_detail.clone();
        Self { error_detail: detail, ..Self::from(job) }
    }
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let json = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        Self {
            id: job.id,
            status: job.status,
            progress: json(&job.progress),
            result: json(&job.result),
            kind: job.kind,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error: job.error,
            error_detail: None,
            created_at: job.created_at.0,
            started_at: job.started_at.map(DateTime::from),
            finished_at: job.finished_at.map(DateTime::from),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct JobFilter {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
}

impl JobFilter {
    pub fn parse(&self) -> ApiResult<Option<JobStatus>> {
        match self.status.as_deref() {
            None => Ok(None),
            Some(s) => JobStatus::parse(s).map(Some).ok_or_else(|| {
                ApiError::field("status", "must be one of queued, running, retrying, succeeded, failed, cancelled")
            }),
        }
    }
}
