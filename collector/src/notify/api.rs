//! `GET /api/v1/notifications` (every page and how its sending went) and
//! `GET /api/v1/tickets` (P2 tickets, open and closed).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::json;

use super::Notifier;

/// The routes.
pub fn routes(n: Arc<Notifier>) -> Router {
    Router::new()
        .route(
            "/api/v1/notifications",
            get(|State(n): State<Arc<Notifier>>| async move {
                axum::Json(json!({"status": "success", "data": n.deliveries()}))
            }),
        )
        .route(
            "/api/v1/tickets",
            get(|State(n): State<Arc<Notifier>>| async move {
                axum::Json(json!({"status": "success", "data": n.tickets()}))
            }),
        )
        .with_state(n)
}
