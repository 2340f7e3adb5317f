//! Prometheus' HTTP API shapes over Keel's store and engine, so Grafana
//! and existing tools can use Keel as a Prometheus data source.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use keel_core::clock::SharedClock;
use serde_json::{Value as Json, json};

use keel_http::{bad, check_range, fail, ok, param, params, parse_step, parse_time};
use keel_metricstore::{Matcher, Store};
use keel_promql::{
    Annotations, Answer, Engine, EvalError, QueryGate, QueryRange, Value, format_api,
};
use keel_series::labels::Labels;

#[derive(Clone)]
struct Api {
    store: Arc<Store>,
    clock: SharedClock,
    gate: QueryGate,
    older: Arc<Older>,
    forward: Arc<crate::forward::Forwarding>,
}

impl Api {
    /// Older than this (ms) is past local retention now.
    fn cutoff(&self) -> i64 {
        self.clock.now_ms().saturating_sub(self.older.retention_ms)
    }
}

/// Where what is older than local retention is asked for.
#[derive(Debug, Default)]
pub struct Older {
    /// The remote store's query API (none: nowhere).
    pub remote: Option<crate::forward::remote_query::RemoteQuery>,
    /// Local retention (ms): older than now minus this is remote.
    pub retention_ms: i64,
}

/// The API routes; queries go through `gate` (its limits and slots);
/// ranges older than local retention go to `older.remote`.
pub fn routes(
    store: Arc<Store>,
    clock: SharedClock,
    gate: QueryGate,
    older: Older,
    forward: Arc<crate::forward::Forwarding>,
) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/keel", get(keel_status))
        .map(|r| {
            r.with_state(Api {
                store,
                clock,
                gate,
                older: Arc::new(older),
                forward,
            })
        })
}

fn metric_json(l: &Labels) -> Json {
    Json::Object(
        l.pairs()
            .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
            .collect(),
    )
}

fn point(t: i64, v: f64) -> Json {
    json!([t as f64 / 1000.0, format_api(v)])
}

/// A native histogram at `t` as Prometheus' API writes it: count and
/// sum as strings, and each bucket that holds observations as
/// `[boundary rule, lower, upper, count]`.
fn histogram_point(t: i64, h: &keel_series::histogram::Histogram) -> Json {
    json!([
        t as f64 / 1000.0,
        {
            "count": format_api(h.count),
            "sum": format_api(h.sum),
            "buckets": h.buckets().iter().map(|b| json!([
                b.rule,
                format_api(b.lower),
                format_api(b.upper),
                format_api(b.count),
            ])).collect::<Vec<_>>(),
        }
    ])
}

/// A range vector in Prometheus' `matrix` shape (`histograms` beside
/// `values` for native histogram series).
fn matrix_json(series: &[keel_promql::RangeSeries]) -> Json {
    json!({
        "resultType": "matrix",
        "result": series.iter().map(|s| {
            let mut o = json!({ "metric": metric_json(&s.labels) });
            if !s.points.is_empty() || s.histograms.is_empty() {
                o["values"] = s.points.iter().map(|(t, v)| point(*t, *v)).collect();
            }
            if !s.histograms.is_empty() {
                o["histograms"] = s.histograms.iter().map(|(t, h)| histogram_point(*t, h)).collect();
            }
            o
        }).collect::<Vec<_>>(),
    })
}

/// A query's error with Prometheus' status and error type.
fn eval_error(e: EvalError) -> Response {
    let (status, kind) = match e {
        EvalError::Parse(_) | EvalError::Unsupported(_) => return bad(e.to_string()),
        EvalError::Execution(_) | EvalError::TooManySamples(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "execution")
        }
        EvalError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        // Nginx's "client closed request", as Prometheus answers it.
        EvalError::Canceled(_) => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "canceled",
        ),
        EvalError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    fail(status, kind, e.to_string())
}

