//! The rest of Prometheus' HTTP API that Grafana, promtool and the
//! Prometheus UI call, over Keel's own state: `/-/healthy`, `/-/ready`,
//! the status pages (`config`, `flags`, `runtimeinfo`, `tsdb`,
//! `buildinfo`), `/api/v1/targets` (what the agents scrape, read from
//! their `up` series), `/api/v1/metadata` and `/api/v1/format_query`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_alerting::notify::to_alertmanager::rfc3339;
use keel_core::clock::SharedClock;
use keel_http::{bad, int_param, ok, param, params};
use keel_metricstore::{Matcher, Store};
use keel_promql::eval::LOOKBACK_MS;
use serde_json::{Value as Json, json};

/// The Prometheus version whose API and PromQL Keel answers as
/// (`buildinfo`): Grafana picks its features by it.
pub const PROMETHEUS_VERSION: &str = "3.0.0";

/// What the status pages read.
#[derive(Clone)]
pub struct Status {
    /// The metric store (cardinality, `up` series, metadata).
    pub store: Arc<Store>,
    /// The rules (when they last loaded, and whether they did).
    pub rules: Arc<keel_alerting::rules::RuleManager>,
    /// The collector's config as people are shown it (secrets redacted).
    pub config: Arc<Json>,
    /// Prometheus' flags that have a Keel counterpart.
    pub flags: Arc<BTreeMap<String, String>>,
    /// When the collector started (ms).
    pub started_ms: i64,
    /// Where it keeps its data.
    pub data_dir: String,
    /// Its clock.
    pub clock: SharedClock,
}

/// The routes.
pub fn routes(status: Status) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/tsdb", get(tsdb))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .map(|r| r.with_state(status))
}

fn text(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Alive: the process answers.
async fn healthy() -> Response {
    text("Keel collector is Healthy.\n")
}

/// Ready to serve queries and take data: the listener opens only after
/// the store has replayed its WAL, so answering at all means ready.
async fn ready() -> Response {
    text("Keel collector is Ready.\n")
}

async fn buildinfo() -> Response {
    ok(json!({
        "version": PROMETHEUS_VERSION,
        "revision": concat!("keel-", env!("CARGO_PKG_VERSION")),
        "branch": "keel",
        "buildUser": "keel",
        "buildDate": "",
        "goVersion": "none (Keel, Rust)",
    }))
}

async fn config(State(s): State<Status>) -> Response {
    match serde_saphyr::to_string(&*s.config) {
        Ok(yaml) => ok(json!({ "yaml": yaml })),
        Err(e) => keel_http::fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the config does not render as YAML: {e}"),
        ),
    }
}

async fn flags(State(s): State<Status>) -> Response {
    ok(json!(*s.flags))
}

async fn runtimeinfo(State(s): State<Status>) -> Response {
    let (reload_ok, reload_at) = s.rules.with_groups(|_, r| (r.success, r.at_ms));
    ok(json!({
        "startTime": rfc3339(s.started_ms),
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": reload_ok,
        "lastConfigTime": rfc3339(reload_at),
        "storageRetention": s.flags.get("storage.tsdb.retention.time").cloned().unwrap_or_default(),
        "GOMAXPROCS": std::thread::available_parallelism().map_or(1, usize::from),
        "dataDir": s.data_dir,
    }))
}

/// `limit` (default 10, as Prometheus), at most 10,000.
fn top_limit(p: &[(String, String)]) -> Result<usize, String> {
    match int_param(p, "limit")? {
        None => Ok(10),
        Some(n @ 1..=10_000) => Ok(n as usize),
        Some(n) => Err(format!(
            "limit must be a positive number up to 10000, not {n}"
        )),
    }
}

async fn tsdb(State(s): State<Status>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &HeaderMap::new(), &Bytes::new());
    match top_limit(&p) {
        Ok(limit) => {
            let store = s.store.clone();
            match tokio::task::spawn_blocking(move || store.cardinality(limit)).await {
                Ok(c) => ok(json!(c)),
                Err(e) => {
                    keel_http::fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                }
            }
        }
        Err(e) => bad(e),
    }
}

/// The targets the agents scrape, from their `up` series (and
/// `scrape_duration_seconds`) over the last five minutes: health, last
/// scrape and its duration. Keel's collector scrapes nothing itself;
/// `keel agent status` on each host has the URLs and errors.
async fn targets(State(s): State<Status>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &HeaderMap::new(), &Bytes::new());
    let state = param(&p, "state").unwrap_or("any");
    if !matches!(state, "active" | "dropped" | "any" | "") {
        return bad(format!(
            "state must be active, dropped or any, not {state:?}"
        ));
    }
    let pool = param(&p, "scrapePool").filter(|p| !p.is_empty());
    let now = s.clock.now_ms();
    let name = |n: &str| vec![Matcher::Equal("__name__".into(), n.into())];
    let mut active = Vec::new();
    if state != "dropped" {
        let durations: BTreeMap<_, _> = s
            .store
            .select(&name("scrape_duration_seconds"), now - LOOKBACK_MS, now)
            .into_iter()
            .filter_map(|(l, v)| {
                let key = l.without_name();
                v.last().map(|(_, d)| (key, *d))
            })
            .collect();
        for (labels, samples) in s.store.select(&name("up"), now - LOOKBACK_MS, now) {
            let Some(&(t, v)) = samples.last() else {
                continue;
            };
            if keel_core::stale::is_stale(v) {
                continue;
            }
            let job = labels.get("job").to_owned();
            if pool.is_some_and(|p| p != job) {
                continue;
            }
            let key = labels.without_name();
            let shown: serde_json::Map<String, Json> = key
                .pairs()
                .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
                .collect();
            active.push(json!({
                "discoveredLabels": shown,
                "labels": shown,
                "scrapePool": job,
                "scrapeUrl": "",
                "globalUrl": "",
                "lastError": if v == 1.0 { "" } else { "the agent's last scrape failed (keel agent status names why)" },
                "lastScrape": rfc3339(t),
                "lastScrapeDuration": durations.get(&key).copied().unwrap_or(0.0),
                "health": if v == 1.0 { "up" } else { "down" },
                "scrapeInterval": "",
                "scrapeTimeout": "",
            }));
        }
    }
    ok(json!({ "activeTargets": active, "droppedTargets": [] }))
}

async fn metadata(State(s): State<Status>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &HeaderMap::new(), &Bytes::new());
    // Prometheus: a negative limit is no limit.
    let number = |k: &str| {
        int_param(&p, k).map(|n| n.map_or(0, |n| usize::try_from(n.max(0)).unwrap_or(usize::MAX)))
    };
    let (limit, per_metric) = match (number("limit"), number("limit_per_metric")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let metric = param(&p, "metric").filter(|m| !m.is_empty());
    ok(json!(s.store.metadata().query(metric, limit, per_metric)))
}

async fn format_query(RawQuery(q): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(q, &headers, &body);
    let Some(expr) = param(&p, "query") else {
        return bad("missing parameter \"query\"".into());
    };
    match keel_promql::parse(expr) {
        Ok(e) => ok(json!(e.prettify())),
        Err(e) => bad(format!("invalid parameter \"query\": {e}")),
    }
}
