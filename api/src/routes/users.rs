//! The signed-in user's own profile.

use crate::error::{ApiError, ApiResult, ErrorEnvelope, FieldErrors};
use crate::extract::{AuthUser, Json};
use crate::state::AppState;
use crate::views::UserProfile;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use parley_shared::domain::{Bio, DisplayName, Username};
use parley_shared::store::users::{self, ProfileChanges};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/users/me", get(me).patch(update_me).delete(delete_me))
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
    /// 3 to 30 letters, digits, `_`, `.` or `-`; empty or `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 30, pattern = r"^([A-Za-z0-9_.-]{3,30})?$")]
    pub username: Option<Option<String>>,
    /// At most 100 characters on one line.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub display_name: Option<String>,
    /// At most 1,000 characters; line breaks and tabs, no other control characters.
    #[schema(max_length = 1000, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
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
            Some(Some(u)) if u.is_empty() => Some(None),
            Some(Some(u)) => errors.check("username", Username::parse(&u)).map(Some),
        },
        display_name: req.display_name.and_then(|d| errors.check("display_name", DisplayName::parse(&d))),
        bio: req.bio.and_then(|b| errors.check("bio", Bio::parse(&b))),
    };
    errors.finish()?;
    let user = users::update_profile(&state.db.writer, auth.user.id, &changes).await?;
    Ok(Json(UserProfile::new(&user, &state.config)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    /// The current password, to confirm. An account without a password (made through an
    /// identity provider) leaves it out and confirms by a sign-in within the last 10 minutes.
    #[serde(default)]
    pub password: Option<String>,
}

/// Deletes the account and everything it owns; every session ends.
#[utoipa::path(delete, path = "/api/users/me/", tag = "accounts", request_body = DeleteAccountRequest, security(("bearer" = [])), responses(
    (status = 204, description = "deleted"), (status = 401, body = ErrorEnvelope),
    (status = 422, description = "a missing or wrong password (`validation_error`), or, for an account without one, a sign-in older than 10 minutes (`reauthentication_required`)", body = ErrorEnvelope)))]
pub async fn delete_me(
    State(state): State<AppState>,
    auth: AuthUser,
    Json(req): Json<DeleteAccountRequest>,
) -> ApiResult<StatusCode> {
    if auth.user.password_hash.is_empty() {
        // No password to confirm with: the session must be fresh instead.
        if !auth.signed_in_recently(&state).await? {
            return Err(ApiError::Unprocessable {
                code: "reauthentication_required",
                message: "this account has no password: sign in again, then delete it within 10 minutes".into(),
            });
        }
    } else {
        let valid = match req.password.as_deref() {
            Some(password) => state.hasher.verify(password, &auth.user.password_hash).await?.valid,
            None => false,
        };
        if !valid {
            let mut errors = FieldErrors::default();
            errors.add("password", if req.password.is_some() { "is not correct" } else { "is required" });
            return Err(errors.into());
        }
    }
    parley_shared::usecases::accounts::delete(
        &state.db,
        state.media.as_ref(),
        parley_shared::exports::store(&state.config).as_ref(),
        &auth.user,
    )
    .await?;
    tracing::info!(user.id = %auth.user.id, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}
