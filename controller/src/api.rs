//! `GET /api/v1/events?since=&subject=&limit=`: the controller's events,
//! oldest first (default: the last hour, at most 1,000, the newest when
//! there are more). `since` is RFC 3339 or Unix seconds.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::run::Controller;

#[derive(serde::Deserialize)]
struct Params {
    since: Option<String>,
    subject: Option<String>,
    limit: Option<usize>,
}

/// The routes.
pub fn routes(c: Arc<Controller>, clock: keel_core::clock::SharedClock) -> Router {
    Router::new()
        .route("/api/v1/events", get(events))
        .with_state((c, clock))
}

fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0) as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map(keel_core::clock::unix_ms)
        .map_err(|e| format!("since: {s:?} is neither RFC 3339 nor Unix seconds: {e}"))
}

async fn events(
    State((c, clock)): State<(Arc<Controller>, keel_core::clock::SharedClock)>,
    Query(p): Query<Params>,
) -> Response {
    let since = match p.since.as_deref().map(parse_since) {
        None => clock.now_ms() - 3_600_000,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"status": "error", "error": e})),
            )
                .into_response();
        }
    };
    let list = c.events(since, p.subject.as_deref(), p.limit.unwrap_or(1000));
    axum::Json(serde_json::json!({"status": "success", "data": list})).into_response()
}
