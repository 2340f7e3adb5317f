//! The incident API: `POST /api/v1/incidents` records a window (JSON
//! body: `name`, `from_ms`, `to_ms`, optional `service` and `reason`),
//! `GET /api/v1/incidents` lists the bundles kept, and
//! `GET /api/v1/incidents/{name}/bundle` downloads one,
//! `GET|POST /api/v1/incidents/{name}/replay` replays it (POST: JSON
//! `rules` and/or `policy` YAML as a what-if), and
//! `/api/v1/incidents/{name}/view/…` is the dashboard API over its data.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{IncidentError, Incidents, RecordRequest, check_name};
use keel_http::{bad, fail, ok};

/// The routes.
pub fn routes(incidents: Arc<Incidents>) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/incidents", get(list).post(record))
        .route("/api/v1/incidents/{name}/bundle", get(download))
        // The recorded replay for anyone who reads; a what-if (a body)
        // only by POST, which the server may keep to editors.
        .route(
            "/api/v1/incidents/{name}/replay",
            get(|i: State<Arc<Incidents>>, name: Path<String>| async move {
                replay(i, name, axum::http::HeaderMap::new(), Bytes::new()).await
            })
            .post(replay),
        )
        .route(
            "/api/v1/incidents/{name}/view/{*rest}",
            axum::routing::any(view),
        )
        .map(|r| r.with_state(incidents))
}

async fn list(State(i): State<Arc<Incidents>>) -> Response {
    let all = tokio::task::spawn_blocking(move || i.list())
        .await
        .unwrap_or_default();
    ok(serde_json::to_value(all).unwrap_or_default())
}

async fn record(State(i): State<Arc<Incidents>>, body: Bytes) -> Response {
    let req: RecordRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad(format!(
                "body: {e} (send JSON with name, from_ms and to_ms)"
            ));
        }
    };
    match i.record(req).await {
        Ok(s) => ok(serde_json::to_value(s).unwrap_or_default()),
        Err(e) => answer(e),
    }
}

fn answer(e: IncidentError) -> Response {
    match e {
        IncidentError::Invalid(m) => bad(m),
        e @ IncidentError::NotFound(_) => fail(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e @ IncidentError::Exists(_) => fail(StatusCode::CONFLICT, "conflict", e.to_string()),
        e => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// A what-if: rules and a policy as YAML text.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WhatIf {
    #[serde(default)]
    rules: Option<String>,
    #[serde(default)]
    policy: Option<String>,
}

async fn replay(
    State(i): State<Arc<Incidents>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let w: WhatIf = if body.is_empty() {
        WhatIf::default()
    } else if !headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        // (Not a form a page on another site could post.)
        return fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_data",
            "body: send application/json".into(),
        );
    } else {
        match serde_json::from_slice(&body) {
            Ok(w) => w,
            Err(e) => {
                return bad(format!(
                    "body: {e} (send JSON with rules and/or policy as YAML text)"
                ));
            }
        }
    };
    let blank = |s: Option<String>| s.filter(|t| !t.trim().is_empty());
    let (rules, policy) = (blank(w.rules), blank(w.policy));
    match tokio::task::spawn_blocking(move || i.replay(&name, rules.as_deref(), policy.as_deref()))
        .await
    {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => answer(e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The dashboard API over a bundle: the request goes on to it as
/// `/api/v1/{rest}`.
async fn view(
    State(i): State<Arc<Incidents>>,
    Path((name, _)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    use tower::ServiceExt as _;
    let v = match tokio::task::spawn_blocking(move || i.view(&name)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return answer(e),
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let (mut parts, body) = req.into_parts();
    // The outer route's path parameters must not reach the inner one.
    parts.extensions = Default::default();
    // The rest of the path as sent (still percent-encoded).
    let raw = parts.uri.path();
    let rest = raw
        .find("/view/")
        .map_or("", |i| &raw[i + "/view/".len()..])
        .to_owned();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    parts.uri = match format!("/api/v1/{rest}{query}").parse() {
        Ok(u) => u,
        Err(e) => return bad(format!("path: {e}")),
    };
    match v
        .routes
        .clone()
        .oneshot(axum::extract::Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

async fn download(State(i): State<Arc<Incidents>>, Path(name): Path<String>) -> Response {
    if let Err(e) = check_name(&name) {
        return bad(e.to_string());
    }
    match tokio::fs::read(i.path(&name)).await {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{name}.{}\"",
                        super::bundle::EXTENSION
                    ),
                ),
            ],
            b,
        )
            .into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no incident named {name:?}"),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
