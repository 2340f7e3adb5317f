//! The supervisor's actuator API: processes, scaling, capacity,
//! promotion, fencing, rejoining, partitions and faults over HTTP.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    name: Option<String>,
    epoch: Option<u64>,
    /// Tiers given the new primary (default: `["web"]`).
    repoint: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceBody {
    name: String,
    epoch: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    member: String,
    peers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalParams {
    restart: Option<bool>,
}

/// The actuator API; with `token`, every request must carry it.
pub(super) fn api(sup: Supervisor, token: Option<String>) -> Router {
    Router::new()
        .route("/api/v1/processes", get(|State(s): State<Supervisor>| async move { axum::Json(s.processes()) }))
        .route("/api/v1/processes/{name}/{action}", post(process_action))
        .route("/api/v1/scale/web", get(|State(s): State<Supervisor>| async move { axum::Json(s.scale_status()) }).put(scale))
        .route("/api/v1/web/capacity", get(|State(s): State<Supervisor>| async move { axum::Json(lock(&s.s.capacity).clone()) }).put(capacity))
        .route("/api/v1/db/topology", get(|State(s): State<Supervisor>| async move { axum::Json(s.db_topology()) }))
        .route("/api/v1/db/promote", post(promote))
        .route("/api/v1/db/fence", post(fence))
        .route("/api/v1/db/rejoin", post(rejoin))
        .route("/api/v1/faults/partition", axum::routing::put(partition))
        .route("/api/v1/faults/{name}", get(get_faults).put(put_faults))
        .fallback(crate::api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(keel_core::fencing::Newest::default()),
            newest_leader_only,
        ))
        .layer(axum::middleware::from_fn(no_browser_changes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(sup)
}

/// With a token configured, every request must carry it (`Authorization:
/// Bearer …`), reads too: the process list names pids and addresses.
async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let Some(want) = token.as_deref() else {
        return next.run(req).await;
    };
    let given = keel_core::secret::bearer(
        req.headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    if given.is_ok_and(|g| keel_core::secret::same_token(g.as_bytes(), want.as_bytes())) {
        return next.run(req).await;
    }
    let why = match given {
        Err(keel_core::secret::BearerError::Missing) => {
            "the supervisor's API needs its token: send Authorization: Bearer <sampleapp.supervisor.token>"
        }
        _ => "the token is not the supervisor's (sampleapp.supervisor.token)",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"keel-sampleapp\"",
        )],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// A change sent under a fencing token ([`keel_core::fencing`]: the
/// leader of a collector pair) older than one already seen is refused
/// (409): a deposed leader's late request must not undo what the new
/// leader did. Reads and changes without a token pass.
async fn newest_leader_only(
    State(newest): State<Arc<keel_core::fencing::Newest>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        return next.run(req).await;
    }
    let admitted = newest.admit_headers(|h| req.headers().get(h).and_then(|v| v.to_str().ok()));
    match admitted {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(error = %e, path = %req.uri().path(), "a change from a deposed leader was refused");
            (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
                axum::Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    }
}

/// The actuator API kills, scales and promotes: a change a browser sends
/// (a page on any site can post to a loopback port) is refused; the
/// controller, `keel scenario` and curl send no `Origin`.
async fn no_browser_changes(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let browser = ["origin", "sec-fetch-site"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    if browser && !read {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                serde_json::json!({"error": "the supervisor takes no changes from a browser"}),
            ),
        )
            .into_response();
    }
    next.run(req).await
}

async fn process_action(
    State(s): State<Supervisor>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    Query(p): Query<SignalParams>,
) -> Result<axum::Json<ProcInfo>, ApiError> {
    let info = match action.as_str() {
        "stop" => s.signal(&name, Signal::SIGTERM, false).await?,
        "kill" => {
            s.signal(&name, Signal::SIGKILL, p.restart.unwrap_or(true))
                .await?
        }
        "start" => s.start_process(&name).await?,
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown action {other:?}: use stop, kill or start"
            )));
        }
    };
    Ok(axum::Json(info))
}

async fn scale(
    State(s): State<Supervisor>,
    Json(b): Json<ScaleBody>,
) -> Result<axum::Json<ScaleStatus>, ApiError> {
    s.scale_web(b.replicas).await.map(axum::Json)
}

async fn capacity(
    State(s): State<Supervisor>,
    Json(c): Json<Capacity>,
) -> Result<axum::Json<Capacity>, ApiError> {
    s.set_capacity(c).await.map(axum::Json)
}

async fn promote(
    State(s): State<Supervisor>,
    body: axum::body::Bytes,
) -> Result<axum::Json<PromoteReport>, ApiError> {
    let b: PromoteBody = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let webs = match &b.repoint {
        None => true,
        Some(tiers) => {
            if let Some(t) = tiers.iter().find(|t| *t != "web") {
                return Err(ApiError::BadRequest(format!(
                    "repoint: {t:?} is not a tier that follows the db (web)"
                )));
            }
            !tiers.is_empty()
        }
    };
    s.promote_repointing(b.name, b.epoch, webs)
        .await
        .map(axum::Json)
}

async fn fence(
    State(s): State<Supervisor>,
    Json(b): Json<FenceBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.fence(&b.name, b.epoch).await.map(axum::Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejoinBody {
    name: String,
}

async fn rejoin(
    State(s): State<Supervisor>,
    Json(b): Json<RejoinBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.rejoin(&b.name).await.map(axum::Json)
}

async fn partition(
    State(s): State<Supervisor>,
    Json(b): Json<PartitionBody>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.partition(&b.member, b.peers).await.map(axum::Json)
}

async fn put_faults(
    State(s): State<Supervisor>,
    UrlPath(name): UrlPath<String>,
    Json(b): Json<crate::fault::FaultSettings>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.faults(&name, b).await.map(axum::Json)
}

async fn get_faults(
    State(s): State<Supervisor>,
    UrlPath(name): UrlPath<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    s.faults(&name, crate::fault::FaultSettings::default())
        .await
        .map(axum::Json)
}
