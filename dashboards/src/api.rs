//! The dashboard API: the dashboards (with their load errors), each
//! panel's data for a time range and variable values, variable values,
//! a panel exported as YAML, and the timeline of events (alert
//! transitions and the controller's decisions) the charts annotate.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keel_core::clock::SharedClock;
use keel_core::config::Validate as _;
use serde_json::{Value as Json, json};

use super::library::Library;
use super::model::{Dashboard, Panel, Viz, substitute};
use keel_http::{bad, fail, ok, param, params, parse_step};
use keel_logindex::logs::LogStore;
use keel_metricstore::Store;
use keel_promql::{Engine, QueryRange};

/// What the handlers read.
#[derive(Clone)]
pub struct DashboardApi {
    /// The dashboards.
    pub library: Arc<Library>,
    /// Panel queries run through it (the collector's query limits).
    pub gate: keel_promql::QueryGate,
    /// Metrics.
    pub store: Arc<Store>,
    /// Logs (for `logs` panels).
    pub logs: Arc<LogStore>,
    /// Alert history and the controller's events.
    pub state: Option<Arc<keel_state::StateStore>>,
    /// Now.
    pub clock: SharedClock,
}

/// The routes.
pub fn routes(api: DashboardApi) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{uid}", get(one))
        .route("/api/v1/dashboards/{uid}/variables", get(variables))
        .route("/api/v1/dashboards/{uid}/panels/{id}/data", get(panel_data))
        .route("/api/v1/panels/data", post(adhoc_data))
        .route("/api/v1/panels/export", post(export))
        .route("/api/v1/events", get(events))
        .map(|r| r.with_state(api))
}

async fn list(State(api): State<DashboardApi>) -> Response {
    let lib = api.library.clone();
    let entries = tokio::task::spawn_blocking(move || {
        lib.reload_if_changed();
        lib.list()
    })
    .await
    .unwrap_or_default();
    ok(json!(
        entries
            .iter()
            .map(|e| json!({
                "uid": e.uid,
                "file": e.file,
                "title": e.dashboard.as_ref().map(|d| d.title.clone()),
                "description": e.dashboard.as_ref().map(|d| d.description.clone()),
                "error": e.error,
            }))
            .collect::<Vec<_>>()
    ))
}

fn not_found(uid: &str) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no dashboard {uid:?}"),
    )
}

async fn one(State(api): State<DashboardApi>, Path(uid): Path<String>) -> Response {
    // A page load sees the files as they are now, not as of the last tick.
    let lib = api.library.clone();
    let _ = tokio::task::spawn_blocking(move || lib.reload_if_changed()).await;
    match api.library.get(&uid) {
        Some(e) => ok(json!(e)),
        None => not_found(&uid),
    }
}

/// A variable's possible values: its list, or its label's values now.
fn values_of(api: &DashboardApi, v: &super::model::Variable) -> Vec<String> {
    if v.values.is_empty() {
        label_values(
            &api.store,
            v.label.as_deref().unwrap_or_default(),
            v.r#match.as_deref(),
            api.clock.now_ms(),
        )
    } else {
        v.values.clone()
    }
}

/// A variable's chosen value: `var-NAME` from the request, else its
/// default, else the first of `values` (only then read: a label's values
/// are a scan of the series).
fn pick(
    v: &super::model::Variable,
    p: &[(String, String)],
    values: impl FnOnce() -> Vec<String>,
) -> String {
    param(p, &format!("var-{}", v.name))
        .map(str::to_owned)
        .or_else(|| v.default.clone())
        .or_else(|| values().into_iter().next())
        .unwrap_or_default()
}

/// Every variable's chosen value and possible values.
fn chosen(
    api: &DashboardApi,
    d: &Dashboard,
    p: &[(String, String)],
) -> BTreeMap<String, (String, Vec<String>)> {
    d.variables
        .iter()
        .map(|v| {
            let values = values_of(api, v);
            let chosen = pick(v, p, || values.clone());
            (v.name.clone(), (chosen, values))
        })
        .collect()
}

