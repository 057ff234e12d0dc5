//! The OpenAPI 3.1 document of every route.

use crate::routes::{admin_jobs, admin_users, auth, avatar, chat, docs, email_flows, health, jobs, llm_configs, users};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Parley API", description = "User accounts and LLM chat, built around durable jobs."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::change_password,
        email_flows::send_verification, email_flows::verify_email,
        email_flows::request_password_reset, email_flows::confirm_password_reset,
        avatar::upload_avatar, avatar::delete_avatar, avatar::serve_avatar,
        users::me, users::update_me, users::delete_me,
        jobs::list_jobs, jobs::get_job, jobs::job_events, jobs::cancel_job,
        chat::chat, chat::list_messages, chat::list_sessions, chat::get_session, chat::update_session,
        chat::delete_session, llm_configs::list_models, llm_configs::list_configs, llm_configs::get_config,
        llm_configs::create_config, llm_configs::update_config, llm_configs::delete_config,
        admin_jobs::queue_stats, admin_jobs::list_all_jobs, admin_jobs::retry_job, admin_jobs::create_noop,
        admin_users::list_users, admin_users::get_user, admin_users::update_user, admin_users::delete_user,
        health::healthz, health::readyz, docs::openapi_json, docs::docs_page,
        crate::routes::sessions::list_sessions, crate::routes::sessions::end_session,
        crate::routes::activity::my_activity, crate::routes::activity::audit_log,
        crate::routes::mfa::mfa_status, crate::routes::mfa::enrol_totp, crate::routes::mfa::confirm_totp,
        crate::routes::mfa::disable_totp, crate::routes::mfa::regenerate_recovery_codes, crate::routes::mfa::verify,
        crate::routes::mfa::admin_remove_factor,
        crate::routes::oauth::list_providers, crate::routes::oauth::authorize, crate::routes::oauth::callback,
        crate::routes::oauth::exchange, crate::routes::identities::list_identities,
        crate::routes::identities::unlink_identity,
    ),
    components(schemas(crate::error::ErrorEnvelope, crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Sign-up, sign-in, sessions and profile"),
        (name = "jobs", description = "Durable jobs: status, events, cancellation"),
        (name = "llm", description = "Chat with LLMs: configs, models, sessions, messages"),
        (name = "admin", description = "User management and queue operations for admins"),
        (name = "operations", description = "Health, readiness and this documentation"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}
