//! `GET /api/v1/notifications` (every page and how its sending went),
//! `GET /api/v1/tickets` (P2 tickets, open and closed), silences
//! (`GET`/`POST /api/v1/silences`, `DELETE /api/v1/silences/{id}`
//! expires one) and `POST /api/v1/alerts/ack`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::Notifier;

/// The routes.
pub fn routes(n: Arc<Notifier>) -> keel_http::Routes {
    keel_http::Routes::new()
        .route(
            "/api/v1/notifications",
            get(|State(n): State<Arc<Notifier>>| async move {
                axum::Json(json!({"status": "success", "data": n.deliveries().into_iter().map(redacted).collect::<Vec<_>>()}))
            }),
        )
        .route(
            "/api/v1/tickets",
            get(|State(n): State<Arc<Notifier>>| async move {
                axum::Json(json!({"status": "success", "data": n.tickets()}))
            }),
        )
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/alerts/ack", post(ack))
        .map(|r| r.with_state(n))
}

/// A new silence.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<String>,
    /// RFC 3339; default now.
    #[serde(default)]
    starts_at: Option<String>,
    /// How long (`2h`).
    duration: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

fn bad(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "error": msg})),
    )
        .into_response()
}

async fn add_silence(
    State(n): State<Arc<Notifier>>,
    body: Result<axum::Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(b) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    let duration = match keel_core::duration::parse(&b.duration) {
        Ok(d) => d,
        Err(e) => return bad(format!("duration: {e}")),
    };
    let start = match b.starts_at.as_deref().map(|s| s.parse::<jiff::Timestamp>()) {
        None => None,
        Some(Ok(t)) => Some(t.as_millisecond()),
        Some(Err(e)) => return bad(format!("starts_at: {e}")),
    };
    match n.silence(&b.matchers, start, duration, &b.created_by, &b.comment) {
        Ok(s) => axum::Json(json!({"status": "success", "data": s})).into_response(),
        Err(e) => bad(e),
    }
}

async fn list_silences(State(n): State<Arc<Notifier>>) -> Response {
    axum::Json(json!({"status": "success", "data": n.silences()})).into_response()
}

async fn expire_silence(State(n): State<Arc<Notifier>>, Path(id): Path<u64>) -> Response {
    if n.expire(id) {
        axum::Json(json!({"status": "success"})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "error", "error": format!("no silence {id}")})),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    matchers: Vec<String>,
}

async fn ack(
    State(n): State<Arc<Notifier>>,
    body: Result<axum::Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(b) = match body {
        Ok(b) => b,
        Err(e) => return bad(e.body_text()),
    };
    match n.ack(&b.matchers) {
        Ok(count) => axum::Json(json!({"status": "success", "data": {"acknowledged": count}}))
            .into_response(),
        Err(e) => bad(e),
    }
}

/// A delivery as readers see it: a webhook receiver's path (often its
/// secret) redacted, in its name and in the error that may quote it.
fn redacted(mut d: crate::notify::Delivery) -> crate::notify::Delivery {
    let shown = keel_core::secret::redact_url_path(&d.receiver);
    if shown != d.receiver {
        d.last_error = d.last_error.map(|e| e.replace(&d.receiver, &shown));
        d.receiver = shown;
    }
    d
}