/// The values `label` takes on series matching `selector` (all series
/// without one) in the last day.
fn label_values(store: &Store, label: &str, selector: Option<&str>, now: i64) -> Vec<String> {
    let Some(sel) = selector else {
        return store.label_values(label);
    };
    let Ok(promql_parser::parser::Expr::VectorSelector(vs)) = keel_promql::parse(sel) else {
        return Vec::new();
    };
    let Ok(ms) = keel_promql::eval::matchers(&vs) else {
        return Vec::new();
    };
    let mut v: Vec<String> = store
        .series(&ms, now - 86_400_000, now)
        .iter()
        .map(|l| l.get(label).to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

async fn variables(
    State(api): State<DashboardApi>,
    Path(uid): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(d) = api.library.get(&uid).and_then(|e| e.dashboard) else {
        return not_found(&uid);
    };
    let p = params(q, &headers, &Bytes::new());
    let a = api.clone();
    let vars = tokio::task::spawn_blocking(move || chosen(&a, &d, &p))
        .await
        .unwrap_or_default();
    ok(json!(
        vars.into_iter()
            .map(|(n, (v, all))| (n, json!({"value": v, "values": all})))
            .collect::<serde_json::Map<_, _>>()
    ))
}

/// The time range and step of a panel request.
fn window(p: &[(String, String)], now: i64) -> Result<QueryRange, String> {
    let (start, end) = keel_logindex::logs::api::window(p, now)?;
    // About 300 points unless asked; never more than 11,000.
    let step = param(p, "step")
        .map(parse_step)
        .transpose()?
        .unwrap_or((end.saturating_sub(start) / 300).max(1000));
    keel_http::check_range(start, end, step)?;
    Ok(QueryRange { start, end, step })
}

/// A series' name from the legend template (`{{label}}`), or its labels.
fn legend(template: Option<&str>, labels: &keel_series::labels::Labels) -> String {
    match template {
        Some(t) => {
            let mut out = t.to_owned();
            for (k, v) in labels.pairs() {
                out = out.replace(&format!("{{{{{k}}}}}"), v);
            }
            out
        }
        None => labels.to_string(),
    }
}

/// Evaluate a panel: its series on one time axis (`null` where a series
/// has no value), or its log lines; per-query errors beside the data.
fn evaluate(
    api: &DashboardApi,
    panel: &Panel,
    vars: &BTreeMap<String, String>,
    range: QueryRange,
    budget: &keel_promql::Budget,
) -> Result<Json, String> {
    let value_of = |n: &str| -> Option<String> {
        match n {
            "__interval" => Some(format!("{}ms", range.step)),
            "__rate_interval" => Some(format!("{}ms", (4 * range.step).max(60_000))),
            _ => vars.get(n).cloned(),
        }
    };
    if panel.viz == Viz::Alerts {
        // The page reads /api/v1/alerts itself.
        return Ok(json!({"type": "alerts"}));
    }
    if panel.viz == Viz::Logs {
        let q = substitute(panel.logs.as_deref().unwrap_or("*"), &value_of);
        let page = api
            .logs
            .search(&q, range.start, range.end, 200, None)
            .map_err(|e| e.to_string())?;
        return Ok(json!({
            "type": "logs",
            "query": q,
            "records": page.records.iter().map(|(s, r)| keel_logindex::logs::api::record_json(*s, r)).collect::<Vec<_>>(),
        }));
    }
    let n = ((range.end - range.start) / range.step + 1) as usize;
    let timestamps: Vec<i64> = (0..n as i64)
        .map(|k| range.start + k * range.step)
        .collect();
    let mut series = Vec::new();
    let mut errors = Vec::new();
    let mut exprs = Vec::new();
    let mut exemplars = Vec::new();
    let mut notes = Vec::new();
    for (i, q) in panel.queries.iter().enumerate() {
        let expr = substitute(&q.expr, &value_of);
        match Engine::with_budget(&api.store, budget.clone()).range_annotated(&expr, range) {
            Ok(answer) => {
                // Prometheus 3's warnings and infos, shown on the panel
                // as Grafana shows them.
                for (level, texts) in [
                    ("warning", answer.annotations.warnings()),
                    ("info", answer.annotations.infos()),
                ] {
                    for text in texts {
                        notes.push(json!({"query": i, "level": level, "text": text}));
                    }
                }
                for s in answer.value {
                    if !s.histograms.is_empty() {
                        if panel.viz != Viz::Heatmap {
                            errors.push(json!({"query": i, "expr": expr, "error": format!(
                                "{} holds native histograms: draw them as a heatmap, or read numbers from them with histogram_quantile(), histogram_count() or histogram_sum()",
                                s.labels
                            )}));
                            continue;
                        }
                        for (le, values) in cumulative_buckets(&s.histograms, range, n) {
                            let labels = s.labels.with("le", &le);
                            series.push(json!({
                                "query": i,
                                "name": legend(q.legend.as_deref(), &labels),
                                "labels": labels.pairs().map(|(k, v)| (k.to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                                "values": values,
                            }));
                        }
                        continue;
                    }
                    let mut values: Vec<Option<f64>> = vec![None; n];
                    for (t, v) in &s.points {
                        let k = ((t - range.start) / range.step) as usize;
                        if k < n && v.is_finite() {
                            values[k] = Some(*v);
                        }
                    }
                    series.push(json!({
                        "query": i,
                        "name": legend(q.legend.as_deref(), &s.labels),
                        "labels": s.labels.pairs().map(|(k, v)| (k.to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "values": values,
                    }));
                }
            }
            Err(e) => errors.push(json!({"query": i, "expr": expr, "error": e.to_string()})),
        }
        if q.exemplars {
            exemplars_of(api, &expr, range, &mut exemplars);
        }
        exprs.push(expr);
    }
    if series.is_empty() && !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| e["error"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(json!({
        "type": "series",
        "queries": exprs,
        "timestamps": timestamps,
        "series": series,
        "errors": errors,
        "annotations": notes,
        "exemplars": exemplars,
    }))
}

/// A native histogram series over a panel's steps as the cumulative
/// `le` series a heatmap draws: one for every bucket bound any step has
/// (the zero bucket's and negative buckets' too), and `+Inf` (the
/// count). A bound a step's histogram lacks counts what lies below it.
fn cumulative_buckets(
    points: &[(i64, keel_series::histogram::Histogram)],
    range: QueryRange,
    n: usize,
) -> Vec<(String, Vec<Option<f64>>)> {
    // A custom-bucket histogram's bounds are all rows, empty buckets'
    // too; its top bucket ends at +Inf: the count.
    let mut bounds: Vec<f64> = points
        .iter()
        .flat_map(|(_, h)| {
            if h.is_custom() {
                h.custom_values.to_vec()
            } else {
                h.buckets().into_iter().map(|b| b.upper).collect()
            }
        })
        .filter(|b| *b != f64::INFINITY)
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let mut out: Vec<(String, Vec<Option<f64>>)> = bounds
        .iter()
        .map(|b| (keel_promql::format_value(*b), vec![None; n]))
        .chain(std::iter::once(("+Inf".to_owned(), vec![None; n])))
        .collect();
    for (t, h) in points {
        let k = ((t - range.start) / range.step) as usize;
        if k >= n {
            continue;
        }
        let buckets = h.buckets();
        let mut below = 0.0;
        let mut next = buckets.iter().peekable();
        for (j, bound) in bounds.iter().enumerate() {
            while let Some(b) = next.next_if(|b| b.upper <= *bound) {
                below += b.count;
            }
            out[j].1[k] = Some(below);
        }
        if let Some(last) = out.last_mut() {
            last.1[k] = Some(h.count);
        }
    }
    out
}

/// Most exemplars a panel draws: the newest (a busy service's ten
/// thousand in a day would be a smear, not links).
const EXEMPLARS_PER_PANEL: usize = 200;

/// The exemplars in `range` of the series `expr` selects, newest
/// [`EXEMPLARS_PER_PANEL`] of the panel, each with its time, value,
/// labels (`trace_id`) and series.
fn exemplars_of(api: &DashboardApi, expr: &str, range: QueryRange, out: &mut Vec<Json>) {
    // A query that does not parse has its error beside the series already.
    let Ok(sets) = keel_promql::selectors(expr) else {
        return;
    };
    let labels = |l: &keel_series::labels::Labels| {
        l.pairs()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    let mut found: Vec<Json> = api
        .store
        .exemplars()
        .select(&sets, range.start, range.end)
        .iter()
        .flat_map(|(series, es)| {
            es.iter().map(move |e| {
                json!({"t": e.t, "value": e.value, "labels": labels(&e.labels), "series": labels(series)})
            })
        })
        .collect();
    found.sort_by_key(|e| std::cmp::Reverse(e["t"].as_i64().unwrap_or(0)));
    found.truncate(EXEMPLARS_PER_PANEL.saturating_sub(out.len()));
    out.extend(found);
}

/// Evaluate `panel` of `d` for the request's range and variables.
async fn respond(
    api: DashboardApi,
    d: Arc<Dashboard>,
    panel: Panel,
    p: Vec<(String, String)>,
) -> Response {
    let range = match window(&p, api.clock.now_ms()) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let gate = api.gate.clone();
    let work = gate
        .run(move |budget| {
            let vars = d
                .variables
                .iter()
                .map(|v| (v.name.clone(), pick(v, &p, || values_of(&api, v))))
                .collect();
            Ok(evaluate(&api, &panel, &vars, range, &budget))
        })
        .await;
    match work {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => fail(StatusCode::UNPROCESSABLE_ENTITY, "execution", e),
        Err(e @ keel_promql::EvalError::Timeout(_)) => {
            fail(StatusCode::SERVICE_UNAVAILABLE, "timeout", e.to_string())
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn panel_data(
    State(api): State<DashboardApi>,
    Path((uid, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(d) = api.library.get(&uid).and_then(|e| e.dashboard) else {
        return not_found(&uid);
    };
    // `row.panel`, both from 0.
    let panel = id
        .split_once('.')
        .and_then(|(r, p)| Some((r.parse::<usize>().ok()?, p.parse::<usize>().ok()?)))
        .and_then(|(r, p)| d.rows.get(r)?.panels.get(p).cloned());
    let Some(panel) = panel else {
        return fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("dashboard {uid:?} has no panel {id:?} (row.panel, from 0)"),
        );
    };
    respond(api, d, panel, params(q, &headers, &Bytes::new())).await
}

/// A panel built in the page (JSON body), for the time range in the URL.
async fn adhoc_data(
    State(api): State<DashboardApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let panel = match parse_panel(&body) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let d = Arc::new(Dashboard {
        title: "ad hoc".into(),
        description: String::new(),
        variables: Vec::new(),
        range: std::time::Duration::from_secs(3600),
        rows: Vec::new(),
    });
    respond(api, d, panel, params(q, &headers, &Bytes::new())).await
}

/// A panel from JSON, checked as a dashboard file's would be.
fn parse_panel(body: &[u8]) -> Result<Panel, String> {
    let panel: Panel = serde_json::from_slice(body).map_err(|e| format!("panel: {e}"))?;
    let d = Dashboard {
        title: "export".into(),
        description: String::new(),
        variables: Vec::new(),
        range: std::time::Duration::from_secs(3600),
        rows: vec![super::model::Row {
            title: "row".into(),
            panels: vec![panel.clone()],
        }],
    };
    let mut problems = Vec::new();
    d.validate(&mut problems);
    if problems.is_empty() {
        Ok(panel)
    } else {
        Err(problems
            .iter()
            .map(|p| p.replace("rows[0].panels[0].", ""))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// A panel (JSON) as the YAML a dashboard file holds.
async fn export(body: Bytes) -> Response {
    match parse_panel(&body).and_then(|p| serde_saphyr::to_string(&p).map_err(|e| e.to_string())) {
        Ok(yaml) => (
            [(axum::http::header::CONTENT_TYPE, "application/yaml")],
            yaml,
        )
            .into_response(),
        Err(e) => bad(e),
    }
}

/// One entry of the timeline.
fn alert_event(at_ms: i64, doc: &str) -> Option<Json> {
    let v: Json = serde_json::from_str(doc).ok()?;
    let rule = v["rule"].as_str().unwrap_or("alert");
    let labels = v["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let (from, to) = (
        v["from"].as_str().unwrap_or("inactive"),
        v["to"].as_str().unwrap_or("inactive"),
    );
    Some(json!({
        "at_ms": at_ms,
        "kind": "alert",
        "subject": rule,
        "severity": v["severity"],
        "state": to,
        "explanation": format!("{} {rule} ({labels}): {from} → {to}", v["severity"].as_str().unwrap_or_default()),
        "detail": v,
    }))
}

/// The timeline: alert transitions from the alert history and every
/// event the controller recorded, oldest first; `kind` and `exclude`
/// (comma-separated kinds) and `subject` (a substring) filter, `limit`
/// keeps the newest.
async fn events(
    State(api): State<DashboardApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = params(q, &headers, &Bytes::new());
    let now = api.clock.now_ms();
    let (start, end) = match keel_logindex::logs::api::window(&p, now) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let limit = match param(&p, "limit").map(str::parse::<usize>).transpose() {
        Ok(l) => l.unwrap_or(1000).min(100_000),
        Err(_) => return bad("limit must be a whole number".into()),
    };
    let kinds: Vec<&str> = param(&p, "kind")
        .map(|k| k.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let exclude: Vec<&str> = param(&p, "exclude")
        .map(|k| k.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let subject = param(&p, "subject").unwrap_or_default();
    let Some(st) = &api.state else {
        return ok(json!([]));
    };
    let mut out: Vec<Json> = Vec::new();
    match st.history(start, end, limit as i64).await {
        Ok(h) => out.extend(h.iter().filter_map(|e| alert_event(e.at_ms, &e.doc))),
        Err(e) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
    }
    match st
        .load_between(keel_state::Table::Events, start, end, limit as i64)
        .await
    {
        Ok(rows) => out.extend(
            rows.iter()
                .filter_map(|(_, d)| serde_json::from_str::<Json>(d).ok()),
        ),
        Err(e) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
    }
    out.retain(|e| {
        (kinds.is_empty() || kinds.iter().any(|k| e["kind"] == *k))
            && !exclude.iter().any(|k| e["kind"] == *k)
            && (subject.is_empty() || e["subject"].as_str().is_some_and(|s| s.contains(subject)))
    });
    out.sort_by_key(|e| e["at_ms"].as_i64().unwrap_or(0));
    let skip = out.len().saturating_sub(limit);
    ok(json!(out.split_off(skip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_series::histogram::{CUSTOM_SCHEMA, Histogram};

    #[test]
    fn a_custom_bucket_histogram_draws_one_row_a_bound_empty_or_not_and_one_for_inf() {
        let h = Histogram {
            schema: CUSTOM_SCHEMA,
            count: 6.0,
            sum: 2.0,
            positive: vec![(0, 2.0), (2, 3.0), (3, 1.0)],
            custom_values: std::sync::Arc::from([0.1, 0.5, 1.0]),
            ..Histogram::default()
        };
        let range = QueryRange {
            start: 0,
            end: 10_000,
            step: 10_000,
        };
        let rows = cumulative_buckets(&[(0, h)], range, 2);
        let got: Vec<(&str, Option<f64>)> =
            rows.iter().map(|(le, v)| (le.as_str(), v[0])).collect();
        assert_eq!(
            got,
            [
                ("0.1", Some(2.0)),
                ("0.5", Some(2.0)),
                ("1", Some(5.0)),
                ("+Inf", Some(6.0))
            ]
        );
    }
}
