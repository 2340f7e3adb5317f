//! The web tier: a small shop API with a fixed, tunable capacity.
//!
//! Capacity is `max_concurrency` requests at once, each holding its slot
//! for `service_time` (plus `cpu_cost` of real CPU) on top of its cache and
//! db calls; up to `queue_limit` more wait, the rest get 503. So one
//! instance serves about `max_concurrency / service_time` requests per
//! second whatever the machine, and adding instances adds capacity.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::api::{ApiError, Json, Path};
use crate::config::Capacity;
use crate::db::EPOCH_HEADER;
use crate::spec::Topology;
use crate::telemetry::{Identity, Metrics, send_traced, traced_route};

/// What a web instance is started with.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Capacity knobs.
    pub capacity: Capacity,
    /// The cache.
    pub cache: SocketAddr,
    /// The database.
    pub db: Topology,
    /// Session lifetime in the cache.
    pub session_ttl: Duration,
    /// Product lifetime in the cache.
    pub product_ttl: Duration,
    /// How long after start `/health` answers 503 (a cold instance: JIT,
    /// caches, connection pools), so the lb sends it nothing yet.
    pub warm_up: Duration,
}

struct Deps {
    cache_ok: AtomicBool,
    db_ok: AtomicBool,
}

struct WebState {
    knobs: RwLock<Capacity>,
    slots: Semaphore,
    queued: AtomicI64,
    in_flight: Gauge,
    rejected: Counter,
    injected: Counter,
    topology: RwLock<Topology>,
    cache: SocketAddr,
    session_ttl: Duration,
    product_ttl: Duration,
    client: reqwest::Client,
    next_replica: AtomicUsize,
    deps: Deps,
    /// Not ready before this.
    warm_until: std::time::Instant,
}

type St = Arc<WebState>;