async fn query(
    State(api): State<Api>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let Some(expr) = param(&p, "query") else {
        return bad("missing parameter \"query\"".into());
    };
    let t = match param(&p, "time").map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(|| api.clock.now_ms()),
        Err(e) => return bad(e),
    };
    // Older than local retention: the remote store answers it whole.
    if let Some(remote) = &api.older.remote
        && t < api.cutoff()
    {
        return match remote.instant(expr, t).await {
            Ok(data) => ok(data),
            Err(e) => fail(
                StatusCode::BAD_GATEWAY,
                "unavailable",
                format!(
                    "{t} ms is older than local retention, and the remote store did not answer: {e}"
                ),
            ),
        };
    }
    let (store, expr) = (api.store.clone(), expr.to_owned());
    let result = api
        .gate
        .run(move |budget| Engine::with_budget(&store, budget).instant_annotated(&expr, t))
        .await;
    match result {
        Ok(Answer {
            value: v,
            annotations: notes,
        }) => annotated(
            match v {
                Value::Scalar(x) => json!({ "resultType": "scalar", "result": point(t, x) }),
                Value::String(s) => {
                    json!({ "resultType": "string", "result": [t as f64 / 1000.0, s] })
                }
                Value::Vector(v) => json!({
                    "resultType": "vector",
                    "result": v.iter().map(|s| json!({ "metric": metric_json(&s.labels), "value": point(t, s.value) })).collect::<Vec<_>>(),
                }),
                Value::Histograms(v) => json!({
                    "resultType": "vector",
                    "result": v.iter().map(|s| json!({ "metric": metric_json(&s.labels), "histogram": histogram_point(t, &s.histogram) })).collect::<Vec<_>>(),
                }),
                Value::Matrix(m) => matrix_json(&m),
            },
            &notes,
        ),
        Err(e) => eval_error(e),
    }
}

/// A success carrying the query's annotations.
fn annotated(data: serde_json::Value, notes: &Annotations) -> Response {
    keel_http::ok_annotated(data, notes.warnings(), notes.infos())
}

async fn query_range(
    State(api): State<Api>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let Some(expr) = param(&p, "query") else {
        return bad("missing parameter \"query\"".into());
    };
    let get = |n: &str| param(&p, n).ok_or_else(|| format!("missing parameter {n:?}"));
    let range = (|| -> Result<QueryRange, String> {
        let start = parse_time(get("start")?)?;
        let end = parse_time(get("end")?)?;
        let step = parse_step(get("step")?)?;
        check_range(start, end, step)?;
        Ok(QueryRange { start, end, step })
    })();
    let range = match range {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let cutoff = api.cutoff();
    let older = api.older.remote.as_ref().and_then(|remote| {
        let last = crate::forward::remote_query::last_step_before(range.start, range.step, cutoff)?;
        Some((remote, last.min(range.end)))
    });
    let Some((remote, old_end)) = older else {
        return match local_range(&api, expr, range).await {
            Ok(a) => annotated(matrix_json(&a.value), &a.annotations),
            Err(e) => eval_error(e),
        };
    };
    // The steps before the cutoff from the remote store, the rest here,
    // joined series by series.
    let newer = QueryRange {
        start: old_end + range.step,
        ..range
    };
    let (remote_part, local_part) = tokio::join!(
        remote.range(expr, range.start, old_end, range.step),
        async {
            if newer.start > range.end {
                return Ok(Answer {
                    value: Vec::new(),
                    annotations: Annotations::default(),
                });
            }
            local_range(&api, expr, newer).await
        }
    );
    let (local, notes) = match local_part {
        Ok(a) => (
            matrix_json(&a.value)["result"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            a.annotations,
        ),
        Err(e) => return eval_error(e),
    };
    match remote_part {
        Ok(old) => annotated(
            json!({
                "resultType": "matrix",
                "result": crate::forward::remote_query::join(old, local),
            }),
            &notes,
        ),
        Err(e) => {
            let mut warnings = notes.warnings();
            warnings.push(format!(
                "points before {} (older than local retention) are missing: the remote store did not answer: {e}",
                cutoff as f64 / 1000.0
            ));
            keel_http::ok_annotated(
                json!({ "resultType": "matrix", "result": local }),
                warnings,
                notes.infos(),
            )
        }
    }
}

/// `expr` over `range` on the local store, through the query gate.
async fn local_range(
    api: &Api,
    expr: &str,
    range: QueryRange,
) -> Result<Answer<Vec<keel_promql::RangeSeries>>, EvalError> {
    let (store, expr) = (api.store.clone(), expr.to_owned());
    api.gate
        .run(move |budget| Engine::with_budget(&store, budget).range_annotated(&expr, range))
        .await
}

/// Turn `match[]` selectors into matcher sets.
pub(crate) fn selectors(p: &[(String, String)]) -> Result<Vec<Vec<Matcher>>, String> {
    let mut out = Vec::new();
    for (_, sel) in p.iter().filter(|(k, _)| k == "match[]") {
        let expr = keel_promql::parse(sel).map_err(|e| format!("invalid match[] {sel:?}: {e}"))?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(format!("match[] {sel:?} must be a series selector"));
        };
        let ms = keel_promql::eval::matchers(&vs).map_err(|e| format!("match[] {sel:?}: {e}"))?;
        out.push(ms);
    }
    Ok(out)
}

/// `start` and `end`, all time when absent (as Prometheus' min and max
/// time).
fn span(p: &[(String, String)]) -> Result<(i64, i64), String> {
    let start = param(p, "start").map(parse_time).transpose()?;
    let end = param(p, "end").map(parse_time).transpose()?;
    Ok((start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX)))
}

