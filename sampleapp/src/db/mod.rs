//! The database tier: a key-value store with a write-ahead log, a primary
//! that streams to replicas (async or sync), measurable lag, promotion
//! under epochs and fencing. See [`node`] for the rules.

pub mod node;
pub mod wal;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use crate::api::{ApiError, Json, Path as UrlPath, Query};
use crate::config::{DbConfig, FsyncPolicy};
use crate::fault;
use crate::spec::DbRole;
use crate::telemetry::{Identity, Metrics, traced_route};
pub use node::{Node, PullRequest, PullResponse, Role, Status};

/// Header carrying the writer's epoch on `PUT /kv/{key}`.
pub const EPOCH_HEADER: &str = "x-keel-epoch";

#[derive(Clone)]
struct DbState {
    node: Node,
    writes: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

/// Every role, as `db_role{role}` names it.
const ROLES: [&str; 4] = ["primary", "replica", "fenced", "read_only"];

fn role_name(r: &Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Replica { .. } => "replica",
        Role::Fenced => "fenced",
        Role::ReadOnly => "read_only",
    }
}

/// Open the node and build its HTTP API; starts replication and WAL flushing.
pub async fn router(
    id: &Identity,
    name: &str,
    config: DbConfig,
    role: DbRole,
    epoch: u64,
    data_dir: &Path,
) -> anyhow::Result<Router> {
    let role = match role {
        DbRole::Primary => Role::Primary,
        DbRole::Replica { primary } => Role::Replica { primary },
        DbRole::ReadOnly => Role::ReadOnly,
    };
    let fsync = (config.fsync, config.fsync_interval);
    let node = Node::open(name, config, role, epoch, data_dir)?;
    node.seed_if_empty()?;
    tokio::spawn(node.clone().replicate(reqwest::Client::new()));
    if fsync.0 == FsyncPolicy::Interval {
        let n = node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(fsync.1);
            loop {
                tick.tick().await;
                n.flush_if_dirty();
            }
        });
    }
    let writes = Counter::default();
    let is_primary: Gauge = Gauge::default();
    let epoch_g: Gauge = Gauge::default();
    let wal_bytes: Gauge = Gauge::default();
    let last_lsn: Gauge = Gauge::default();
    let lag_bytes: Gauge = Gauge::default();
    let lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    let acks: Family<ReplicaLabel, Gauge> = Family::default();
    let roles: Family<RoleLabel, Gauge> = Family::default();
    let metrics = Metrics::new(id, |r| {
        r.register("db_writes", "Writes acknowledged", writes.clone());
        r.register(
            "db_is_primary",
            "1 if this node takes writes",
            is_primary.clone(),
        );
        r.register("db_epoch", "Fencing epoch of this node", epoch_g.clone());
        r.register(
            "db_wal_bytes",
            "Size of the write-ahead log",
            wal_bytes.clone(),
        );
        r.register(
            "db_wal_last_lsn",
            "Last log sequence number",
            last_lsn.clone(),
        );
        r.register(
            "db_replication_lag_bytes",
            "Bytes this replica is behind the primary",
            lag_bytes.clone(),
        );
        r.register(
            "db_replication_lag_seconds",
            "Seconds this replica is behind the primary",
            lag_seconds.clone(),
        );
        r.register(
            "db_role",
            "1 for this node's role (primary, replica, fenced, read_only), 0 for the others",
            roles.clone(),
        );
        r.register(
            "db_replica_acked_lsn",
            "Last lsn each replica acknowledged (primary only)",
            acks.clone(),
        );
    });
    let n = node.clone();
    metrics.on_scrape(move || {
        let s = n.status();
        is_primary.set(i64::from(s.role == Role::Primary));
        epoch_g.set(s.epoch as i64);
        wal_bytes.set(s.wal_bytes as i64);
        last_lsn.set(s.last_lsn as i64);
        lag_bytes.set(s.lag_bytes as i64);
        lag_seconds.set(s.lag_seconds);
        let now = role_name(&s.role);
        for r in ROLES {
            roles
                .get_or_create(&RoleLabel { role: r.into() })
                .set(i64::from(r == now));
        }
        acks.clear();
        for (replica, lsn) in s.replica_acks {
            acks.get_or_create(&ReplicaLabel { replica })
                .set(lsn as i64);
        }
    });
    let faults = node.faults().clone();
    let state = Arc::new(DbState { node, writes });
    let m = metrics.clone();
    // An injected query time is spent inside the server span (the db's
    // own time), unlike latency.
    let data = fault::data_routes(
        Router::new().route("/kv/{key}", get(get_key).put(put_key)),
        metrics.clone(),
        &faults,
    );
    let control = Router::new()
        .route("/repl/pull", get(pull))
        .route("/-/promote", post(promote))
        .route("/-/follow", post(follow))
        .route("/-/fence", post(fence))
        .route("/-/partition", axum::routing::put(partition))
        .route("/-/status", get(status))
        .route("/health", get(health))
        .route_layer(middleware::from_fn_with_state(metrics, traced_route));
    Ok(Router::new()
        .merge(data)
        .merge(control)
        .route_layer(middleware::from_fn_with_state(state.clone(), unanswered))
        .route("/metrics", get(move || async move { m.response() }))
        .fallback(crate::api::not_found)
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(state)
        .merge(fault::router(faults)))
}

