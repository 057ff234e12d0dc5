//! Issuing and rotating a session's token pair.

use crate::audit::RequestMeta;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use parley_shared::audit::AuditAction;
use parley_shared::auth::{hash_token, random_token, successor_token};
use parley_shared::ids::{SessionId, UserId};
use parley_shared::store::sessions;
use parley_shared::time::now_ms;
use serde::Serialize;
use utoipa::ToSchema;

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// Starts a password session for `user` and returns its first pair.
pub async fn start_session(
    state: &AppState,
    user: UserId,
    user_agent: &str,
    ip: &str,
) -> ApiResult<(SessionId, TokenPair)> {
    start_session_with(state, user, user_agent, ip, &[sessions::AMR_PASSWORD]).await
}

/// Starts a session that signed in with the methods `amr`.
pub async fn start_session_with(
    state: &AppState,
    user: UserId,
    user_agent: &str,
    ip: &str,
    amr: &[&str],
) -> ApiResult<(SessionId, TokenPair)> {
    let mut tx = state.db.begin_write().await?;
    let (session, refresh) = insert_session(&mut tx, state, user, user_agent, ip, amr).await?;
    tx.commit().await?;
    Ok((session, pair(state, user, session, refresh, amr)?))
}

/// Writes a session and its first refresh token in the caller's transaction; the pair is
/// [`issue_pair`]'s to make after commit.
pub async fn insert_session(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    state: &AppState,
    user: UserId,
    user_agent: &str,
    ip: &str,
    amr: &[&str],
) -> ApiResult<(SessionId, String)> {
    let expires_at = now_ms() + state.config.session_max_age_secs * 1000;
    let refresh = random_token();
    let session = sessions::create(&mut **tx, user, expires_at, user_agent, ip, amr).await?;
    sessions::insert_refresh(&mut **tx, &hash_token(&refresh), session).await?;
    Ok((session, refresh))
}

/// The first pair of a session written by [`insert_session`].
pub fn issue_pair(
    state: &AppState,
    user: UserId,
    session: SessionId,
    refresh: String,
    amr: &[&str],
) -> ApiResult<TokenPair> {
    pair(state, user, session, refresh, amr)
}

fn pair(state: &AppState, user: UserId, session: SessionId, refresh: String, amr: &[&str]) -> ApiResult<TokenPair> {
    Ok(TokenPair {
        access_token: state.jwt.issue(user, session, amr)?,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: state.jwt.ttl_secs(),
    })
}

/// How many rotations a late duplicate may walk forward to find the current token.
const MAX_GRACE_STEPS: usize = 8;

/// Rotates `presented`. A token rotated less than the grace window ago (another tab of the
/// same client) gets the current pair; an older rotated token means the token was stolen
/// or replayed, and ends the whole session.
pub async fn refresh(state: &AppState, presented: &str, meta: &RequestMeta) -> ApiResult<TokenPair> {
    let hash = hash_token(presented);
    let record = sessions::find_refresh(&state.db.pool, &hash).await?.ok_or(ApiError::Unauthorized)?;
    let amr: Vec<&str> = record.session_amr.split_whitespace().collect();
    let now = now_ms();
    let idle_limit = state.config.session_idle_timeout_secs * 1000;
    if record.session_revoked_at.is_some() || !record.user_active || record.session_expires_at <= now {
        tracing::debug!(session.id = %record.session_id, "refresh on an ended session");
        return Err(ApiError::Unauthorized);
    }
    if now - record.session_last_used_at > idle_limit {
        sessions::revoke(&state.db.writer, record.session_id, "idle_timeout").await?;
        return Err(ApiError::Unauthorized);
    }
    let key = &state.keys.refresh;
    if record.rotated_at.is_none() {
        let next = successor_token(key, presented);
        let mut tx = state.db.begin_write().await?;
        if sessions::mark_rotated(&mut *tx, &hash).await? {
            sessions::insert_refresh(&mut *tx, &hash_token(&next), record.session_id).await?;
            sessions::touch(&mut *tx, record.session_id).await?;
            tx.commit().await?;
            return pair(state, record.user_id, record.session_id, next, &amr);
        }
        // Another request rotated it a moment ago: fall through to the grace path.
        tx.rollback().await?;
    }
    let rotated_at = record.rotated_at.unwrap_or(now);
    if now - rotated_at > state.config.refresh_reuse_grace_secs * 1000 {
        tracing::warn!(session.id = %record.session_id, "refresh token reuse; ending the session");
        let mut tx = state.db.begin_write().await?;
        sessions::revoke(&mut *tx, record.session_id, "refresh_token_reuse").await?;
        meta.event(AuditAction::RefreshTokenReuse)
            .target(record.user_id)
            .failure()
            .details(serde_json::json!({"session_id": record.session_id}))
            .record(&mut *tx)
            .await?;
        tx.commit().await?;
        return Err(ApiError::Unauthorized);
    }
    // Walk the derivation chain to the token that is current now.
    let mut candidate = presented.to_owned();
    for _ in 0..MAX_GRACE_STEPS {
        candidate = successor_token(key, &candidate);
        match sessions::find_refresh(&state.db.pool, &hash_token(&candidate)).await? {
            Some(r) if r.rotated_at.is_none() => {
                return pair(state, record.user_id, record.session_id, candidate, &amr);
            }
            Some(_) => continue,
            None => break,
        }
    }
    Err(ApiError::Unauthorized)
}