impl WebState {
    fn knobs(&self) -> Capacity {
        self.knobs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn topology(&self) -> Topology {
        self.topology
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Build the web API.
pub fn router(id: &Identity, s: WebSettings) -> Router {
    let in_flight: Gauge = Gauge::default();
    let queued_g: Gauge = Gauge::default();
    let rejected = Counter::default();
    let injected = Counter::default();
    let concurrency_g: Gauge = Gauge::default();
    let metrics = Metrics::new(id, |r| {
        r.register(
            "web_requests_in_flight",
            "API requests holding a capacity slot",
            in_flight.clone(),
        );
        r.register(
            "web_requests_queued",
            "API requests waiting for a slot",
            queued_g.clone(),
        );
        r.register(
            "web_requests_rejected",
            "API requests refused over capacity",
            rejected.clone(),
        );
        r.register(
            "web_errors_injected",
            "API requests failed on purpose",
            injected.clone(),
        );
        r.register(
            "web_capacity_max_concurrency",
            "Configured concurrent-request limit",
            concurrency_g.clone(),
        );
    });
    let state = Arc::new(WebState {
        slots: Semaphore::new(s.capacity.max_concurrency as usize),
        knobs: RwLock::new(s.capacity),
        queued: AtomicI64::new(0),
        in_flight,
        rejected,
        injected,
        topology: RwLock::new(s.db),
        cache: s.cache,
        session_ttl: s.session_ttl,
        product_ttl: s.product_ttl,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        next_replica: AtomicUsize::new(0),
        deps: Deps {
            cache_ok: AtomicBool::new(true),
            db_ok: AtomicBool::new(true),
        },
        warm_until: std::time::Instant::now() + s.warm_up,
    });
    let st = state.clone();
    metrics.on_scrape(move || {
        queued_g.set(st.queued.load(Ordering::Relaxed));
        concurrency_g.set(i64::from(st.knobs().max_concurrency));
    });
    tokio::spawn(probe_dependencies(state.clone()));
    let api = Router::new()
        .route("/api/products/{id}", get(get_product))
        .route("/api/orders", post(create_order))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/login", post(login))
        .route("/api/session", get(session))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    let m = metrics.clone();
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/-/capacity", get(get_capacity).put(set_capacity))
        .route("/-/topology", put(set_topology))
        .route_layer(middleware::from_fn_with_state(metrics, traced_route))
        .route("/metrics", get(move || async move { m.response() }))
        .fallback(crate::api::not_found)
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(state)
}

/// Admission: wait for a capacity slot (or refuse when the queue is full),
/// spend the service time and CPU cost, maybe fail on purpose, then serve.
async fn admit(State(st): State<St>, req: Request, next: Next) -> Response {
    let knobs = st.knobs();
    if st.queued.load(Ordering::Relaxed) >= i64::from(knobs.queue_limit) {
        st.rejected.inc();
        return ApiError::Unavailable("over capacity: queue full".into()).into_response();
    }
    st.queued.fetch_add(1, Ordering::Relaxed);
    let permit = st.slots.acquire().await;
    st.queued.fetch_sub(1, Ordering::Relaxed);
    let Ok(_permit) = permit else {
        return ApiError::Unavailable("shutting down".into()).into_response();
    };
    st.in_flight.inc();
    let response = async {
        if !knobs.service_time.is_zero() {
            tokio::time::sleep(knobs.service_time).await;
        }
        if !knobs.cpu_cost.is_zero() {
            let cost = knobs.cpu_cost;
            let _ = tokio::task::spawn_blocking(move || burn_cpu(cost)).await;
        }
        if knobs.error_rate > 0.0 && rand::rng().random_bool(knobs.error_rate.clamp(0.0, 1.0)) {
            st.injected.inc();
            return ApiError::Injected("injected error".into()).into_response();
        }
        next.run(req).await
    }
    .await;
    st.in_flight.dec();
    response
}

fn burn_cpu(d: Duration) {
    let start = Instant::now();
    let mut x: u64 = 1;
    while start.elapsed() < d {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        std::hint::black_box(x);
    }
}

fn cache_url(st: &WebState, key: &str) -> String {
    format!("http://{}/cache/{key}", st.cache)
}

async fn cache_get(st: &WebState, key: &str) -> Option<axum::body::Bytes> {
    let req = st.client.get(cache_url(st, key));
    match send_traced(req, "cache GET", &st.cache.to_string()).await {
        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cache unreachable; serving without it");
            None
        }
    }
}

async fn cache_put(st: &WebState, key: &str, body: Vec<u8>, ttl: Duration) {
    let req = st
        .client
        .put(format!("{}?ttl_ms={}", cache_url(st, key), ttl.as_millis()))
        .body(body);
    if let Err(e) = send_traced(req, "cache PUT", &st.cache.to_string()).await {
        tracing::warn!(error = %e, "cache write failed");
    }
}

#[derive(Deserialize)]
struct DbValue {
    value: serde_json::Value,
}

enum DbRead {
    Found(serde_json::Value),
    Missing,
}

/// Read `key` from a replica (round robin), falling back to the others and
/// then the primary on failure; with `primary_on_miss`, a miss on a replica
/// is retried on the primary (read-your-writes for data just written).
async fn db_get(st: &WebState, key: &str, primary_on_miss: bool) -> Result<DbRead, ApiError> {
    let topo = st.topology();
    let n = topo.replicas.len();
    let start = st.next_replica.fetch_add(1, Ordering::Relaxed);
    let mut order: Vec<(SocketAddr, bool)> = (0..n)
        .map(|i| (topo.replicas[(start + i) % n], false))
        .collect();
    order.push((topo.primary, true));
    let mut last_err = String::from("no database node");
    for (addr, is_primary) in order {
        let req = st.client.get(format!("http://{addr}/kv/{key}"));
        match send_traced(req, "db GET", &addr.to_string()).await {
            Ok(r) if r.status().is_success() => {
                let v: DbValue = r
                    .json()
                    .await
                    .map_err(|e| ApiError::Upstream(format!("db {addr}: bad answer: {e}")))?;
                return Ok(DbRead::Found(v.value));
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                if is_primary || !primary_on_miss {
                    return Ok(DbRead::Missing);
                }
                // maybe not replicated yet: ask the primary
            }
            Ok(r) => last_err = format!("db {addr}: HTTP {}", r.status().as_u16()),
            Err(e) => last_err = format!("db {addr}: {e}"),
        }
    }
    Err(ApiError::Upstream(last_err))
}

async fn db_put(st: &WebState, key: &str, value: serde_json::Value) -> Result<u64, ApiError> {
    let topo = st.topology();
    let req = st
        .client
        .put(format!("http://{}/kv/{key}", topo.primary))
        .header(EPOCH_HEADER, topo.epoch)
        .json(&serde_json::json!({ "value": value }));
    let r = send_traced(req, "db PUT", &topo.primary.to_string())
        .await
        .map_err(|e| ApiError::Upstream(format!("db primary {}: {e}", topo.primary)))?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body["lsn"].as_u64().unwrap_or(0))
    } else {
        let why = body["error"].as_str().unwrap_or("unknown").to_owned();
        Err(ApiError::Upstream(format!(
            "db primary {} refused the write (HTTP {}): {why}",
            topo.primary,
            status.as_u16()
        )))
    }
}

async fn get_product(State(st): State<St>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let key = format!("product:{id}");
    if let Some(b) = cache_get(&st, &key).await {
        tracing::debug!(product = id, "cache hit");
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response());
    }
    match db_get(&st, &key, false).await? {
        DbRead::Found(v) => {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            cache_put(&st, &key, body, st.product_ttl).await;
            Ok(axum::Json(v).into_response())
        }
        DbRead::Missing => Err(ApiError::NotFound(format!("no product {id}"))),
    }
}

/// A new order.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Product ordered.
    pub product_id: u64,
    /// How many.
    pub quantity: u32,
    /// Who ordered (optional).
    #[serde(default)]
    pub user: Option<String>,
}

