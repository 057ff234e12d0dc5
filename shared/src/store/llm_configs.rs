//! LLM configurations. The API key is stored sealed (see [`crate::crypto`]).

use super::Exec;
use crate::error::StoreError;
use crate::ids::{ChatSessionId, LlmConfigId};
use crate::time::{Timestamp, now_ms};

const COLUMNS: &str = "id, name, provider, model, base_url, api_key_enc, temperature, max_tokens, context_window, \
    system_prompt, is_default, enabled, created_at, updated_at";

/// A config row. An id that does not parse fails to decode.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LlmConfig {
    #[sqlx(try_from = "String")]
    pub id: LlmConfigId,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub api_key_enc: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub context_window: i64,
    pub system_prompt: String,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub is_default: bool,
    #[sqlx(try_from = "crate::db::DbBool")]
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Every field of a config as written (the key already sealed).
#[derive(Debug, Clone)]
pub struct ConfigFields {
    pub name: String,
    pub provider: String,
    pub model: String,
    pub base_url: Option<String>,
    pub api_key_enc: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub context_window: i64,
    pub system_prompt: String,
    pub is_default: bool,
    pub enabled: bool,
}

pub async fn insert<'e, E: Exec<'e>>(ex: E, f: &ConfigFields) -> Result<LlmConfig, StoreError> {
    let sql = format!(
        "insert into llm_configs (id, name, provider, model, base_url, api_key_enc, temperature, max_tokens,
             context_window, system_prompt, is_default, enabled, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) returning {COLUMNS}"
    );
    bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(LlmConfigId::new().to_string()), f)
        .bind(now_ms())
        .fetch_one(ex)
        .await
        .map_err(name_conflict)
}

pub async fn update<'e, E: Exec<'e>>(ex: E, id: LlmConfigId, f: &ConfigFields) -> Result<LlmConfig, StoreError> {
    let sql = format!(
        "update llm_configs set name = $2, provider = $3, model = $4, base_url = $5, api_key_enc = $6, temperature = $7,
             max_tokens = $8, context_window = $9, system_prompt = $10, is_default = $11, enabled = $12, updated_at = $13
         where id = $1 returning {COLUMNS}"
    );
    bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()), f)
        .bind(now_ms())
        .fetch_optional(ex)
        .await
        .map_err(name_conflict)?
        .ok_or(StoreError::NotFound)
}

type Query<'q> = sqlx::query::QueryAs<'q, sqlx::Any, LlmConfig, sqlx::any::AnyArguments>;

fn bind<'q>(q: Query<'q>, f: &ConfigFields) -> Query<'q> {
    q.bind(f.name.clone())
        .bind(f.provider.clone())
        .bind(f.model.clone())
        .bind(f.base_url.clone())
        .bind(f.api_key_enc.clone())
        .bind(f.temperature)
        .bind(f.max_tokens)
        .bind(f.context_window)
        .bind(f.system_prompt.clone())
        .bind(f.is_default)
        .bind(f.enabled)
}

fn name_conflict(e: sqlx::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict { .. } => StoreError::Conflict { field: "name" },
        other => other,
    }
}

/// Makes `id` the only default.
pub async fn clear_other_defaults<'e, E: Exec<'e>>(ex: E, id: LlmConfigId) -> Result<(), StoreError> {
    sqlx::query("update llm_configs set is_default = false where id <> $1 and is_default = true")
        .bind(id.to_string())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn get<'e, E: Exec<'e>>(ex: E, id: LlmConfigId) -> Result<Option<LlmConfig>, StoreError> {
    let sql = format!("select {COLUMNS} from llm_configs where id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(ex).await?)
}

pub async fn by_name<'e, E: Exec<'e>>(ex: E, name: &str) -> Result<Option<LlmConfig>, StoreError> {
    let sql = format!("select {COLUMNS} from llm_configs where name = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(name).fetch_optional(ex).await?)
}

/// All configs (`enabled_only` for users), default first, then by name.
pub async fn list<'e, E: Exec<'e>>(ex: E, enabled_only: bool) -> Result<Vec<LlmConfig>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from llm_configs where ($1 = false or enabled = true) order by is_default desc, name limit 500"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(enabled_only).fetch_all(ex).await?)
}

/// The enabled default config, or else the first enabled one.
pub async fn default_enabled<'e, E: Exec<'e>>(ex: E) -> Result<Option<LlmConfig>, StoreError> {
    let sql =
        format!("select {COLUMNS} from llm_configs where enabled = true order by is_default desc, created_at limit 1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_optional(ex).await?)
}

/// The enabled config a session's replies use, read with the session's own: its config
/// while enabled (a disabled one gives none), or, when it names none, [`default_enabled`].
/// One read where the session's and then its config's would be two.
pub async fn for_session<'e, E: Exec<'e>>(ex: E, session: ChatSessionId) -> Result<Option<LlmConfig>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from llm_configs
         where enabled = true and coalesce(id = (select config_id from chat_sessions where id = $1), true)
         order by is_default desc, created_at limit 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(session.to_string()).fetch_optional(ex).await?)
}

/// The enabled config a new message in `session` (of `user`; none: a new session) gets when
/// it picks none: the session's while enabled, else [`default_enabled`]. One read, which
/// needs no session read first.
pub async fn for_new_message<'e, E: Exec<'e>>(
    ex: E,
    session: Option<ChatSessionId>,
    user: crate::ids::UserId,
) -> Result<Option<LlmConfig>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from llm_configs where enabled = true
         order by coalesce(id = (select config_id from chat_sessions where id = $1 and user_id = $2), false) desc,
             is_default desc, created_at
         limit 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session.map(|s| s.to_string()))
        .bind(user.to_string())
        .fetch_optional(ex)
        .await?)
}

pub async fn delete<'e, E: Exec<'e>>(ex: E, id: LlmConfigId) -> Result<(), StoreError> {
    let done = sqlx::query("delete from llm_configs where id = $1").bind(id.to_string()).execute(ex).await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
