//! The OpenAPI 3.1 document of every route.

use crate::routes::{
    admin_jobs, admin_users, api_keys, auth, avatar, chat, docs, email_flows, health, jobs, llm_configs, openai, users,
};
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
        health::healthz, health::readyz, crate::metrics::public_metrics, docs::openapi_json, docs::docs_page,
        docs::docs_script,
        api_keys::create_key, api_keys::list_keys, api_keys::revoke_key, api_keys::admin_list_keys,
        api_keys::admin_revoke_key, openai::list_models, openai::chat_completions,
        crate::routes::sessions::list_sessions, crate::routes::sessions::end_session,
        crate::routes::activity::my_activity, crate::routes::activity::audit_log,
        crate::routes::mfa::mfa_status, crate::routes::mfa::enrol_totp, crate::routes::mfa::confirm_totp,
        crate::routes::mfa::disable_totp, crate::routes::mfa::regenerate_recovery_codes, crate::routes::mfa::verify,
        crate::routes::mfa::admin_remove_factor,
        crate::routes::oauth::list_providers, crate::routes::oauth::authorize, crate::routes::oauth::callback,
        crate::routes::oauth::exchange, crate::routes::identities::list_identities,
        crate::routes::identities::unlink_identity,
        crate::routes::usage::my_usage, crate::routes::usage::all_usage,
        crate::routes::exports::export_me, crate::routes::exports::admin_export, crate::routes::exports::download,
        crate::routes::exports::export_session,
        crate::routes::shares::create_share, crate::routes::shares::list_shares, crate::routes::shares::revoke_share,
        crate::routes::shares::shared_snapshot, crate::routes::schedules::list_schedules,
        crate::routes::stats::admin_stats,
    ),
    components(schemas(
        crate::error::ErrorEnvelope,
        crate::error::ErrorBody,
        // Named by query parameters, which do not register what they name.
        parley_shared::audit::AuditAction,
        parley_shared::audit::AuditResult,
        parley_shared::jobs::JobStatus,
        parley_shared::auth::api_keys::Scope,
    )),
    modifiers(&BearerAuth, &StandardResponses),
    tags(
        (name = "accounts", description = "Sign-up, sign-in, sessions and profile"),
        (name = "jobs", description = "Durable jobs: status, events, cancellation"),
        (name = "llm", description = "Chat with LLMs: configs, models, sessions, messages"),
        (name = "admin", description = "User management and queue operations for admins"),
        (name = "api-keys", description = "Personal API keys for the OpenAI-compatible endpoints"),
        (name = "openai", description = "OpenAI-compatible endpoints: authenticated by a personal API key, errors in OpenAI's shape"),
        (name = "operations", description = "Health, readiness, metrics and this documentation"),
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
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk-parley-...")
                    .description(Some("A personal API key; accepted on the /v1 endpoints only"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("PARLEY_METRICS_TOKEN")).build(),
            ),
        );
    }
}

/// The answers every operation of a kind can give, added where a route's own list leaves
/// them out, so that the document says exactly what the server does:
/// - with a bearer requirement: 401 (a missing, bad or expired token), and 403 on admin
///   routes;
/// - with a JSON or multipart body: 400 (unreadable), 413 (too large), 415 (wrong content
///   type) and 422 (well-formed but refused);
/// - with query parameters: 400 (unparsable) and 422 (a value out of range);
/// - with path parameters: 404;
/// - with an `Idempotency-Key` header: 400 (a key that breaks its format).
struct StandardResponses;

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The OpenAI-compatible routes answer in OpenAI's error shape and document it
            // themselves.
            if path.starts_with("/v1/") {
                continue;
            }
            let admin_path = path.starts_with("/api/admin/") || path.starts_with("/api/llm/configs");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                let params = op.parameters.as_deref().unwrap_or_default();
                let has = |place: ParameterIn| params.iter().any(|p| p.parameter_in == place);
                let (query, path) = (has(ParameterIn::Query), has(ParameterIn::Path));
                let idempotent = params.iter().any(|p| p.name.eq_ignore_ascii_case("idempotency-key"));
                for param in op.parameters.iter_mut().flatten() {
                    if param.name.eq_ignore_ascii_case("idempotency-key") {
                        param.schema = Some(idempotency_key_schema());
                    }
                }
                let body = op.request_body.is_some();
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let admin_only = secured && admin_path;
                let mut add = |status: &str, description: &str| {
                    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
                };
                if secured {
                    add("401", "a missing, malformed or expired access token, or an ended session");
                }
                if admin_only {
                    add("403", "the caller is not an admin");
                }
                if body {
                    add("400", "the body cannot be read (`invalid_json`, `invalid_body`)");
                    add("413", "the body is larger than allowed");
                    add("415", "the body's content type is not the one expected");
                    add("422", "the body is well-formed but refused (`validation_error` names the fields)");
                }
                if query {
                    add("400", "the query string cannot be parsed (`invalid_query`)");
                    add("422", "a query parameter is out of range (`validation_error`)");
                }
                if idempotent {
                    add("400", "the `Idempotency-Key` header breaks its format (`invalid_header`)");
                }
                if path {
                    add("404", "no such resource, or not the caller's");
                }
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))))
        .build()
        .into()
}

fn idempotency_key_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use crate::idempotency::{KEY_PATTERN, MAX_KEY_LEN};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .pattern(Some(KEY_PATTERN))
        .into()
}
