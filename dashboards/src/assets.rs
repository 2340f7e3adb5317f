//! The web pages, embedded at build time from `dashboards/web/` (plain
//! ES modules and uPlot's own distribution files; no build step), served
//! under `/ui/` (gzipped for browsers that accept it), with `/` leading
//! there.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// (path under /ui/, content type, bytes).
const FILES: [(&str, &str, &str); 5] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "vendor/uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/vendor/uPlot.esm.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../web/vendor/uPlot.min.css"),
    ),
];

/// The routes.
pub fn routes() -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|h: HeaderMap| async move { file("index.html", &h) }),
        )
        .route(
            "/ui/{*path}",
            get(|Path(p): Path<String>, h: HeaderMap| async move { file(&p, &h) }),
        )
}

/// Each file gzipped at the smallest level, once, on first use.
fn gzipped(i: usize) -> &'static [u8] {
    static GZ: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let all = GZ.get_or_init(|| {
        FILES
            .iter()
            .map(|(_, _, body)| keel_http::gzip::compress(body.as_bytes(), 9))
            .collect()
    });
    &all[i]
}

fn file(path: &str, req: &HeaderMap) -> Response {
    match FILES.iter().position(|(p, _, _)| *p == path) {
        Some(i) => {
            let (_, ty, body) = FILES[i];
            let headers = [
                (header::CONTENT_TYPE, ty),
                (header::CACHE_CONTROL, "no-cache"),
                (header::VARY, "accept-encoding"),
            ];
            if keel_http::gzip::accepts(req) {
                (headers, [(header::CONTENT_ENCODING, "gzip")], gzipped(i)).into_response()
            } else {
                (headers, body).into_response()
            }
        }
        // Pages are one document: any other path under /ui/ that is not a
        // file is the app (its router reads the URL).
        None if !path.contains('.') => file("index.html", req),
        None => (StatusCode::NOT_FOUND, format!("no file {path:?}")).into_response(),
    }
}
