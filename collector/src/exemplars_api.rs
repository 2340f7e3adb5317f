//! `/api/v1/query_exemplars`, as Prometheus answers it: the exemplars in
//! `[start, end]` of every series any selector of `query` picks (a
//! selector inside a range, a function or a binary operation counts),
//! grouped by series. Grafana asks it beside each panel's query and
//! draws the exemplars as points linking to their traces.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use keel_http::{bad, ok, param, params, parse_time};
use keel_metricstore::Store;
use serde_json::{Value as Json, json};

/// The route.
pub fn routes(store: Arc<Store>) -> keel_http::Routes {
    keel_http::Routes::new()
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .map(|r| r.with_state(store))
}

fn labels_json(l: &keel_series::Labels) -> Json {
    Json::Object(
        l.pairs()
            .map(|(k, v)| (k.to_owned(), Json::String(v.to_owned())))
            .collect(),
    )
}

async fn query_exemplars(
    State(store): State<Arc<Store>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let time = |k: &str, absent: i64| param(&p, k).map_or(Ok(absent), parse_time);
    let (start, end) = match (time("start", i64::MIN), time("end", i64::MAX)) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    if end < start {
        return bad("end timestamp must not be before start timestamp".into());
    }
    let sets = match keel_promql::selectors(param(&p, "query").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let found = match tokio::task::spawn_blocking(move || {
        store.exemplars().select(&sets, start, end)
    })
    .await
    {
        Ok(found) => found,
        Err(e) => {
            return keel_http::fail(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the exemplar lookup failed: {e}"),
            );
        }
    };
    ok(Json::Array(
        found
            .iter()
            .map(|(series, es)| {
                json!({
                    "seriesLabels": labels_json(series),
                    "exemplars": es.iter().map(|e| json!({
                        "labels": labels_json(&e.labels),
                        "value": keel_promql::format_api(e.value),
                        "timestamp": e.t as f64 / 1000.0,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    ))
}
