//! Chat use cases: posting a message (which starts its reply as a job) and deleting a
//! session (which stops its replies).

use crate::Db;
use crate::db::Backend;
use crate::domain::truncate_words;
use crate::error::StoreError;
use crate::ids::{ChatSessionId, JobId, LlmConfigId, MessageId, UserId};
use crate::jobs::lifecycle::JobEnv;
use crate::jobs::{JobKind, LlmCompletion, lifecycle};
use crate::store::chat::{self, NewPost, Session, SessionWrite};
use crate::store::llm_configs::LlmConfig;
use crate::store::quotas::Quota;
use crate::store::{Exec, llm_configs, quotas, users};
use crate::usecases::quota::{self, DefaultBudgets, QuotaError};
use sqlx::{AnyConnection, AnyPool};

/// Fallback titles (before or instead of a generated one) take this much of the first message.
const FALLBACK_TITLE_CHARS: usize = 60;

/// A message to post; `text` is already trimmed and within the length limit.
#[derive(Debug, Clone, Copy)]
pub struct PostMessage<'a> {
    pub user: UserId,
    pub text: &'a str,
    /// Continue this session; a new one when `None`.
    pub session_id: Option<ChatSessionId>,
    /// The model picked for this message; else the session's while enabled; else the default.
    pub model: ModelPick,
    /// Replies a user may have in progress at once.
    pub max_active_replies: i64,
    /// The token budgets of users without their own.
    pub budgets: DefaultBudgets,
}

/// The model a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPick {
    /// None: the session's while enabled, else the default.
    Unspecified,
    Config(LlmConfigId),
    /// Text that is not a config id: it names no model, so it is refused like an unknown
    /// id, after the session is found (a missing session is reported first).
    NotAnId,
}

/// What posting wrote.
#[derive(Debug, Clone)]
pub struct Posted {
    pub job: JobId,
    pub session_id: ChatSessionId,
    pub user_message_id: MessageId,
    pub assistant_message_id: MessageId,
}

