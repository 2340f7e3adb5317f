//! The controller's API:
//!
//! - `GET /api/v1/events?since=&subject=&limit=`: the controller's events,
//!   oldest first (default: the last hour, at most 1,000, the newest when
//!   there are more). `since` is RFC 3339 or Unix seconds.
//! - `GET /api/v1/failover`: each failover target's primary, epoch, state
//!   and last probe of every member.
//! - `POST /api/v1/failover` `{"target": …, "to": …}` (both optional when
//!   there is one target; `to` defaults to the best replica): fail over
//!   now. `POST /api/v1/switchover`, the same body: a planned switchover
//!   that loses nothing. A member that may not be promoted is a 409 that
//!   says why, and nothing changes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::run::Controller;

#[derive(serde::Deserialize)]
struct Params {
    since: Option<String>,
    subject: Option<String>,
    limit: Option<usize>,
}

/// The routes.
pub fn routes(c: Arc<Controller>, clock: keel_core::clock::SharedClock) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/events", get(events))
        .route("/api/v1/failover", get(failover_status).post(failover))
        .route("/api/v1/switchover", post(switchover))
        .map(|r| r.with_state((c, clock)))
}

type St = State<(Arc<Controller>, keel_core::clock::SharedClock)>;

fn error(code: StatusCode, e: String) -> Response {
    (
        code,
        axum::Json(serde_json::json!({"status": "error", "error": e})),
    )
        .into_response()
}

async fn failover_status(State((c, _)): St) -> Response {
    let list: Vec<crate::failover::Status> = c.failovers().iter().map(|f| f.status()).collect();
    axum::Json(serde_json::json!({"status": "success", "data": list})).into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Move {
    target: Option<String>,
    to: Option<String>,
}

/// The target a request names (or the only one) and the member asked for.
fn target(
    c: &Controller,
    body: &[u8],
) -> Result<(Arc<crate::failover::Failover>, Option<String>), (StatusCode, String)> {
    let m: Move = if body.iter().all(u8::is_ascii_whitespace) {
        Move::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?
    };
    let f = match (&m.target, c.failovers()) {
        (Some(t), _) => c
            .failover(t)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no failover target {t:?}")))?,
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err((
                StatusCode::NOT_FOUND,
                "no failover target is configured".into(),
            ));
        }
        (None, _) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "several failover targets: name one (\"target\")".into(),
            ));
        }
    };
    Ok((f, m.to))
}

/// A failover or a switchover, as its body asks.
#[derive(Clone, Copy)]
enum Action {
    Failover,
    Switchover,
}

async fn failover(st: St, body: axum::body::Bytes) -> Response {
    act(st, body, Action::Failover).await
}

async fn switchover(st: St, body: axum::body::Bytes) -> Response {
    act(st, body, Action::Switchover).await
}

async fn act(State((c, _)): St, body: axum::body::Bytes, action: Action) -> Response {
    let (f, to) = match target(&c, &body) {
        Ok(t) => t,
        Err((code, e)) => return error(code, e),
    };
    // On a task of its own: a client that goes away must not leave it
    // half done.
    let task = f.clone();
    let done = tokio::spawn(async move {
        match action {
            Action::Failover => task.failover(to.as_deref()).await,
            Action::Switchover => task.switchover(to.as_deref()).await,
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("the task failed: {e}")));
    match done {
        Ok(p) => axum::Json(
            serde_json::json!({"status": "success", "data": {"promoted": p, "target": f.status()}}),
        )
        .into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
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