/// A request from a peer this node is partitioned from is never answered
/// (it hangs until the peer gives up), as across a cut network link. The
/// partition itself can always be healed.
async fn unanswered(
    State(st): State<Arc<DbState>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let peer = req
        .headers()
        .get(node::PEER_HEADER)
        .and_then(|v| v.to_str().ok());
    if req.uri().path() != "/-/partition" && peer.is_some_and(|p| st.node.is_partitioned_from(p)) {
        std::future::pending::<()>().await;
    }
    next.run(req).await
}

/// An injected query time, spent inside the request's server span.
async fn query_time(st: &DbState) {
    let d = st.node.faults().query_time();
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

async fn get_key(State(st): State<Arc<DbState>>, UrlPath(key): UrlPath<String>) -> Response {
    query_time(&st).await;
    match st.node.get(&key) {
        Some((value, lsn)) => {
            axum::Json(serde_json::json!({ "value": value, "lsn": lsn })).into_response()
        }
        None => ApiError::NotFound(format!("no key {key:?}")).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: serde_json::Value,
}

fn writer_epoch(headers: &HeaderMap) -> Result<u64, ApiError> {
    let raw = headers
        .get(EPOCH_HEADER)
        .ok_or_else(|| ApiError::BadRequest(format!("missing {EPOCH_HEADER} header")))?;
    raw.to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("{EPOCH_HEADER}: not a whole number")))
}

async fn put_key(
    State(st): State<Arc<DbState>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<PutBody>,
) -> Result<Response, ApiError> {
    let epoch = writer_epoch(&headers)?;
    query_time(&st).await;
    let lsn = st.node.put(key, body.value, epoch).await?;
    st.writes.inc();
    Ok(axum::Json(serde_json::json!({ "lsn": lsn, "epoch": epoch })).into_response())
}

async fn pull(
    State(st): State<Arc<DbState>>,
    Query(req): Query<PullRequest>,
) -> Result<axum::Json<PullResponse>, ApiError> {
    st.node.pull(req).await.map(axum::Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    epoch: u64,
}

async fn promote(
    State(st): State<Arc<DbState>>,
    Json(b): Json<PromoteBody>,
) -> Result<axum::Json<Status>, ApiError> {
    st.node.promote(b.epoch)?;
    Ok(axum::Json(st.node.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowBody {
    primary: SocketAddr,
    epoch: u64,
}

async fn follow(
    State(st): State<Arc<DbState>>,
    Json(b): Json<FollowBody>,
) -> Result<axum::Json<Status>, ApiError> {
    st.node.follow(b.primary, b.epoch)?;
    Ok(axum::Json(st.node.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceBody {
    epoch: u64,
}

async fn fence(
    State(st): State<Arc<DbState>>,
    Json(b): Json<FenceBody>,
) -> Result<axum::Json<Status>, ApiError> {
    st.node.fence(b.epoch)?;
    Ok(axum::Json(st.node.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    /// Peers (by the name in their `x-peer-name` header) left unanswered.
    peers: Vec<String>,
}

async fn partition(
    State(st): State<Arc<DbState>>,
    Json(b): Json<PartitionBody>,
) -> axum::Json<Status> {
    st.node.partition(b.peers);
    axum::Json(st.node.status())
}

async fn status(State(st): State<Arc<DbState>>) -> axum::Json<Status> {
    axum::Json(st.node.status())
}

async fn health(State(st): State<Arc<DbState>>) -> (StatusCode, axum::Json<Status>) {
    let s = st.node.status();
    let code = if s.role == Role::Fenced {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(s))
}
