//! The log HTTP API on the API port: JSON-lines ingest for tools that do
//! not speak OTLP, search newest first with cursor paging, and counts
//! over time.
//!
//! - `POST /api/v1/logs`: one JSON object a line. 200 `{"accepted": n}`
//!   when every line was stored; 400 with `accepted`, `rejected` and one
//!   error a bad line (named by line number) otherwise — the good lines
//!   are stored either way. 413 past `collector.max_body_bytes`.
//! - `GET /api/v1/logs/search?q=&start=&end=&limit=&cursor=`: tantivy
//!   query syntax; `start`/`end` as Unix seconds or RFC 3339 (default: the
//!   last hour); `limit` up to 10,000 (default 100).
//! - `GET /api/v1/logs/histogram?q=&start=&end=&step=`: matching records
//!   per step (default 60 s).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keel_core::clock::SharedClock;
use serde_json::json;

use super::{LogError, LogRecord, LogStore};
use keel_http::workers::Workers;
use keel_http::{bad, fail, ok, param, params, parse_step, parse_time};

#[derive(Clone)]
struct LogApi {
    logs: Arc<LogStore>,
    clock: SharedClock,
    workers: Workers,
    limits: crate::limits::RecordLimits,
}

/// The log API's routers: `push` (ingest, for the server to guard
/// like the other ingest routes) and `read` (search and histogram).
pub struct LogRoutes {
    /// `POST /api/v1/logs`; bodies bounded by `max_body`.
    pub push: keel_http::Routes,
    /// `GET /api/v1/logs/search` and `/histogram`.
    pub read: keel_http::Routes,
}

/// The log routes; push bodies are bounded by `max_body`.
pub fn routes(
    logs: Arc<LogStore>,
    clock: SharedClock,
    workers: Workers,
    max_body: usize,
    limits: crate::limits::RecordLimits,
) -> LogRoutes {
    let state = LogApi {
        logs,
        clock,
        workers,
        limits,
    };
    let push = keel_http::Routes::new()
        .route(
            "/api/v1/logs",
            post(push)
                .layer(DefaultBodyLimit::max(max_body))
                .layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        refuse_declared_oversize(req, next, max_body)
                    },
                )),
        )
        .map(|r| r.with_state(state.clone()));
    let read = keel_http::Routes::new()
        .route("/api/v1/logs/search", get(search))
        .route("/api/v1/logs/histogram", get(histogram))
        .map(|r| r.with_state(state));
    LogRoutes { push, read }
}

/// A record as the API returns it: its fields, its sequence number and
/// the time also as RFC 3339.
pub fn record_json(seq: u64, r: &LogRecord) -> serde_json::Value {
    let time = tantivy::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.timestamp_ns))
        .ok()
        .and_then(|t| {
            t.format(&tantivy::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    json!({
        "seq": seq,
        "time": time,
        "timestamp_ns": r.timestamp_ns,
        "level": r.level,
        "service": r.service,
        "host": r.host,
        "trace_id": r.trace_id,
        "span_id": r.span_id,
        "message": r.message,
        "attributes": r.attributes,
    })
}

/// A body declared larger than the limit is refused before it is read.
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    max: usize,
) -> Response {
    match keel_http::declared_length(req.headers()) {
        Some(n) if n > max as u64 => fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_data",
            format!(
                "request body of {n} bytes exceeds the limit of {max} bytes (collector.max_body_bytes)"
            ),
        ),
        _ => next.run(req).await,
    }
}

fn error(e: LogError) -> Response {
    match e {
        LogError::Query(m) => bad(m),
        other => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            other.to_string(),
        ),
    }
}

