//! The incident API: `POST /api/v1/incidents` records a window (JSON
//! body: `name`, `from_ms`, `to_ms`, optional `service` and `reason`),
//! `GET /api/v1/incidents` lists the bundles kept, and
//! `GET /api/v1/incidents/{name}/bundle` downloads one.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{IncidentError, Incidents, RecordRequest, check_name};
use crate::api::{bad, fail, ok};

/// The routes.
pub fn routes(incidents: Arc<Incidents>) -> Router {
    Router::new()
        .route("/api/v1/incidents", get(list).post(record))
        .route("/api/v1/incidents/{name}/bundle", get(download))
        .with_state(incidents)
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
        Err(IncidentError::Invalid(m)) => bad(m),
        Err(e @ IncidentError::Exists(_)) => fail(StatusCode::CONFLICT, "conflict", e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
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
