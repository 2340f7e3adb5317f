//! The load balancer: a reverse proxy over the web instances.
//!
//! - Strategies: round robin and least connections.
//! - Active health checks (`GET /health` every interval; `healthy_threshold`
//!   successes to join, `unhealthy_threshold` failures to leave) plus
//!   passive ones: a backend that refuses a connection is taken out at once
//!   and the request, which never reached it, goes to another backend.
//! - Backends are added and removed at run time (`/-/backends`); removal
//!   drains: no new requests, and the call returns once in-flight requests
//!   are done (or the drain timeout passes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::Notify;

use crate::api::{ApiError, Json, Path};
use crate::config::{HealthConfig, LbConfig, Strategy};
use crate::spec::BackendSpec;
use crate::telemetry::{Identity, Metrics, send_traced, serve_traced};

/// Largest request body the lb forwards.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The route label the lb gives every proxied request: it forwards paths
/// without knowing the backends' route templates.
pub const PROXY_ROUTE: &str = "/*";

struct Backend {
    name: String,
    addr: SocketAddr,
    healthy: AtomicBool,
    draining: AtomicBool,
    removed: AtomicBool,
    in_flight: AtomicUsize,
    successes: AtomicU32,
    idle: Notify,
}

impl Backend {
    fn new(spec: &BackendSpec, healthy: bool) -> Arc<Self> {
        Arc::new(Self {
            name: spec.name.clone(),
            addr: spec.addr,
            healthy: AtomicBool::new(healthy),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            successes: AtomicU32::new(0),
            idle: Notify::new(),
        })
    }

    fn mark_down(&self, why: &str) {
        self.successes.store(0, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(backend = %self.name, addr = %self.addr, reason = why, "backend unhealthy");
        }
    }
}

/// Releases a backend's in-flight slot when dropped.
struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    backend: String,
    kind: String,
}

struct LbState {
    backends: RwLock<Vec<Arc<Backend>>>,
    config: LbConfig,
    next: AtomicUsize,
    client: reqwest::Client,
    health_client: reqwest::Client,
    metrics: Arc<Metrics>,
    requests: Family<BackendLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    /// Requests received, counted on arrival (before any answer): what
    /// demand is, where finished requests lag behind a burst.
    received: Counter,
}

type St = Arc<LbState>;

/// A backend as `GET /-/backends` lists it.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// Receiving traffic (if not draining).
    pub healthy: bool,
    /// Being removed.
    pub draining: bool,
    /// Requests now in flight to it.
    pub in_flight: usize,
}