async fn create_order(State(st): State<St>, Json(o): Json<NewOrder>) -> Result<Response, ApiError> {
    if o.quantity == 0 {
        return Err(ApiError::BadRequest("quantity: must be at least 1".into()));
    }
    let id = format!("{:016x}", rand::rng().random::<u64>());
    let order = serde_json::json!({
        "id": id, "product_id": o.product_id, "quantity": o.quantity, "user": o.user,
    });
    let lsn = db_put(&st, &format!("order:{id}"), order.clone()).await?;
    tracing::info!(order = %id, lsn, "order created");
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "id": id, "lsn": lsn, "order": order })),
    )
        .into_response())
}

async fn get_order(State(st): State<St>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match db_get(&st, &format!("order:{id}"), true).await? {
        DbRead::Found(v) => Ok(axum::Json(v).into_response()),
        DbRead::Missing => Err(ApiError::NotFound(format!("no order {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
}

async fn login(State(st): State<St>, Json(l): Json<Login>) -> Result<Response, ApiError> {
    if l.user.is_empty() || l.user.len() > 128 {
        return Err(ApiError::BadRequest(
            "user: must be 1 to 128 characters".into(),
        ));
    }
    let token = format!("{:032x}", rand::rng().random::<u128>());
    let body = serde_json::to_vec(&serde_json::json!({ "user": l.user })).unwrap_or_default();
    let req = st
        .client
        .put(format!(
            "{}?ttl_ms={}",
            cache_url(&st, &format!("session:{token}")),
            st.session_ttl.as_millis()
        ))
        .body(body);
    match send_traced(req, "cache PUT", &st.cache.to_string()).await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            return Err(ApiError::Upstream(format!(
                "cache refused the session: HTTP {}",
                r.status().as_u16()
            )));
        }
        Err(e) => return Err(ApiError::Upstream(format!("cache unreachable: {e}"))),
    }
    Ok(axum::Json(serde_json::json!({ "token": token })).into_response())
}

async fn session(State(st): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::BadRequest("missing Authorization: Bearer <token>".into()))?;
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest("token: must be hexadecimal".into()));
    }
    match cache_get(&st, &format!("session:{token}")).await {
        Some(b) => {
            Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response())
        }
        None => Ok((
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": "no such session" })),
        )
            .into_response()),
    }
}

/// Check the cache and the database once a second for `/health`.
async fn probe_dependencies(st: St) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let ok = |r: Result<reqwest::Response, reqwest::Error>| matches!(r, Ok(r) if r.status().is_success());
        let cache = st
            .client
            .get(format!("http://{}/health", st.cache))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        st.deps.cache_ok.store(ok(cache), Ordering::Relaxed);
        let topo = st.topology();
        let mut db_any = false;
        for addr in std::iter::once(topo.primary).chain(topo.replicas) {
            let r = st
                .client
                .get(format!("http://{addr}/health"))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if ok(r) {
                db_any = true;
                break;
            }
        }
        st.deps.db_ok.store(db_any, Ordering::Relaxed);
    }
}

/// 200 while the instance can serve (warm, and some db node answers); 503
/// otherwise. The body says why: a cache outage degrades latency but is
/// not a reason to take the instance out of the lb.
async fn health(State(st): State<St>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let cache = st.deps.cache_ok.load(Ordering::Relaxed);
    let db = st.deps.db_ok.load(Ordering::Relaxed);
    let warming = std::time::Instant::now() < st.warm_until;
    if warming {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "cache": cache, "db": db, "warming": true })),
        );
    }
    let code = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(serde_json::json!({ "cache": cache, "db": db })),
    )
}

async fn get_capacity(State(st): State<St>) -> axum::Json<Capacity> {
    axum::Json(st.knobs())
}

/// Change capacity knobs at run time; the concurrency limit resizes the
/// slot pool without disturbing requests already holding a slot.
async fn set_capacity(
    State(st): State<St>,
    Json(new): Json<Capacity>,
) -> Result<axum::Json<Capacity>, ApiError> {
    let mut problems = Vec::new();
    new.validate_at("capacity", &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    let old = {
        let mut k = st.knobs.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *k, new.clone())
    };
    let (was, now) = (old.max_concurrency as usize, new.max_concurrency as usize);
    if now > was {
        st.slots.add_permits(now - was);
    } else if was > now {
        let mut excess = was - now;
        excess -= st.slots.forget_permits(excess);
        if excess > 0 {
            // Slots still held: take them back as their requests finish.
            let s2 = st.clone();
            tokio::spawn(async move {
                if let Ok(p) = s2.slots.acquire_many(excess as u32).await {
                    p.forget();
                }
            });
        }
    }
    tracing::info!(?new, "capacity changed");
    Ok(axum::Json(new))
}

async fn set_topology(
    State(st): State<St>,
    Json(t): Json<Topology>,
) -> Result<StatusCode, ApiError> {
    let mut cur = st.topology.write().unwrap_or_else(|e| e.into_inner());
    if t.epoch < cur.epoch {
        return Err(ApiError::Conflict(format!(
            "topology epoch {} is older than the current {}",
            t.epoch, cur.epoch
        )));
    }
    tracing::info!(epoch = t.epoch, primary = %t.primary, "database topology changed");
    *cur = t;
    Ok(StatusCode::NO_CONTENT)
}
