//! The web pages, embedded at build time from `dashboards/web/` (plain
//! ES modules and uPlot's own distribution files; no build step), served
//! under `/ui/`, with `/` leading there.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// (path under /ui/, content type, bytes).
const FILES: [(&str, &str, &str); 5] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../dashboards/web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../dashboards/web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../dashboards/web/style.css"),
    ),
    (
        "vendor/uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../dashboards/web/vendor/uPlot.esm.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../../dashboards/web/vendor/uPlot.min.css"),
    ),
];

/// The routes.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { file("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(p): Path<String>| async move { file(&p) }),
        )
}

fn file(path: &str) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        // Pages are one document: any other path under /ui/ that is not a
        // file is the app (its router reads the URL).
        None if !path.contains('.') => file("index.html"),
        None => (StatusCode::NOT_FOUND, format!("no file {path:?}")).into_response(),
    }
}