impl LbState {
    fn list(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Choose a healthy, non-draining backend not in `skip`, and count the
    /// request against it before the lock is released (so a drain that
    /// starts now waits for it).
    fn pick(&self, skip: &[SocketAddr]) -> Option<InFlight> {
        let list = self.backends.read().unwrap_or_else(|e| e.into_inner());
        let ok: Vec<&Arc<Backend>> = list
            .iter()
            .filter(|b| {
                b.healthy.load(Ordering::Relaxed)
                    && !b.draining.load(Ordering::Relaxed)
                    && !skip.contains(&b.addr)
            })
            .collect();
        if ok.is_empty() {
            return None;
        }
        let chosen = match self.config.strategy {
            Strategy::RoundRobin => ok[self.next.fetch_add(1, Ordering::Relaxed) % ok.len()],
            Strategy::LeastConnections => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                // Ties are broken round-robin so that idle backends share work.
                (0..ok.len())
                    .map(|i| ok[(start + i) % ok.len()])
                    .min_by_key(|b| b.in_flight.load(Ordering::Relaxed))?
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(chosen.clone()))
    }
}

/// Build the lb: proxy on every path, admin API under `/-/`, own `/metrics`.
/// The shop router (health, metrics, and everything else proxied — but no
/// `/-/` admin path, the lb's or a backend's) and the admin router (the
/// backend list), served on separate ports.
pub fn router(id: &Identity, config: LbConfig, backends: Vec<BackendSpec>) -> (Router, Router) {
    let requests: Family<BackendLabel, Counter> = Family::default();
    let errors: Family<ErrorLabel, Counter> = Family::default();
    let healthy_g: Family<BackendLabel, Gauge> = Family::default();
    let in_flight_g: Family<BackendLabel, Gauge> = Family::default();
    let received = Counter::default();
    let metrics = Metrics::new(id, |r| {
        r.register(
            "lb_requests_received",
            "Requests received on the shop port, counted as they arrive",
            received.clone(),
        );
        r.register(
            "lb_backend_requests",
            "Requests sent to each backend",
            requests.clone(),
        );
        r.register(
            "lb_upstream_errors",
            "Failed attempts per backend and kind",
            errors.clone(),
        );
        r.register(
            "lb_backend_healthy",
            "1 if the backend receives traffic",
            healthy_g.clone(),
        );
        r.register(
            "lb_backend_in_flight",
            "Requests in flight per backend",
            in_flight_g.clone(),
        );
    });
    let health = config.health.clone();
    let st = Arc::new(LbState {
        // Backends given at start were health-checked by whoever started us.
        backends: RwLock::new(backends.iter().map(|b| Backend::new(b, true)).collect()),
        client: reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default(),
        health_client: reqwest::Client::builder()
            .timeout(health.timeout)
            .build()
            .unwrap_or_default(),
        config,
        next: AtomicUsize::new(0),
        metrics: metrics.clone(),
        requests,
        errors,
        received,
    });
    for b in st.list() {
        tokio::spawn(health_loop(st.clone(), b, health.clone()));
    }
    let s2 = st.clone();
    metrics.on_scrape(move || {
        healthy_g.clear();
        in_flight_g.clear();
        for b in s2.list() {
            let l = BackendLabel {
                backend: b.name.clone(),
            };
            healthy_g
                .get_or_create(&l)
                .set(i64::from(b.healthy.load(Ordering::Relaxed)));
            in_flight_g
                .get_or_create(&l)
                .set(b.in_flight.load(Ordering::Relaxed) as i64);
        }
    });
    let admin = Router::new()
        .route("/-/backends", get(list_backends).post(add_backend))
        .route("/-/backends/{name}", delete(remove_backend))
        .fallback(crate::api::not_found)
        .with_state(st.clone());
    let shop = Router::new()
        .route("/health", get(own_health))
        .route("/metrics", get(move || async move { metrics.response() }))
        .route("/-/{*rest}", axum::routing::any(admin_path))
        .fallback(proxy)
        .with_state(st);
    (shop, admin)
}

/// `/-/…` on the shop port: admin paths (the lb's backend list, a web
/// instance's topology and capacity) are not for the shop's users.
async fn admin_path() -> Response {
    crate::api::ApiError::NotFound("admin paths are not served on the shop port".into())
        .into_response()
}

async fn health_loop(st: St, b: Arc<Backend>, cfg: HealthConfig) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    while !b.removed.load(Ordering::Relaxed) {
        tick.tick().await;
        let r = st
            .health_client
            .get(format!("http://{}/health", b.addr))
            .send()
            .await;
        let ok = matches!(&r, Ok(r) if r.status().is_success());
        if ok {
            failures = 0;
            let n = b.successes.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= cfg.healthy_threshold && !b.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(backend = %b.name, addr = %b.addr, "backend healthy");
            }
        } else {
            b.successes.store(0, Ordering::Relaxed);
            failures += 1;
            if failures >= cfg.unhealthy_threshold {
                let why = match r {
                    Ok(r) => format!("health check answered {}", r.status().as_u16()),
                    Err(e) => format!("health check failed: {e}"),
                };
                b.mark_down(&why);
            }
        }
    }
}

/// Hop-by-hop headers are not forwarded (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

