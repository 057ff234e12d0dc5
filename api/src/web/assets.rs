//! The pages' scripts and styles, compiled into the binary.

use crate::state::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const FILES: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/static/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/app.js")),
    ("auth.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/auth.js")),
    ("chat.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/chat.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/admin.js")),
    ("account.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/account.js")),
    ("admin_stats.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/admin_stats.js")),
    ("admin_exports.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/admin_exports.js")),
    ("shared.js", "text/javascript; charset=utf-8", include_bytes!("../../web/static/shared.js")),
];

pub fn routes() -> Router<AppState> {
    Router::new().route("/static/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => {
            ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