/// `limit`: at most this many results (absent or 0: all).
fn limit(p: &[(String, String)]) -> Result<usize, String> {
    match keel_http::int_param(p, "limit")? {
        Some(n) if n < 0 => Err("limit must be non-negative".into()),
        n => Ok(n.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// What a series or label lookup asks: `match[]` (none: every series),
/// `[start, end]` and `limit` (0: none).
struct Lookup {
    sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    limit: usize,
}

fn lookup(p: &[(String, String)]) -> Result<Lookup, String> {
    let sets = selectors(p)?;
    let (start, end) = span(p)?;
    Ok(Lookup {
        sets,
        start,
        end,
        limit: limit(p)?,
    })
}

/// `items` as the answer, cut at `limit` (0: none) with Prometheus'
/// warning when cut.
fn limited<T: serde::Serialize>(mut items: Vec<T>, limit: usize) -> Response {
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        return keel_http::ok_warned(json!(items), vec!["results truncated due to limit".into()]);
    }
    ok(json!(items))
}

/// `f` on a blocking thread (a lookup over a large head holds its read
/// lock a while: not on the async workers); empty if it panicked.
async fn blocking<T: Default + Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap_or_default()
}

/// `/api/v1/series`: the series matching `match[]` with data in
/// `[start, end]`, head and blocks.
async fn series(
    State(api): State<Api>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let Lookup {
        sets,
        start,
        end,
        limit,
    } = match lookup(&p) {
        Ok(l) => l,
        Err(e) => return bad(e),
    };
    if sets.is_empty() {
        return bad("no match[] parameter provided".into());
    }
    let store = api.store.clone();
    let all = blocking(move || {
        store
            .series_labels(&sets, start, end)
            .iter()
            .map(metric_json)
            .collect::<Vec<Json>>()
    })
    .await;
    limited(all, limit)
}

/// `/api/v1/labels`: the label names of the series matching `match[]`
/// (none: every series) with data in `[start, end]`.
async fn labels(
    State(api): State<Api>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    match lookup(&p) {
        Ok(l) => {
            let store = api.store.clone();
            let names = blocking(move || store.label_names_in(&l.sets, l.start, l.end)).await;
            limited(names, l.limit)
        }
        Err(e) => bad(e),
    }
}

/// `/api/v1/label/<name>/values`: the values of `name` on the series
/// matching `match[]` (none: every series) with data in `[start, end]`.
async fn label_values(
    State(api): State<Api>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !keel_core::names::is_label_name(&name) {
        return bad(format!("invalid label name: {name:?}"));
    }
    let p = params(q, &headers, &Bytes::new());
    match lookup(&p) {
        Ok(l) => {
            let store = api.store.clone();
            let values =
                blocking(move || store.label_values_in(&name, &l.sets, l.start, l.end)).await;
            limited(values, l.limit)
        }
        Err(e) => bad(e),
    }
}

/// Store sizes (series, samples, compressed chunk bytes, WAL bytes,
/// blocks), the queries running now and the limits they run under, and
/// rule evaluations that panicked.
async fn keel_status(State(api): State<Api>) -> Response {
    ok(json!({
        "store": api.store.stats(),
        "blocks": api.store.blocks().len(),
        "queries": { "running": api.gate.running(), "limits": api.gate.limits() },
        "rules": { "evaluation_panics": keel_alerting::rules::engine::guard::panics() },
        "forward": api.forward.status(),
        "remote_query": api.older.remote.as_ref().map(|r| r.url()),
    }))
}