async fn proxy(State(st): State<St>, req: Request) -> Response {
    st.received.inc();
    let (parts, body) = req.into_parts();
    let metrics = st.metrics.clone();
    let method = parts.method.clone();
    let headers = parts.headers.clone();
    serve_traced(&metrics, method, PROXY_ROUTE, &headers, async move {
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    axum::Json(serde_json::json!({ "error": format!("request body: {e}") })),
                )
                    .into_response();
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let idempotent = parts.method.is_idempotent();
        let mut tried = Vec::new();
        loop {
            let Some(slot) = st.pick(&tried) else {
                return ApiError::Unavailable("no healthy backend".into()).into_response();
            };
            let b = slot.0.clone();
            st.requests
                .get_or_create(&BackendLabel {
                    backend: b.name.clone(),
                })
                .inc();
            let mut rb = st
                .client
                .request(parts.method.clone(), format!("http://{}{path}", b.addr));
            for (k, v) in parts.headers.iter() {
                if !hop_by_hop(k) && k.as_str() != "traceparent" && k.as_str() != "tracestate" {
                    rb = rb.header(k, v);
                }
            }
            let result = send_traced(rb.body(body.clone()), "proxy", &b.addr.to_string()).await;
            match result {
                Ok(r) => {
                    let status = r.status();
                    let mut out = Response::builder().status(status);
                    for (k, v) in r.headers() {
                        if !hop_by_hop(k) && k.as_str() != "content-length" {
                            out = out.header(k, v);
                        }
                    }
                    let bytes = match r.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            st.errors
                                .get_or_create(&ErrorLabel {
                                    backend: b.name.clone(),
                                    kind: "body".into(),
                                })
                                .inc();
                            return ApiError::Upstream(format!(
                                "{}: reading the answer failed: {e}",
                                b.name
                            ))
                            .into_response();
                        }
                    };
                    drop(slot);
                    return out
                        .body(Body::from(bytes))
                        .unwrap_or_else(|e| ApiError::Internal(e.to_string()).into_response());
                }
                Err(e) => {
                    drop(slot);
                    // Not sent at all (refused connection), or an idempotent
                    // request on a connection that died: safe to try another.
                    let never_sent = e.is_connect();
                    let kind = if never_sent {
                        "connect"
                    } else if e.is_timeout() {
                        "timeout"
                    } else {
                        "reset"
                    };
                    st.errors
                        .get_or_create(&ErrorLabel {
                            backend: b.name.clone(),
                            kind: kind.into(),
                        })
                        .inc();
                    if never_sent {
                        b.mark_down(&format!("connection failed: {e}"));
                    }
                    tried.push(b.addr);
                    if never_sent || (idempotent && !e.is_timeout()) {
                        continue;
                    }
                    return ApiError::Upstream(format!("{}: {e}", b.name)).into_response();
                }
            }
        }
    })
    .await
}

