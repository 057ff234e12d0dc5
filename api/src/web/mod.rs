//! The web app: server-rendered pages (handlebars templates compiled into the binary), small
//! plain script files, and the browser's cookie session. Pages read and change data through
//! the JSON API with the session cookie and the CSRF token; nothing is fetched from another
//! host. The pages are HTML, left out of the OpenAPI document.

pub mod assets;
pub mod cookies;
mod pages;

use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/signin", get(pages::signin))
        .route("/signup", get(pages::signup))
        .route("/verify-email", get(pages::verify_email))
        .route("/forgot-password", get(pages::forgot_password))
        .route("/reset-password", get(pages::reset_password))
        .route("/session", post(pages::start_session))
        .route("/signout", post(pages::signout))
        .route("/chat", get(pages::chat))
        .route("/account", get(pages::account))
        .route("/admin", get(pages::admin_users))
        .route("/admin/jobs", get(pages::admin_jobs))
        .route("/admin/models", get(pages::admin_models))
        .route("/admin/audit", get(pages::admin_audit))
        .route("/admin/stats", get(pages::admin_stats))
        .route("/admin/exports", get(pages::admin_exports))
        .route("/shared/{share_id}", get(pages::shared))
        .merge(assets::routes())
}
