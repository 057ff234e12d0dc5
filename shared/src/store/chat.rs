//! Chat sessions and their messages.

use super::{Exec, escape_like};
use crate::db::Backend;
use crate::error::StoreError;
use crate::ids::{ChatSessionId, JobId, LlmConfigId, MessageId, UserId};
use crate::jobs::UnknownValue;
use crate::time::{Timestamp, now_ms};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

const SESSION_COLUMNS: &str = "id, user_id, config_id, title, title_is_auto, tags, created_at, updated_at";
pub(crate) const MESSAGE_COLUMNS: &str = "id, session_id, user_id, role, content, status, model, prompt_tokens, \
    completion_tokens, finish_reason, error, job_id, created_at, updated_at";

/// A session row. An id that does not parse fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    #[sqlx(try_from = "String")]
    pub id: ChatSessionId,
    pub user_id: String,
    /// `None` once the config is deleted: the session falls back to the default.
    #[sqlx(try_from = "crate::ids::NullableId")]
    pub config_id: Option<LlmConfigId>,
    pub title: String,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub title_is_auto: bool,
    /// A JSON array of strings.
    pub tags: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Session {
    pub fn tags(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    pub const ALL: [MessageRole; 2] = [MessageRole::User, MessageRole::Assistant];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl TryFrom<String> for MessageRole {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownValue { what: "message role", value })
    }
}

/// Where a message is in its life: a user's message is `complete` at once; a reply starts
/// `pending`, is `streaming` while text arrives, and ends `complete`, `failed` or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Streaming,
    Complete,
    Failed,
    Cancelled,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 5] = [
        MessageStatus::Pending,
        MessageStatus::Streaming,
        MessageStatus::Complete,
        MessageStatus::Failed,
        MessageStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Failed => "failed",
            MessageStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl TryFrom<String> for MessageStatus {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(UnknownValue { what: "message status", value })
    }
}

/// A message row. An id, role or status the code does not know fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    #[sqlx(try_from = "String")]
    pub id: MessageId,
    #[sqlx(try_from = "String")]
    pub session_id: ChatSessionId,
    pub user_id: String,
    #[sqlx(try_from = "String")]
    pub role: MessageRole,
    pub content: String,
    #[sqlx(try_from = "String")]
    pub status: MessageStatus,
    pub model: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub job_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

pub async fn create_session<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    config_id: Option<LlmConfigId>,
    title: &str,
) -> Result<Session, StoreError> {
    let sql = format!(
        "insert into chat_sessions (id, user_id, config_id, title, created_at, updated_at) values ($1, $2, $3, $4, $5, $5)
         returning {SESSION_COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ChatSessionId::new().to_string())
        .bind(user.to_string())
        .bind(config_id.map(|c| c.to_string()))
        .bind(title)
        .bind(now_ms())
        .fetch_one(ex)
        .await?)
}

