//! Shared conversations: a read-only public link (an unguessable token) to a snapshot of a
//! chat session up to the latest complete message when it was shared. Deleting the session
//! or the account deletes its links (foreign keys).

use super::Exec;
use crate::error::StoreError;
use crate::ids::{ChatSessionId, MessageId, ShareId, UserId};
use crate::store::chat::Message;
use crate::time::{Timestamp, now_ms};

const COLUMNS: &str = "id, token, user_id, session_id, title, last_message_id, expires_at, created_at, updated_at";

/// A share link as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Share {
    #[sqlx(try_from = "String")]
    pub id: ShareId,
    /// The public id of the link (256 random bits).
    pub token: String,
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    #[sqlx(try_from = "String")]
    pub session_id: ChatSessionId,
    pub title: String,
    #[sqlx(try_from = "String")]
    pub last_message_id: MessageId,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Share {
    pub fn is_live(&self) -> bool {
        self.expires_at.is_none_or(|t| t.millis() > now_ms())
    }
}

/// The latest complete message of a session (what a share shows up to).
pub async fn latest_complete<'e, E: Exec<'e>>(ex: E, session: ChatSessionId) -> Result<Option<MessageId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "select id from chat_messages where session_id = $1 and status = 'complete' order by id desc limit 1",
    )
    .bind(session.to_string())
    .fetch_optional(ex)
    .await?;
    id.map(|id| id.parse().map_err(|e| StoreError::Other(anyhow::anyhow!("a message id that is not one: {e}"))))
        .transpose()
}

/// What a share link writes.
#[derive(Debug)]
pub struct NewShare<'a> {
    pub user: UserId,
    pub session: ChatSessionId,
    pub title: &'a str,
    pub last_message: MessageId,
    pub expires_at_ms: Option<i64>,
}

pub async fn create<'e, E: Exec<'e>>(ex: E, new: NewShare<'_>) -> Result<Share, StoreError> {
    let sql = format!(
        "insert into shared_sessions (id, token, user_id, session_id, title, last_message_id, expires_at, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $8) returning {COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ShareId::new().to_string())
        .bind(crate::auth::random_token())
        .bind(new.user.to_string())
        .bind(new.session.to_string())
        .bind(new.title)
        .bind(new.last_message.to_string())
        .bind(new.expires_at_ms)
        .bind(now_ms())
        .fetch_one(ex)
        .await?)
}

/// A user's links, newest first, before the cursor id `before`.
pub async fn list<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    before: Option<ShareId>,
    limit: i64,
) -> Result<Vec<Share>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from shared_sessions where user_id = $1 and ($2 is null or id < $2) order by id desc limit $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}

pub async fn by_token<'e, E: Exec<'e>>(ex: E, token: &str) -> Result<Option<Share>, StoreError> {
    let sql = format!("select {COLUMNS} from shared_sessions where token = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(token).fetch_optional(ex).await?)
}

/// Revokes (deletes) one of `user`'s links; `NotFound` when it is not theirs.
pub async fn delete<'e, E: Exec<'e>>(ex: E, id: ShareId, user: UserId) -> Result<(), StoreError> {
    let done = sqlx::query("delete from shared_sessions where id = $1 and user_id = $2")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(ex)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The snapshot's messages after `after`, oldest first: the user's messages and complete
/// replies up to the share's last message.
pub async fn snapshot<'e, E: Exec<'e>>(
    ex: E,
    share: &Share,
    after: Option<MessageId>,
    limit: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "select {} from chat_messages
         where session_id = $1 and id <= $2 and (role = 'user' or status = 'complete') and ($3 is null or id > $3)
         order by id limit $4",
        crate::store::chat::MESSAGE_COLUMNS
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(share.session_id.to_string())
        .bind(share.last_message_id.to_string())
        .bind(after.map(|a| a.to_string()))
        .bind(limit)
        .fetch_all(ex)
        .await?)
}
