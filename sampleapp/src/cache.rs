//! The cache tier: an LRU map with per-entry TTL and a memory bound,
//! served over HTTP (`GET`/`PUT`/`DELETE /cache/{key}`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use crate::api::{ApiError, Path, Query};
use crate::config::CacheConfig;
use crate::fault::{self, Faults};
use crate::telemetry::{Identity, Metrics, traced_route};

/// Largest value the cache accepts.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

struct Entry {
    value: Bytes,
    expires: Instant,
}

/// An LRU with TTL and a bound on the bytes of keys plus values.
pub struct LruTtl {
    map: LruCache<String, Entry>,
    bytes: u64,
    max_bytes: u64,
}

/// Outcome counters of an [`LruTtl`] operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Entries pushed out by the memory bound.
    pub evicted: u64,
}

impl LruTtl {
    /// An empty cache holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            map: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    fn cost(key: &str, value: &[u8]) -> u64 {
        (key.len() + value.len()) as u64
    }

    /// The live value of `key`; an expired entry is removed and missed.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Bytes> {
        let expired = match self.map.get(key) {
            None => return None,
            Some(e) => e.expires <= now,
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get(key).map(|e| e.value.clone())
    }

    /// Store `value` under `key` until `now + ttl`, evicting the least
    /// recently used entries while over the memory bound.
    pub fn put(&mut self, key: String, value: Bytes, ttl: Duration, now: Instant) -> Evicted {
        let cost = Self::cost(&key, &value);
        if let Some(old) = self.map.pop(&key) {
            self.bytes -= Self::cost(&key, &old.value);
        }
        self.bytes += cost;
        self.map.put(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
        let mut out = Evicted::default();
        while self.bytes > self.max_bytes {
            match self.map.pop_lru() {
                Some((k, e)) => {
                    self.bytes -= Self::cost(&k, &e.value);
                    out.evicted += 1;
                }
                None => break,
            }
        }
        out
    }

    /// Drop `key`; true if it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.map.pop(key) {
            Some(e) => {
                self.bytes -= Self::cost(key, &e.value);
                true
            }
            None => false,
        }
    }

    /// Entries held (including expired ones not yet touched).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of keys plus values held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[derive(Clone)]
struct CacheState {
    cache: Arc<Mutex<LruTtl>>,
    default_ttl: Duration,
    hits: Counter,
    misses: Counter,
    evictions: Counter,
}

impl CacheState {
    fn lock(&self) -> MutexGuard<'_, LruTtl> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutParams {
    ttl_ms: Option<u64>,
}

/// The cache's HTTP API.
pub fn router(id: &Identity, config: CacheConfig) -> Router {
    let hits = Counter::default();
    let misses = Counter::default();
    let evictions = Counter::default();
    let entries: Gauge = Gauge::default();
    let bytes: Gauge = Gauge::default();
    let metrics = Metrics::new(id, |r| {
        r.register(
            "cache_hits",
            "Lookups that found a live entry",
            hits.clone(),
        );
        r.register(
            "cache_misses",
            "Lookups that found nothing live",
            misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries evicted by the memory bound",
            evictions.clone(),
        );
        r.register("cache_entries", "Entries held", entries.clone());
        r.register(
            "cache_memory_bytes",
            "Bytes of keys and values held",
            bytes.clone(),
        );
    });
    let state = CacheState {
        cache: Arc::new(Mutex::new(LruTtl::new(config.max_bytes))),
        default_ttl: config.default_ttl,
        hits,
        misses,
        evictions,
    };
    let st = state.clone();
    metrics.on_scrape(move || {
        let c = st.lock();
        entries.set(c.len() as i64);
        bytes.set(c.bytes() as i64);
    });
    let faults = Faults::cache();
    let data = fault::data_routes(
        Router::new().route("/cache/{key}", get(get_key).put(put_key).delete(delete_key)),
        metrics.clone(),
        &faults,
    );
    let health = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route_layer(middleware::from_fn_with_state(
            metrics.clone(),
            traced_route,
        ));
    Router::new()
        .merge(data)
        .merge(health)
        .route("/metrics", get(move || async move { metrics.response() }))
        .fallback(crate::api::not_found)
        .layer(DefaultBodyLimit::max(MAX_VALUE_BYTES))
        .with_state(state)
        .merge(fault::router(faults))
}

async fn get_key(State(st): State<CacheState>, Path(key): Path<String>) -> Response {
    let found = st.lock().get(&key, Instant::now());
    match found {
        Some(v) => {
            st.hits.inc();
            v.into_response()
        }
        None => {
            st.misses.inc();
            ApiError::NotFound(format!("no live entry for {key:?}")).into_response()
        }
    }
}

async fn put_key(
    State(st): State<CacheState>,
    Path(key): Path<String>,
    Query(p): Query<PutParams>,
    body: Bytes,
) -> StatusCode {
    let ttl = p
        .ttl_ms
        .map(Duration::from_millis)
        .unwrap_or(st.default_ttl);
    let ev = st.lock().put(key, body, ttl, Instant::now());
    st.evictions.inc_by(ev.evicted);
    StatusCode::NO_CONTENT
}

async fn delete_key(State(st): State<CacheState>, Path(key): Path<String>) -> StatusCode {
    if st.lock().remove(&key) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_miss() {
        let mut c = LruTtl::new(1 << 20);
        let t0 = Instant::now();
        c.put(
            "a".into(),
            Bytes::from_static(b"1"),
            Duration::from_secs(1),
            t0,
        );
        assert_eq!(
            c.get("a", t0 + Duration::from_millis(999)).as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(c.get("a", t0 + Duration::from_secs(1)), None);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn memory_bound_evicts_least_recently_used() {
        // Each entry costs 1 (key) + 9 (value) = 10 bytes; bound 30.
        let mut c = LruTtl::new(30);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        for k in ["a", "b", "c"] {
            c.put(k.into(), Bytes::from_static(b"123456789"), ttl, t0);
        }
        assert!(c.get("a", t0).is_some()); // a is now most recent
        let ev = c.put("d".into(), Bytes::from_static(b"123456789"), ttl, t0);
        assert_eq!(ev.evicted, 1);
        assert!(c.get("b", t0).is_none(), "b was least recently used");
        assert!(c.get("a", t0).is_some());
        assert_eq!(c.bytes(), 30);
    }

    #[test]
    fn overwrite_accounts_bytes_once() {
        let mut c = LruTtl::new(100);
        let t0 = Instant::now();
        c.put(
            "k".into(),
            Bytes::from_static(b"1234"),
            Duration::from_secs(5),
            t0,
        );
        c.put(
            "k".into(),
            Bytes::from_static(b"12"),
            Duration::from_secs(5),
            t0,
        );
        assert_eq!(c.bytes(), 3);
        assert_eq!(c.len(), 1);
    }
}
