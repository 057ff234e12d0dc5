//! Per-user quotas set by admins: daily and monthly token budgets (none: the defaults from
//! the environment) and the configs a user may use (none: all of them).

use super::Exec;
use crate::error::StoreError;
use crate::ids::{LlmConfigId, UserId};
use crate::jobs::JobKind;
use crate::time::now_ms;

/// A user's quota row; a user without one has the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    pub token_budget_daily: Option<i64>,
    pub token_budget_monthly: Option<i64>,
    /// `None`: every enabled config.
    pub allowed_config_ids: Option<Vec<LlmConfigId>>,
}

impl Quota {
    /// Whether the user may use `config`.
    pub fn allows(&self, config: LlmConfigId) -> bool {
        self.allowed_config_ids.as_ref().is_none_or(|ids| ids.contains(&config))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    token_budget_daily: Option<i64>,
    token_budget_monthly: Option<i64>,
    allowed_config_ids: Option<String>,
}

pub async fn get<'e, E: Exec<'e>>(ex: E, user: UserId) -> Result<Quota, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "select token_budget_daily, token_budget_monthly, allowed_config_ids from user_quotas where user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(ex)
    .await?;
    row.map_or(Ok(Quota::default()), Row::into_quota)
}

/// A user's quota and how many of their jobs of `kind` are not finished yet, in one read: a
/// chat message checks both before its reply's job is written.
pub async fn get_with_active_jobs<'e, E: Exec<'e>>(
    ex: E,
    user: UserId,
    kind: JobKind,
) -> Result<(Quota, i64), StoreError> {
    let (daily, monthly, allowed, active): (Option<i64>, Option<i64>, Option<String>, i64) = sqlx::query_as(
        "select q.token_budget_daily, q.token_budget_monthly, q.allowed_config_ids,
             (select count(*) from parley_jobs j
              where j.owner_id = $1 and j.kind = $2 and j.status in ('queued', 'running', 'retrying'))
         from (select 1 as one) o left join user_quotas q on q.user_id = $1",
    )
    .bind(user.to_string())
    .bind(kind.as_str())
    .fetch_one(ex)
    .await?;
    let row = Row { token_budget_daily: daily, token_budget_monthly: monthly, allowed_config_ids: allowed };
    Ok((row.into_quota()?, active))
}

impl Row {
    fn into_quota(self) -> Result<Quota, StoreError> {
        let allowed_config_ids = match self.allowed_config_ids {
            None => None,
            Some(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Other(anyhow::anyhow!("malformed allowed configs: {e}")))?,
            ),
        };
        Ok(Quota {
            token_budget_daily: self.token_budget_daily,
            token_budget_monthly: self.token_budget_monthly,
            allowed_config_ids,
        })
    }
}

/// Writes a user's whole quota.
pub async fn set<'e, E: Exec<'e>>(ex: E, user: UserId, quota: &Quota) -> Result<(), StoreError> {
    let allowed = match &quota.allowed_config_ids {
        None => None,
        Some(ids) => Some(serde_json::to_string(ids).map_err(anyhow::Error::from)?),
    };
    sqlx::query(
        "insert into user_quotas (user_id, token_budget_daily, token_budget_monthly, allowed_config_ids, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $5)
         on conflict (user_id) do update set token_budget_daily = excluded.token_budget_daily,
             token_budget_monthly = excluded.token_budget_monthly,
             allowed_config_ids = excluded.allowed_config_ids, updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(quota.token_budget_daily)
    .bind(quota.token_budget_monthly)
    .bind(allowed)
    .bind(now_ms())
    .execute(ex)
    .await?;
    Ok(())
}