async fn own_health(State(st): State<St>) -> StatusCode {
    if st.list().iter().any(|b| b.healthy.load(Ordering::Relaxed)) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn list_backends(State(st): State<St>) -> axum::Json<Vec<BackendStatus>> {
    axum::Json(
        st.list()
            .iter()
            .map(|b| BackendStatus {
                name: b.name.clone(),
                addr: b.addr,
                healthy: b.healthy.load(Ordering::Relaxed),
                draining: b.draining.load(Ordering::Relaxed),
                in_flight: b.in_flight.load(Ordering::Relaxed),
            })
            .collect(),
    )
}

/// Add a backend; it gets traffic once its health checks pass.
async fn add_backend(
    State(st): State<St>,
    Json(spec): Json<BackendSpec>,
) -> Result<StatusCode, ApiError> {
    let b = Backend::new(&spec, false);
    {
        let mut list = st.backends.write().unwrap_or_else(|e| e.into_inner());
        if list
            .iter()
            .any(|x| x.name == spec.name || x.addr == spec.addr)
        {
            return Err(ApiError::Conflict(format!(
                "backend {} ({}) already exists",
                spec.name, spec.addr
            )));
        }
        list.push(b.clone());
    }
    tracing::info!(backend = %spec.name, addr = %spec.addr, "backend added");
    tokio::spawn(health_loop(st.clone(), b, st.config.health.clone()));
    Ok(StatusCode::CREATED)
}

/// Remove a backend after draining it.
async fn remove_backend(
    State(st): State<St>,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let b = {
        let list = st.backends.write().unwrap_or_else(|e| e.into_inner());
        let b = list
            .iter()
            .find(|b| b.name == name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no backend {name:?}")))?;
        b.draining.store(true, Ordering::Relaxed);
        b
    };
    let started = Instant::now();
    let deadline = started + st.config.drain_timeout;
    let drained = loop {
        let idle = b.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if b.in_flight.load(Ordering::Acquire) == 0 {
            break true;
        }
        if tokio::time::timeout_at(deadline.into(), idle)
            .await
            .is_err()
        {
            break false;
        }
    };
    b.removed.store(true, Ordering::Relaxed);
    st.backends
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|x| x.name != name);
    let waited_ms = started.elapsed().as_millis() as u64;
    tracing::info!(backend = %name, drained, waited_ms, "backend removed");
    Ok(axum::Json(
        serde_json::json!({ "name": name, "drained": drained, "waited_ms": waited_ms }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(strategy: Strategy, n: u16) -> LbState {
        let id = Identity::new("lb", "lb");
        let backends = (0..n)
            .map(|i| {
                Backend::new(
                    &BackendSpec {
                        name: format!("web-{i}"),
                        addr: ([127, 0, 0, 1], 9000 + i).into(),
                    },
                    true,
                )
            })
            .collect();
        LbState {
            backends: RwLock::new(backends),
            config: LbConfig {
                strategy,
                ..LbConfig::default()
            },
            next: AtomicUsize::new(0),
            client: reqwest::Client::new(),
            health_client: reqwest::Client::new(),
            metrics: Metrics::new(&id, |_| {}),
            requests: Family::default(),
            errors: Family::default(),
            received: Counter::default(),
        }
    }

    fn name(s: &Option<InFlight>) -> String {
        s.as_ref().map(|f| f.0.name.clone()).unwrap_or_default()
    }

    #[test]
    fn round_robin_takes_each_healthy_backend_in_turn() {
        let st = state(Strategy::RoundRobin, 3);
        let got: Vec<String> = (0..6).map(|_| name(&st.pick(&[]))).collect();
        assert_eq!(got, ["web-0", "web-1", "web-2", "web-0", "web-1", "web-2"]);
    }

    #[test]
    fn least_connections_avoids_the_busy_backend() {
        let st = state(Strategy::LeastConnections, 3);
        let busy = st.pick(&[]);
        let busy2 = st.pick(&[]);
        assert_ne!(name(&busy), name(&busy2));
        // Two backends hold one request each; the idle one must be next.
        let third = st.pick(&[]);
        let names = [name(&busy), name(&busy2), name(&third)];
        let mut sorted = names.to_vec();
        sorted.sort();
        assert_eq!(sorted, ["web-0", "web-1", "web-2"], "{names:?}");
        drop(busy);
        assert_eq!(
            name(&st.pick(&[])),
            names[0],
            "the backend that finished is least loaded"
        );
    }

    #[test]
    fn unhealthy_draining_and_skipped_backends_get_nothing() {
        let st = state(Strategy::RoundRobin, 3);
        let list = st.list();
        list[0].mark_down("test");
        list[1].draining.store(true, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(name(&st.pick(&[])), "web-2");
        }
        assert!(st.pick(&[list[2].addr]).is_none());
        // In-flight counts are released when the slot drops.
        assert_eq!(list[2].in_flight.load(Ordering::Relaxed), 0);
    }
}
