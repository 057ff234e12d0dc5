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
        .route("/api/openapi.json", get(|| async { Json(crate::openapi::ApiDoc::openapi()) }))
        .route("/api/docs", get(|| async { Html(INDEX) }))
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
<script>
  window.onload = () => { window.ui = SwaggerUIBundle({ url: '/api/openapi.json', dom_id: '#swagger-ui' }); };
</script>
</body>
</html>"#;