/// Why a message was not posted.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("no such session")]
    SessionNotFound,
    #[error("the model is not an enabled one")]
    UnknownModel,
    #[error("no model is configured")]
    NoModel,
    #[error("too many replies in progress")]
    TooManyActive,
    #[error(transparent)]
    Quota(QuotaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PostError {
    fn from(e: sqlx::Error) -> Self {
        PostError::Store(e.into())
    }
}

/// What a message's reads decided: the session it continues (none: a new one) and the model.
struct Plan {
    existing: Option<Session>,
    config: LlmConfig,
}

/// What a message's checks read: its session (when it continues one), its model (the one
/// picked, or the session's while enabled, else the default), and the user's quota with the
/// replies in progress.
struct Reads {
    session: Option<Session>,
    config: Option<LlmConfig>,
    quota: Quota,
    active: i64,
}

impl Reads {
    /// The reads one after another on `conn` (a transaction).
    async fn on(conn: &mut AnyConnection, msg: &PostMessage<'_>) -> Result<Self, StoreError> {
        let session = session_of(&mut *conn, msg).await?;
        let config = model_of(&mut *conn, msg).await?;
        let (quota, active) = quotas::get_with_active_jobs(&mut *conn, msg.user, JobKind::LlmCompletion).await?;
        Ok(Self { session, config, quota, active })
    }

    /// The same reads at once, each on a connection of the pool.
    async fn from_pool(pool: &AnyPool, msg: &PostMessage<'_>) -> Result<Self, StoreError> {
        let quota = quotas::get_with_active_jobs(pool, msg.user, JobKind::LlmCompletion);
        let (session, config, (quota, active)) = tokio::try_join!(session_of(pool, msg), model_of(pool, msg), quota)?;
        Ok(Self { session, config, quota, active })
    }
}

/// The session a message continues, if it is the user's.
async fn session_of<'e, E: Exec<'e>>(ex: E, msg: &PostMessage<'_>) -> Result<Option<Session>, StoreError> {
    match msg.session_id {
        Some(id) => chat::get_session(ex, id, msg.user).await,
        None => Ok(None),
    }
}

/// The model a message asks for, or (none picked) the session's or the default.
async fn model_of<'e, E: Exec<'e>>(ex: E, msg: &PostMessage<'_>) -> Result<Option<LlmConfig>, StoreError> {
    match msg.model {
        ModelPick::Config(id) => llm_configs::get(ex, id).await,
        ModelPick::Unspecified => llm_configs::for_new_message(ex, msg.session_id, msg.user).await,
        ModelPick::NotAnId => Ok(None),
    }
}

/// Where [`plan`] reads the user's token use from, when a budget applies.
enum UsageFrom<'a> {
    Pool(&'a AnyPool),
    Conn(&'a mut AnyConnection),
}

/// The checks before a message is written, on what [`Reads`] found: the session (it must
/// be the user's), the model, the user's quota and replies in progress.
async fn plan(usage: UsageFrom<'_>, msg: &PostMessage<'_>, reads: Reads) -> Result<Plan, PostError> {
    let Reads { session, config, quota, active } = reads;
    let existing = match msg.session_id {
        Some(_) => Some(session.ok_or(PostError::SessionNotFound)?),
        None => None,
    };
    let config = match (config.filter(|c| c.enabled), msg.model) {
        (_, ModelPick::NotAnId) => return Err(PostError::UnknownModel),
        (Some(config), _) => config,
        (None, ModelPick::Unspecified) => return Err(PostError::NoModel),
        (None, ModelPick::Config(_)) => return Err(PostError::UnknownModel),
    };
    let checked = match usage {
        UsageFrom::Conn(conn) => quota::check_with(conn, msg.user, quota, config.id, msg.budgets).await,
        // No connection is taken for nothing.
        UsageFrom::Pool(pool) if quota::has_budget(&quota, msg.budgets) => {
            let mut conn = pool.acquire().await?;
            quota::check_with(&mut conn, msg.user, quota, config.id, msg.budgets).await
        }
        UsageFrom::Pool(_) if !quota.allows(config.id) => Err(QuotaError::ConfigNotAllowed),
        UsageFrom::Pool(_) => Ok(()),
    };
    checked.map_err(|e| match e {
        QuotaError::Store(e) => PostError::Store(e),
        e => PostError::Quota(e),
    })?;
    if active >= msg.max_active_replies {
        return Err(PostError::TooManyActive);
    }
    Ok(Plan { existing, config })
}

/// What a message writes, with the ids made for it (the user's message before its reply:
/// ids order a session's messages).
struct Prepared {
    plan: Plan,
    session: ChatSessionId,
    title: String,
    question: MessageId,
    reply: MessageId,
    job_id: JobId,
    job: LlmCompletion,
}

impl Prepared {
    fn new(plan: Plan, msg: &PostMessage<'_>) -> Self {
        let session = plan.existing.as_ref().map_or_else(ChatSessionId::new, |s| s.id);
        let (question, reply, job_id) = (MessageId::new(), MessageId::new(), JobId::new());
        let job = LlmCompletion { message_id: reply, session_id: Some(session) };
        Self { plan, session, title: fallback_title(msg.text), question, reply, job_id, job }
    }

    fn new_post<'a>(&'a self, msg: &PostMessage<'a>) -> NewPost<'a> {
        let config = self.plan.config.id;
        let session_write = match &self.plan.existing {
            None => SessionWrite::Create { config, title: &self.title },
            Some(s) if s.config_id != Some(config) => SessionWrite::SetConfig(config),
            Some(_) => SessionWrite::Touch,
        };
        NewPost {
            user: msg.user,
            session: self.session,
            session_write,
            job: &self.job,
            job_id: self.job_id,
            question: self.question,
            text: msg.text,
            reply: self.reply,
            model: &self.plan.config.model,
            max_active_replies: msg.max_active_replies,
        }
    }

    /// What was posted.
    fn posted(self) -> Posted {
        Posted {
            job: self.job_id,
            session_id: self.session,
            user_message_id: self.question,
            assistant_message_id: self.reply,
        }
    }

    /// Why nothing was written: between the reads and the write, the session went away or
    /// other replies started.
    async fn refused(self, conn: &mut AnyConnection, user: UserId) -> PostError {
        match self.plan.existing {
            Some(s) => match chat::get_session(&mut *conn, s.id, user).await {
                Ok(None) => PostError::SessionNotFound,
                Ok(Some(_)) => PostError::TooManyActive,
                Err(e) => PostError::Store(e),
            },
            None => PostError::TooManyActive,
        }
    }
}

/// Writes the user's message, a pending reply and its `llm_completion` job, and commits
/// (wake the interactive queue after). The reads come first, from the pool; the writes are
/// one script on SQLite (the one writer is held for one trip to SQLite's thread) and one
/// statement on PostgreSQL, under the user's row lock. Each write is guarded again (the
/// replies in progress, the session), so what changed between the reads and the write is
/// refused as before.
pub async fn post(db: &Db, msg: PostMessage<'_>) -> Result<Posted, PostError> {
    let reads = Reads::from_pool(&db.pool, &msg).await?;
    let prepared = Prepared::new(plan(UsageFrom::Pool(&db.pool), &msg, reads).await?, &msg);
    let post = prepared.new_post(&msg);
    let written = match db.backend {
        Backend::Sqlite => chat::post_in_one_script(db, &post).await?,
        Backend::Postgres => {
            let mut tx = db.begin_write().await?;
            users::lock(&mut *tx, msg.user).await?;
            let written = chat::post_in(&mut tx, Backend::Postgres, &post).await?;
            tx.commit().await?;
            written
        }
    };
    if written {
        return Ok(prepared.posted());
    }
    Err(prepared.refused(&mut *db.pool.acquire().await?, msg.user).await)
}

/// [`post`] in `tx`, reads included (the caller commits, then wakes the interactive queue):
/// for a request that records its answer in the same transaction.
///
/// Everything is read through `tx` too: on PostgreSQL the writer is the shared pool, and a
/// request holding one of its connections must not wait for a second.
pub async fn post_message(tx: &mut AnyConnection, backend: Backend, msg: PostMessage<'_>) -> Result<Posted, PostError> {
    // The active replies are counted under the user's row lock: concurrent requests cannot
    // both pass the limit.
    users::lock(&mut *tx, msg.user).await?;
    let reads = Reads::on(&mut *tx, &msg).await?;
    let prepared = Prepared::new(plan(UsageFrom::Conn(&mut *tx), &msg, reads).await?, &msg);
    let written = chat::post_in(&mut *tx, backend, &prepared.new_post(&msg)).await?;
    if written {
        return Ok(prepared.posted());
    }
    Err(prepared.refused(tx, msg.user).await)
}

/// A title from the first message, until (or instead of) a generated one.
pub fn fallback_title(message: &str) -> String {
    let line = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("New chat");
    truncate_words(line, FALLBACK_TITLE_CHARS)
}

/// Deletes a session and its messages; replies still being generated stop (nobody will
/// read them).
pub async fn delete_session(env: &JobEnv, session: &Session, user: UserId) -> Result<(), StoreError> {
    for job_id in chat::open_reply_jobs(&env.db.pool, session.id).await? {
        if let Ok(job_id) = job_id.parse() {
            lifecycle::cancel(env, job_id).await?;
        }
    }
    chat::delete_session(&env.db.writer, session.id, user).await
}
