//! The OpenAPI document and an interactive page for it, with Swagger UI's assets compiled
//! into the binary (from the swagger-ui-dist crate), so it works offline.

use crate::state::AppState;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use swagger_ui_dist::{ApiDefinition, OpenApiSource};
use utoipa::OpenApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/docs", get(docs_page))
        .route("/api/docs/init.js", get(docs_script))
}

/// This document: OpenAPI 3.1 of every route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses(
    (status = 200, description = "the OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

/// An interactive page for this document (Swagger UI, served from the binary).
#[utoipa::path(get, path = "/api/docs/", tag = "operations", responses(
    (status = 200, description = "the page", content_type = "text/html")))]
pub async fn docs_page() -> Html<&'static str> {
    Html(INDEX)
}

/// The docs page's script: starts Swagger UI (a file of its own, as the page's
/// Content-Security-Policy allows no inline script).
#[utoipa::path(get, path = "/api/docs/init.js", tag = "operations", responses(
    (status = 200, description = "the script", content_type = "text/javascript")))]
pub async fn docs_script() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], INIT)
}

/// Swagger UI's stylesheet and script, under `/api/docs/ui/`.
pub fn assets() -> Router {
    swagger_ui_dist::generate_routes(ApiDefinition {
        uri_prefix: "/api/docs/ui",
        api_definition: OpenApiSource::Uri("/api/openapi.json"),
        title: Some("Parley API"),
    })
}

const INDEX: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1" />
  <title>Parley API</title>
  <link rel="stylesheet" href="/api/docs/ui/swagger-ui.css" />
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/ui/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>"#;

const INIT: &str = "window.onload = () => {
  window.ui = SwaggerUIBundle({ url: '/api/openapi.json', dom_id: '#swagger-ui', validatorUrl: null });
};
";