async fn push(
    State(api): State<LogApi>,
    quota: Option<axum::Extension<std::sync::Arc<keel_core::quota::Quota>>>,
    body: Bytes,
) -> Response {
    let now = api.clock.now_ms();
    let (logs, limits) = (api.logs.clone(), api.limits);
    let work = api
        .workers
        .run(move || {
            let (good, mut problems) =
                super::record::parse_json_lines_numbered(&body, now * 1_000_000);
            // The sender's rate (its token's limits), before anything is kept.
            let (quota, items) = (quota.as_ref().map(|q| &q.0), good.len() as u64);
            if let Some(q) = quota {
                q.take(items, now).map_err(PushError::OverRate)?;
            }
            let lines: Vec<usize> = good.iter().map(|(n, _)| *n).collect();
            let (good, refused) = limits.logs(good.into_iter().map(|(_, r)| r).collect(), |i| {
                format!("line {}", lines.get(i).copied().unwrap_or(0))
            });
            problems.extend(refused);
            logs.append(good, now).map(|n| (n, problems)).map_err(|e| {
                // Not stored: the sender's rate is given back.
                if let Some(q) = quota {
                    q.refund(items);
                }
                PushError::Store(e)
            })
        })
        .await;
    match work {
        Ok(Ok((n, problems))) if problems.is_empty() => {
            axum::Json(json!({ "accepted": n })).into_response()
        }
        Ok(Ok((n, problems))) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "accepted": n,
                "rejected": problems.len(),
                "errors": problems,
            })),
        )
            .into_response(),
        Ok(Err(PushError::Store(e))) => error(e),
        Ok(Err(PushError::OverRate(o))) => {
            let wait = o.retry_after_secs();
            let mut r = fail(StatusCode::TOO_MANY_REQUESTS, "over_rate", o.message);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait),
            );
            r
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Why a push stored nothing.
enum PushError {
    /// The store could not write.
    Store(LogError),
    /// The sender is over its ingestion rate: retry later.
    OverRate(keel_core::quota::OverRate),
}

/// `start`/`end` (default: the hour up to now), as the log and trace
/// searches take them.
pub fn window(p: &[(String, String)], now: i64) -> Result<(i64, i64), String> {
    let end = param(p, "end").map(parse_time).transpose()?.unwrap_or(now);
    let start = param(p, "start")
        .map(parse_time)
        .transpose()?
        .unwrap_or(end.saturating_sub(3_600_000));
    if end < start {
        return Err("end is before start".into());
    }
    Ok((start, end))
}

async fn search(State(api): State<LogApi>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let p = params(q, &headers, &Bytes::new());
    let (start, end) = match window(&p, api.clock.now_ms()) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let limit = match param(&p, "limit").map(str::parse::<usize>).transpose() {
        Ok(l) if l.unwrap_or(100) <= 10_000 => l.unwrap_or(100),
        _ => return bad("limit must be a whole number up to 10000".into()),
    };
    let query = param(&p, "q").unwrap_or("*").to_owned();
    let cursor = param(&p, "cursor").map(str::to_owned);
    let logs = api.logs.clone();
    let work = tokio::task::spawn_blocking(move || {
        logs.search(&query, start, end, limit, cursor.as_deref())
    })
    .await;
    match work {
        Ok(Ok(page)) => ok(json!({
            "records": page.records.iter().map(|(s, r)| record_json(*s, r)).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        })),
        Ok(Err(e)) => error(e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn histogram(
    State(api): State<LogApi>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = params(q, &headers, &Bytes::new());
    let (start, end) = match window(&p, api.clock.now_ms()) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let step = match param(&p, "step").map(parse_step).transpose() {
        Ok(s) => s.unwrap_or(60_000),
        Err(e) => return bad(e),
    };
    let query = param(&p, "q").unwrap_or("*").to_owned();
    let logs = api.logs.clone();
    let work = tokio::task::spawn_blocking(move || logs.histogram(&query, start, end, step)).await;
    match work {
        Ok(Ok(buckets)) => ok(json!({
            "step_ms": step,
            "buckets": buckets.iter().map(|(t, n)| json!([*t as f64 / 1000.0, n])).collect::<Vec<_>>(),
        })),
        Ok(Err(e)) => error(e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
