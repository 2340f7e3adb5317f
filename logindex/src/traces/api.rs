//! The trace HTTP API on the API port.
//!
//! - `GET /api/v1/traces/{trace_id}`: every span of the trace, in start
//!   order, each with its depth in the tree, and the logs written under
//!   the trace. 400 for an id that is not 32 hex digits; 404 if unknown.
//! - `GET /api/v1/traces/search?service=&operation=&min_duration=&error=true&start=&end=&limit=`:
//!   traces with a span matching all the given conditions, newest first
//!   (default: the last hour, 20 traces), each summarised by its root span.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use keel_core::clock::SharedClock;
use serde_json::{Value, json};
use tantivy::Term;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;

use super::{SpanRecord, SpanStore};
use crate::logs::LogStore;
use crate::logs::api::{record_json, window};
use keel_http::{bad, fail, ok, param, params, parse_step};

#[derive(Clone)]
struct TraceApi {
    spans: Arc<SpanStore>,
    logs: Arc<LogStore>,
    clock: SharedClock,
}

/// The trace routes.
pub fn routes(spans: Arc<SpanStore>, logs: Arc<LogStore>, clock: SharedClock) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/traces/search", get(search))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .map(|r| r.with_state(TraceApi { spans, logs, clock }))
}

const ALL_TIME: (i64, i64) = (i64::MIN / 4, i64::MAX / 4);

fn span_json(s: &SpanRecord, depth: usize) -> Value {
    json!({
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "service": s.service,
        "operation": s.operation,
        "span_kind": s.span_kind,
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "duration_ns": s.duration_ns(),
        "status": s.status,
        "status_message": s.status_message,
        "attributes": s.attributes,
        "links": s.links,
        "depth": depth,
    })
}

fn term(spans: &SpanStore, field: &str, value: &str) -> Option<Box<dyn Query>> {
    let f = spans.field(field)?;
    Some(Box::new(TermQuery::new(
        Term::from_field_text(f, value),
        IndexRecordOption::Basic,
    )))
}

/// Every span of a trace, in start order, with each one's depth (a span
/// whose parent is missing counts as a root).
fn load_trace(spans: &SpanStore, id: &str) -> Result<Vec<(SpanRecord, usize)>, String> {
    let q = term(spans, "trace_id", id).ok_or("no trace_id field")?;
    let page = spans
        .search_query(q, ALL_TIME.0, ALL_TIME.1, 10_000, None)
        .map_err(|e| e.to_string())?;
    let mut list: Vec<SpanRecord> = page.records.into_iter().map(|(_, s)| s).collect();
    list.sort_by_key(|s| (s.start_ns, s.end_ns));
    let parent: HashMap<&str, &str> = list
        .iter()
        .map(|s| (s.span_id.as_str(), s.parent_span_id.as_str()))
        .collect();
    let depth = |s: &SpanRecord| {
        let mut d = 0;
        let mut at = s.parent_span_id.as_str();
        while let Some(p) = parent.get(at) {
            d += 1;
            at = p;
            if d > 10_000 {
                break; // a cycle in malformed data
            }
        }
        d
    };
    let depths: Vec<usize> = list.iter().map(depth).collect();
    Ok(list.into_iter().zip(depths).collect())
}