/// A session of `user` (another user's session is simply not found).
pub async fn get_session<'e, E: Exec<'e>>(
    ex: E,
    id: ChatSessionId,
    user: UserId,
) -> Result<Option<Session>, StoreError> {
    let sql = format!("select {SESSION_COLUMNS} from chat_sessions where id = $1 and user_id = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).bind(user.to_string()).fetch_optional(ex).await?)
}

pub async fn session_by_id<'e, E: Exec<'e>>(ex: E, id: ChatSessionId) -> Result<Option<Session>, StoreError> {
    let sql = format!("select {SESSION_COLUMNS} from chat_sessions where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

/// `user`'s sessions, newest first; `search` matches titles and message text, `tag` one tag.
pub async fn list_sessions<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    search: Option<&str>,
    tag: Option<&str>,
    before: Option<ChatSessionId>,
    limit: i64,
) -> Result<Vec<Session>, StoreError> {
    let sql = format!(
        "select {SESSION_COLUMNS} from chat_sessions s
         where s.user_id = $1 and ($2 is null or s.id < $2)
           and ($3 is null or lower(s.title) like $3 escape '\\' or exists (
                select 1 from chat_messages m where m.session_id = s.id and lower(m.content) like $3 escape '\\'))
           and ($4 is null or s.tags like $4 escape '\\')
         order by s.id desc limit $5"
    );
    let pattern = search.map(|s| format!("%{}%", escape_like(&s.to_lowercase())));
    let tag = tag.map(|t| format!("%{}%", escape_like(&serde_json::to_string(t).unwrap_or_default())));
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(pattern)
        .bind(tag)
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

pub async fn update_session<'e, E: Exec<'e>>(
    ex: E,
    id: ChatSessionId,
    user: UserId,
    title: Option<&str>,
    tags: Option<&[String]>,
) -> Result<Session, StoreError> {
    let sql = format!(
        "update chat_sessions set title = coalesce($3, title),
             title_is_auto = case when $3 is null then title_is_auto else false end,
             tags = coalesce($4, tags), updated_at = $5
         where id = $1 and user_id = $2 returning {SESSION_COLUMNS}"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(title)
        .bind(tags.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into())))
        .bind(now_ms())
        .fetch_optional(ex)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Sets a generated title unless the user chose one meanwhile.
pub async fn set_auto_title<'e, E: Exec<'e>>(ex: E, id: ChatSessionId, title: &str) -> Result<bool, StoreError> {
    let done =
        sqlx::query("update chat_sessions set title = $2, updated_at = $3 where id = $1 and title_is_auto = true")
            .bind(id.to_string())
            .bind(title)
            .bind(now_ms())
            .execute(ex)
            .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_session<'e, E: Exec<'e>>(ex: E, id: ChatSessionId, user: UserId) -> Result<(), StoreError> {
    let done = sqlx::query("delete from chat_sessions where id = $1 and user_id = $2")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// A message as written by the chat endpoint.
#[derive(Debug)]
pub struct NewMessage<'a> {
    /// Made by the caller, so that a reply's job can name its message before either is written.
    pub id: MessageId,
    pub session_id: ChatSessionId,
    pub user: UserId,
    pub role: MessageRole,
    pub content: &'a str,
    pub status: MessageStatus,
    pub model: Option<&'a str>,
    /// The job writing this reply.
    pub job: Option<JobId>,
}

/// How posting a message changes its session (each also moves its `updated_at`).
#[derive(Debug, Clone, Copy)]
pub enum SessionWrite<'a> {
    /// A new session of the poster, with this model and title.
    Create {
        config: LlmConfigId,
        title: &'a str,
    },
    /// The message picked another model: it becomes the session's.
    SetConfig(LlmConfigId),
    Touch,
}

/// A message as posted: the user's message, its pending reply, and the reply's job.
#[derive(Debug)]
pub struct NewPost<'a> {
    pub user: UserId,
    pub session: ChatSessionId,
    pub session_write: SessionWrite<'a>,
    pub job: &'a crate::jobs::LlmCompletion,
    pub job_id: JobId,
    pub question: MessageId,
    pub text: &'a str,
    pub reply: MessageId,
    pub model: &'a str,
    /// Written only while the user has fewer replies than this in progress.
    pub max_active_replies: i64,
}

/// The statements of a posted message: the job, only while `user` has fewer than
/// `max_active_replies` replies in progress and an existing session is still theirs; then
/// the session and the two messages, only where `written` (the job was).
fn post_statements(post: &NewPost<'_>, written: &str) -> [String; 3] {
    // The job binds `$1` to `$8` (`$7` is the time); a new or changed model `$21`, a new title `$22`.
    let room = "(select count(*) from parley_jobs where owner_id = $9 and kind = $10 \
                and status in ('queued', 'running', 'retrying')) < $11";
    let theirs = "exists (select 1 from chat_sessions where id = $12 and user_id = $9)";
    let (job, session) = match post.session_write {
        SessionWrite::Create { .. } => (
            super::jobs::insert_job_where(room),
            format!(
                "insert into chat_sessions (id, user_id, config_id, title, created_at, updated_at) \
                 select $12, $9, (select id from llm_configs where id = $21), $22, $7, $7 where {written}"
            ),
        ),
        SessionWrite::SetConfig(_) => (
            super::jobs::insert_job_where(&format!("{room} and {theirs}")),
            format!(
                "update chat_sessions set config_id = (select id from llm_configs where id = $21), updated_at = $7 \
                 where id = $12 and {written}"
            ),
        ),
        SessionWrite::Touch => (
            super::jobs::insert_job_where(&format!("{room} and {theirs}")),
            format!("update chat_sessions set updated_at = $7 where id = $12 and {written}"),
        ),
    };
    let messages = format!(
        "insert into chat_messages (id, session_id, user_id, role, content, status, model, job_id, created_at, updated_at) \
         select $13, $12, $9, $14, $15, $16, null, null, $7, $7 where {written} \
         union all select $17, $12, $9, $18, '', $19, $20, $1, $7, $7 where {written}"
    );
    [job, session, messages]
}

/// Binds [`post_statements`]' parameters; `payload` is the job's, as JSON.
fn bind_post(query: crate::db::SqlQuery, post: &NewPost<'_>, payload: String) -> crate::db::SqlQuery {
    use crate::jobs::{JobSpec, LlmCompletion};
    let query = super::jobs::bind_new_job::<LlmCompletion>(query, post.job_id, Some(post.user), payload, now_ms())
        .bind(post.user.to_string())
        .bind(LlmCompletion::KIND.as_str())
        .bind(post.max_active_replies)
        .bind(post.session.to_string())
        .bind(post.question.to_string())
        .bind(MessageRole::User.as_str())
        .bind(post.text)
        .bind(MessageStatus::Complete.as_str())
        .bind(post.reply.to_string())
        .bind(MessageRole::Assistant.as_str())
        .bind(MessageStatus::Pending.as_str())
        .bind(post.model);
    match post.session_write {
        SessionWrite::Create { config, title } => query.bind(config.to_string()).bind(title.to_owned()),
        SessionWrite::SetConfig(config) => query.bind(config.to_string()),
        SessionWrite::Touch => query,
    }
}

fn posted(post: &NewPost<'_>, written: i64) -> bool {
    if written == 1 {
        super::jobs::enqueued::<crate::jobs::LlmCompletion>(post.job_id);
    }
    written == 1
}

/// Writes a posted message on SQLite as one script in a transaction of its own (one trip to
/// SQLite's thread, where statements one by one hold the one writer for a trip each). False
/// if nothing was written (see [`post_statements`]).
pub async fn post_in_one_script(db: &crate::Db, post: &NewPost<'_>) -> Result<bool, StoreError> {
    let written = "exists (select 1 from parley_jobs where id = $1)";
    let [job, session, messages] = post_statements(post, written);
    let script = format!("{job}; {session}; {messages}; select {written}");
    let payload = serde_json::to_string(post.job).map_err(anyhow::Error::from)?;
    let rows = db.write_script(&script, |query| bind_post(query, post, payload)).await?;
    let written = match rows.first() {
        Some(row) => sqlx::Row::try_get::<i64, _>(row, 0)?,
        None => 0,
    };
    Ok(posted(post, written))
}

/// Writes a posted message in the caller's transaction, which holds the user's row lock
/// (so the replies in progress are counted under it): on PostgreSQL as one statement, on
/// SQLite statement by statement. False if nothing was written (see [`post_statements`]).
pub async fn post_in(conn: &mut AnyConnection, backend: Backend, post: &NewPost<'_>) -> Result<bool, StoreError> {
    let payload = serde_json::to_string(post.job).map_err(anyhow::Error::from)?;
    let count = |row: sqlx::any::AnyRow| sqlx::Row::try_get::<i64, _>(&row, 0);
    let written = match backend {
        Backend::Postgres => {
            let [job, session, messages] = post_statements(post, "exists (select 1 from job)");
            let sql = format!(
                "with job as ({job} returning id), session as ({session}), messages as ({messages}) \
                 select count(*) from job"
            );
            let query = bind_post(sqlx::query(sqlx::AssertSqlSafe(sql)), post, payload);
            query.fetch_one(&mut *conn).await.and_then(count)?
        }
        Backend::Sqlite => {
            let written = "exists (select 1 from parley_jobs where id = $1)";
            for statement in post_statements(post, written) {
                // Each statement takes the parameters it names; SQLite leaves the rest unread.
                bind_post(sqlx::query(sqlx::AssertSqlSafe(statement)), post, payload.clone())
                    .execute(&mut *conn)
                    .await?;
            }
            let sql = format!("select {written}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(post.job_id.to_string())
                .fetch_one(&mut *conn)
                .await
                .and_then(count)?
        }
    };
    Ok(posted(post, written))
}

/// Messages written by one statement of [`insert_messages`] (8 parameters each, well within
/// both databases' limits).
const INSERT_BATCH: usize = 500;

/// Writes messages in order, in as few statements as the batch size allows (their ids are
/// the caller's; ids made in order keep them in order).
pub async fn insert_messages(conn: &mut AnyConnection, messages: &[NewMessage<'_>]) -> Result<(), StoreError> {
    for batch in messages.chunks(INSERT_BATCH) {
        insert_batch(&mut *conn, batch).await?;
    }
    Ok(())
}

async fn insert_batch(conn: &mut AnyConnection, messages: &[NewMessage<'_>]) -> Result<(), StoreError> {
    let rows: Vec<String> = (0..messages.len())
        .map(|i| {
            let n = 2 + i * 8;
            let p: Vec<String> = (n..n + 8).map(|k| format!("${k}")).collect();
            format!("({}, $1, $1)", p.join(", "))
        })
        .collect();
    let sql = format!(
        "insert into chat_messages (id, session_id, user_id, role, content, status, model, job_id, created_at, updated_at)
         values {}",
        rows.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
    for m in messages {
        query = query
            .bind(m.id.to_string())
            .bind(m.session_id.to_string())
            .bind(m.user.to_string())
            .bind(m.role.as_str())
            .bind(m.content)
            .bind(m.status.as_str())
            .bind(m.model)
            .bind(m.job.map(|j| j.to_string()));
    }
    query.execute(conn).await?;
    Ok(())
}

pub async fn set_message_job<'e, E: Exec<'e>>(ex: E, id: MessageId, job: JobId) -> Result<(), StoreError> {
    sqlx::query("update chat_messages set job_id = $2 where id = $1")
        .bind(id.to_string())
        .bind(job.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn get_message<'e, E: Exec<'e>>(ex: E, id: MessageId) -> Result<Option<Message>, StoreError> {
    let sql = format!("select {MESSAGE_COLUMNS} from chat_messages where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

/// A session's messages, oldest first, after the cursor `after`.
pub async fn list_messages<'e, E: Exec<'e>>(
    ex: E,
    session: ChatSessionId,
    after: Option<MessageId>,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "select {MESSAGE_COLUMNS} from chat_messages where session_id = $1 and ($2 is null or id > $2)
         order by id limit $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session.to_string())
        .bind(after.map(|a| a.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// The conversation before message `before`, newest first (for building a context): user
/// messages and completed replies only.
pub async fn history_before<'e, E: Exec<'e>>(
    ex: E,
    session: ChatSessionId,
    before: MessageId,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "select {MESSAGE_COLUMNS} from chat_messages
         where session_id = $1 and id < $2 and (role = 'user' or status = 'complete')
         order by id desc limit $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session.to_string())
        .bind(before.to_string())
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

/// Saves streamed text so far.
pub async fn save_partial<'e, E: Exec<'e>>(
    ex: E,
    id: MessageId,
    content: &str,
    status: MessageStatus,
) -> Result<(), StoreError> {
    sqlx::query("update chat_messages set content = $2, status = $3, updated_at = $4 where id = $1")
        .bind(id.to_string())
        .bind(content)
        .bind(status.as_str())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

/// The final state of a reply.
#[derive(Debug)]
pub struct Outcome<'a> {
    pub status: MessageStatus,
    pub content: &'a str,
    pub model: Option<&'a str>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub finish_reason: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    /// A reply that ends with `content` alone (no usage, finish reason or error).
    pub fn new(status: MessageStatus, content: &'a str) -> Self {
        Self {
            status,
            content,
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            finish_reason: None,
            error: None,
        }
    }
}

pub async fn finish_message<'e, E: Exec<'e>>(ex: E, id: MessageId, o: &Outcome<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "update chat_messages set status = $2, content = $3, model = coalesce($4, model), prompt_tokens = $5,
             completion_tokens = $6, finish_reason = $7, error = $8, updated_at = $9
         where id = $1",
    )
    .bind(id.to_string())
    .bind(o.status.as_str())
    .bind(o.content)
    .bind(o.model)
    .bind(o.prompt_tokens)
    .bind(o.completion_tokens)
    .bind(o.finish_reason)
    .bind(o.error)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// Closes a reply still `pending` or `streaming` with `status` (its text is kept); a reply
/// already closed is left alone.
pub async fn close_open_reply<'e, E: Exec<'e>>(
    ex: E,
    id: MessageId,
    status: MessageStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "update chat_messages set status = $2, error = coalesce($3, error), updated_at = $4
         where id = $1 and status in ('pending', 'streaming')",
    )
    .bind(id.to_string())
    .bind(status.as_str())
    .bind(error)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}

/// The jobs of replies still being generated in a session.
pub async fn open_reply_jobs<'e, E: Exec<'e>>(ex: E, session: ChatSessionId) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "select job_id from chat_messages where session_id = $1 and role = 'assistant' and status in ('pending', 'streaming')",
    )
    .bind(session.to_string())
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().filter_map(|(j,)| j).collect())
}

pub async fn set_session_config<'e, E: Exec<'e>>(
    ex: E,
    id: ChatSessionId,
    config_id: LlmConfigId,
) -> Result<(), StoreError> {
    sqlx::query("update chat_sessions set config_id = $2, updated_at = $3 where id = $1")
        .bind(id.to_string())
        .bind(config_id.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn touch_session<'e, E: Exec<'e>>(ex: E, id: ChatSessionId) -> Result<(), StoreError> {
    sqlx::query("update chat_sessions set updated_at = $2 where id = $1")
        .bind(id.to_string())
        .bind(now_ms())
        .execute(ex)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_and_status_round_trips_through_its_stored_name() {
        for role in MessageRole::ALL {
            assert_eq!(MessageRole::try_from(role.as_str().to_owned()).unwrap(), role);
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        for status in MessageStatus::ALL {
            assert_eq!(MessageStatus::try_from(status.as_str().to_owned()).unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn an_unknown_stored_role_or_status_is_an_error() {
        assert!(MessageRole::try_from("system".to_owned()).is_err());
        assert!(MessageStatus::try_from("done".to_owned()).is_err());
        assert!(MessageStatus::try_from("Complete".to_owned()).is_err());
    }
}
