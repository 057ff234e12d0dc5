//! Quotas: whether a user may start a reply on a config, checked before its job is created.
//! A budget counts every token recorded so far (prompt and completion, titles included) in
//! the current UTC day or month; a reply that crosses it finishes, and the next is refused
//! until the budget resets.

use crate::error::StoreError;
use crate::ids::{LlmConfigId, UserId};
use crate::store::quotas::{self, Quota};
use crate::store::usage;
use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

/// The budgets a user without their own has (`PARLEY_TOKEN_BUDGET_DAILY`, `_MONTHLY`);
/// `None` is no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultBudgets {
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
}

/// Which budget was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Daily,
    Monthly,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Monthly => "monthly",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("this model is not allowed for the account")]
    ConfigNotAllowed,
    #[error("the {} token budget is spent", .period.as_str())]
    Exceeded { period: BudgetPeriod, resets_at: DateTime<Utc> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One budget and what is used of it.
#[derive(Debug, Clone, Copy)]
pub struct BudgetUse {
    /// `None`: no limit.
    pub budget: Option<i64>,
    pub used: i64,
    pub resets_at: DateTime<Utc>,
}

/// A user's budgets now, with their own quota applied over the defaults.
#[derive(Debug, Clone)]
pub struct QuotaStatus {
    pub quota: Quota,
    pub daily: BudgetUse,
    pub monthly: BudgetUse,
}

/// The user's quota and what is used of each budget.
pub async fn status(
    conn: &mut AnyConnection,
    user: UserId,
    defaults: DefaultBudgets,
) -> Result<QuotaStatus, StoreError> {
    let quota = quotas::get(&mut *conn, user).await?;
    status_of(conn, user, quota, defaults).await
}

/// Whether a budget applies to the user of `quota` (so [`check_with`] reads their token use).
pub fn has_budget(quota: &Quota, defaults: DefaultBudgets) -> bool {
    quota.token_budget_daily.or(defaults.daily).is_some() || quota.token_budget_monthly.or(defaults.monthly).is_some()
}

/// [`status`] for a quota already read.
async fn status_of(
    conn: &mut AnyConnection,
    user: UserId,
    quota: Quota,
    defaults: DefaultBudgets,
) -> Result<QuotaStatus, StoreError> {
    let now = Utc::now();
    let used_today = usage::total_since(&mut *conn, user, &usage::day_of(now)).await?;
    let used_month = usage::total_since(&mut *conn, user, &usage::month_start(now)).await?;
    Ok(QuotaStatus {
        daily: BudgetUse {
            budget: quota.token_budget_daily.or(defaults.daily),
            used: used_today,
            resets_at: usage::next_day(now),
        },
        monthly: BudgetUse {
            budget: quota.token_budget_monthly.or(defaults.monthly),
            used: used_month,
            resets_at: usage::next_month(now),
        },
        quota,
    })
}

/// Refuses a reply on `config` the user may not use, or when a budget is spent.
pub async fn check(
    conn: &mut AnyConnection,
    user: UserId,
    config: LlmConfigId,
    defaults: DefaultBudgets,
) -> Result<(), QuotaError> {
    let quota = quotas::get(&mut *conn, user).await?;
    check_with(conn, user, quota, config, defaults).await
}

/// [`check`] for a quota already read.
pub async fn check_with(
    conn: &mut AnyConnection,
    user: UserId,
    quota: Quota,
    config: LlmConfigId,
    defaults: DefaultBudgets,
) -> Result<(), QuotaError> {
    if !quota.allows(config) {
        return Err(QuotaError::ConfigNotAllowed);
    }
    // Without a budget there is nothing to add up.
    if !has_budget(&quota, defaults) {
        return Ok(());
    }
    let status = status_of(conn, user, quota, defaults).await?;
    // The later reset first: a spent month outlasts a spent day.
    for (period, b) in [(BudgetPeriod::Monthly, status.monthly), (BudgetPeriod::Daily, status.daily)] {
        if b.budget.is_some_and(|budget| b.used >= budget) {
            return Err(QuotaError::Exceeded { period, resets_at: b.resets_at });
        }
    }
    Ok(())
}
