//! The signed-in user's linked provider accounts.

use crate::audit::RequestMeta;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{AuthUser, Json};
use crate::pagination::Page;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use parley_shared::audit::AuditAction;
use parley_shared::ids::IdentityId;
use parley_shared::store::identities::{self, Identity};
use serde::Serialize;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users/me/identities", get(list_identities))
        .route("/api/users/me/identities/{id}", delete(unlink_identity))
}

/// A provider account that signs in to this account.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    #[schema(value_type = String, format = Uuid)]
    pub id: IdentityId,
    /// `github`, `google`, or a configured OIDC name.
    pub provider: String,
    /// The email the provider gave when it was linked.
    pub email: String,
    pub created_at: DateTime<Utc>,
}

impl From<Identity> for IdentityView {
    fn from(i: Identity) -> Self {
        Self { id: i.id, provider: i.provider, email: i.email, created_at: i.created_at.0 }
    }
}

/// The caller's linked identities, oldest first.
#[utoipa::path(get, path = "/api/users/me/identities/", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, body = Page<IdentityView>), (status = 401, body = ErrorEnvelope)))]
pub async fn list_identities(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<Page<IdentityView>>> {
    let rows = identities::list(&state.db.pool, auth.user.id).await?;
    Ok(Json(Page::whole(rows.into_iter().map(IdentityView::from).collect())))
}

/// Unlinks one identity; never the account's last way to sign in (an account without a
/// password keeps its last identity).
#[utoipa::path(delete, path = "/api/users/me/identities/{id}/", tag = "accounts", params(("id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "unlinked"),
    (status = 401, body = ErrorEnvelope),
    (status = 404, body = ErrorEnvelope),
    (status = 409, description = "last_sign_in_method: set a password first", body = ErrorEnvelope)))]
pub async fn unlink_identity(
    State(state): State<AppState>,
    auth: AuthUser,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: IdentityId = id.parse().map_err(|_| ApiError::NotFound)?;
    let user = auth.user.id;
    let mut tx = state.db.begin_write().await?;
    let remaining = identities::count(&mut *tx, user).await?;
    let identity =
        identities::list(&mut *tx, user).await?.into_iter().find(|i| i.id == id).ok_or(ApiError::NotFound)?;
    if auth.user.password_hash.is_empty() && remaining <= 1 {
        return Err(ApiError::StateConflict {
            code: "last_sign_in_method",
            message: "this is the account's only way to sign in: set a password (by a reset) first".into(),
        });
    }
    identities::delete(&mut *tx, user, id).await?;
    let details = serde_json::json!({"provider": identity.provider, "identity_id": id});
    meta.event(AuditAction::IdentityUnlink).by(user).details(details).record(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
