//! The signed-in user's own profile.

use crate::error::{ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AuthUser, Json};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use parley_shared::Config;
use parley_shared::domain::{Bio, DisplayName, Username};
use parley_shared::ids::UserId;
use parley_shared::store::users::{self, ProfileChanges, User};
use parley_shared::time::from_ms;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/users/me", get(me).patch(update_me).delete(delete_me))
}

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
            date_joined: from_ms(user.date_joined),
            last_login: user.last_login.map(from_ms),
        }
    }
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/api/users/me/", tag = "accounts", security(("bearer" = [])), responses(
    (status = 200, body = UserProfile), (status = 401, body = ErrorEnvelope)))]
pub async fn me(State(state): State<AppState>, auth: AuthUser) -> Json<UserProfile> {
    Json(UserProfile::new(&auth.user, &state.config))
}

/// Fields to change; absent fields stay as they are, `"username": null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    #[serde(default, deserialize_with = "present")]
    pub username: Option<Option<String>>,
    pub display_name: Option<String>,
    pub bio: Option<String>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Updates the profile.
#[utoipa::path(patch, path = "/api/users/me/", tag = "accounts", request_body = UpdateProfileRequest, security(("bearer" = [])), responses(
    (status = 200, body = UserProfile), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn update_me(
    State(state): State<AppState>,
    auth: AuthUser,
    Json(req): Json<UpdateProfileRequest>,
) -> ApiResult<Json<UserProfile>> {
    let mut errors = FieldErrors::default();
    let changes = ProfileChanges {
        username: match req.username {
            None => None,
            Some(None) => Some(None),
            Some(Some(u)) if u.trim().is_empty() => Some(None),
            Some(Some(u)) => errors.check("username", Username::parse(&u)).map(Some),
        },
        display_name: req.display_name.and_then(|d| errors.check("display_name", DisplayName::parse(&d))),
        bio: req.bio.and_then(|b| errors.check("bio", Bio::parse(&b))),
    };
    errors.finish()?;
    let user = users::update_profile(&state.db.pool, auth.user.id, &changes).await?;
    Ok(Json(UserProfile::new(&user, &state.config)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    /// The current password, to confirm.
    pub password: String,
}

/// Deletes the account and everything it owns; every session ends.
#[utoipa::path(delete, path = "/api/users/me/", tag = "accounts", request_body = DeleteAccountRequest, security(("bearer" = [])), responses(
    (status = 204, description = "deleted"), (status = 401, body = ErrorEnvelope), (status = 422, description = "wrong password", body = ErrorEnvelope)))]
pub async fn delete_me(
    State(state): State<AppState>,
    auth: AuthUser,
    Json(req): Json<DeleteAccountRequest>,
) -> ApiResult<StatusCode> {
    if !state.hasher.verify(&req.password, &auth.user.password_hash).await?.valid {
        let mut errors = FieldErrors::default();
        errors.add("password", "is not correct");
        return Err(errors.into_error());
    }
    users::delete(&state.db.pool, auth.user.id).await?;
    remove_avatar_files(&state, &auth.user).await;
    tracing::info!(user.id = %auth.user.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a deleted account's avatar files (a failure only leaves orphaned files).
pub async fn remove_avatar_files(state: &AppState, user: &User) {
    if let Some(key) = &user.avatar_key {
        for file in parley_shared::avatar::avatar_files(key) {
            if let Err(e) = state.media.delete(&file).await {
                tracing::warn!(error = %e, "removing a deleted account's avatar failed");
            }
        }
    }
}