async fn trace(State(api): State<TraceApi>, Path(id): Path<String>) -> Response {
    let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return bad(format!("trace id {id:?} is not 32 hex digits"));
    }
    let id = id.to_ascii_lowercase();
    let (spans, logs) = (api.spans.clone(), api.logs.clone());
    let work = tokio::task::spawn_blocking(move || {
        let tree = load_trace(&spans, &id)?;
        let logs = logs
            .search(
                &format!("trace_id:{id}"),
                ALL_TIME.0,
                ALL_TIME.1,
                1_000,
                None,
            )
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((id, tree, logs))
    })
    .await;
    match work {
        Ok(Ok((id, tree, _))) if tree.is_empty() => fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no spans of trace {id}"),
        ),
        Ok(Ok((id, tree, logs))) => {
            let start = tree.iter().map(|(s, _)| s.start_ns).min().unwrap_or(0);
            let end = tree.iter().map(|(s, _)| s.end_ns).max().unwrap_or(0);
            let mut services: Vec<&str> = tree.iter().map(|(s, _)| s.service.as_str()).collect();
            services.sort_unstable();
            services.dedup();
            let mut log_list: Vec<Value> = logs
                .records
                .iter()
                .map(|(q, r)| record_json(*q, r))
                .collect();
            log_list.reverse(); // oldest first, alongside the spans
            ok(json!({
                "trace_id": id,
                "start_ns": start,
                "duration_ns": end - start,
                "services": services,
                "spans": tree.iter().map(|(s, d)| span_json(s, *d)).collect::<Vec<_>>(),
                "logs": log_list,
            }))
        }
        Ok(Err(e)) => fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn search(
    State(api): State<TraceApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = params(q, &headers, &Bytes::new());
    let parsed = (|| {
        let (start, end) = window(&p, api.clock.now_ms())?;
        let min_ms = param(&p, "min_duration").map(parse_step).transpose()?;
        let error = match param(&p, "error") {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => return Err(format!("error must be true or false, not {other:?}")),
        };
        let limit = match param(&p, "limit").map(str::parse::<usize>).transpose() {
            Ok(l) if l.unwrap_or(20) <= 1_000 => l.unwrap_or(20).max(1),
            _ => return Err("limit must be a whole number up to 1000".into()),
        };
        Ok((start, end, min_ms, error, limit))
    })();
    let (start, end, min_ms, error, limit) = match parsed {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let spans = api.spans.clone();
    let service = param(&p, "service")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let operation = param(&p, "operation")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    // `q`: tantivy's syntax over the span fields and `attributes.<key>`
    // (a linked trace: `attributes.links.trace_id:<id>`; the scope:
    // `attributes.otel\.scope\.name:<name>`).
    let query = match param(&p, "q").filter(|q| !q.trim().is_empty()) {
        Some(q) => match spans.parse(q) {
            Ok(q) => Some(q),
            Err(e) => return bad(format!("q: {e}")),
        },
        None => None,
    };
    let work = tokio::task::spawn_blocking(move || {
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, Box::new(AllQuery))];
        must.extend(query.map(|q| (Occur::Must, q)));
        if let Some(s) = &service {
            must.extend(term(&spans, "service", s).map(|q| (Occur::Must, q)));
        }
        if let Some(o) = &operation {
            must.extend(term(&spans, "operation", o).map(|q| (Occur::Must, q)));
        }
        if let Some(e) = error {
            must.extend(
                term(&spans, "error", if e { "true" } else { "false" }).map(|q| (Occur::Must, q)),
            );
        }
        if let (Some(ms), Some(f)) = (min_ms, spans.field("duration_ns")) {
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_i64(f, ms.saturating_mul(1_000_000))),
                    Bound::Unbounded,
                )),
            ));
        }
        // Matching spans newest first, until `limit` distinct traces.
        let mut order: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        while order.len() < limit {
            let page = spans
                .search_query(
                    Box::new(BooleanQuery::new(
                        must.iter().map(|(o, q)| (*o, q.box_clone())).collect(),
                    )),
                    start,
                    end,
                    500,
                    cursor.as_deref(),
                )
                .map_err(|e| e.to_string())?;
            for (_, s) in &page.records {
                if !order.contains(&s.trace_id) && order.len() < limit {
                    order.push(s.trace_id.clone());
                }
            }
            match page.next_cursor {
                Some(c) if !page.records.is_empty() => cursor = Some(c),
                _ => break,
            }
        }
        let mut out = Vec::new();
        for id in order {
            let tree = load_trace(&spans, &id)?;
            let Some((root, _)) = tree.iter().find(|(_, d)| *d == 0) else {
                continue;
            };
            let start = tree.iter().map(|(s, _)| s.start_ns).min().unwrap_or(0);
            let end = tree.iter().map(|(s, _)| s.end_ns).max().unwrap_or(0);
            out.push(json!({
                "trace_id": id,
                "root_service": root.service,
                "root_operation": root.operation,
                "start_ns": start,
                "duration_ns": end - start,
                "spans": tree.len(),
                "errors": tree.iter().filter(|(s, _)| s.is_error()).count(),
            }));
        }
        Ok::<_, String>(out)
    })
    .await;
    match work {
        Ok(Ok(traces)) => ok(json!({ "traces": traces })),
        Ok(Err(e)) => fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
