//! The router: one module per route group.

pub mod activity;
pub mod admin_jobs;
pub mod admin_users;
pub mod api_keys;
pub mod auth;
pub mod avatar;
pub mod chat;
pub mod docs;
pub mod email_flows;
pub mod exports;
pub mod health;
pub mod identities;
pub mod jobs;
pub mod llm_configs;
pub mod mfa;
pub mod oauth;
pub mod openai;
pub mod schedules;
pub mod sessions;
pub mod shares;
pub mod stats;
pub mod usage;
pub mod users;

use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_json_body_bytes;
    let headers = crate::headers::SecurityHeaders::new(&state.config.public_url);
    Router::new()
        .merge(auth::routes())
        .merge(email_flows::routes())
        .merge(users::routes())
        .merge(avatar::routes(state.config.max_avatar_bytes))
        .merge(health::routes())
        .merge(jobs::routes())
        .merge(admin_jobs::routes())
        .merge(admin_users::routes())
        .merge(chat::routes(state.config.llm_max_message_chars, body_limit))
        .merge(llm_configs::routes())
        .merge(api_keys::routes())
        .merge(openai::routes(state.config.llm_max_message_chars, body_limit))
        .merge(docs::routes())
        .merge(sessions::routes())
        .merge(activity::routes())
        .merge(mfa::routes())
        .merge(oauth::routes())
        .merge(identities::routes())
        .merge(crate::web::routes())
        .merge(usage::routes())
        .merge(exports::routes())
        .merge(shares::routes())
        .merge(schedules::routes())
        .merge(stats::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .merge(docs::assets())
        .layer(axum::middleware::from_fn_with_state(headers, crate::headers::set))
}
