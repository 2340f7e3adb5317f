//! keel-http: what every capability's HTTP routes share.
//!
//! Prometheus' JSON envelope (`{"status": "success", "data": …}` and its
//! errors), reading parameters from the URL or a form body, Prometheus'
//! time and step formats, gzip for JSON answers, the request body's
//! declared length, a router that remembers its paths (so a test can walk
//! every route of a listener), and the worker pool that keeps CPU-heavy handlers
//! off the async runtime.
//!
//! It must never depend on another Keel crate: stores, engines and the
//! server depend on it.

pub mod gzip;
pub mod routes;
pub mod workers;

pub use routes::Routes;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

/// A Prometheus API error: `{status: error, errorType, error}`.
pub fn fail(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        axum::Json(json!({ "status": "error", "errorType": kind, "error": msg })),
    )
        .into_response()
}

/// A 400 `bad_data` error.
pub fn bad(msg: String) -> Response {
    fail(StatusCode::BAD_REQUEST, "bad_data", msg)
}

/// A Prometheus API success: `{status: success, data}`.
pub fn ok(data: Json) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

/// A success with Prometheus' `warnings` (none: as [`ok`]).
pub fn ok_warned(data: Json, warnings: Vec<String>) -> Response {
    ok_annotated(data, warnings, Vec::new())
}

/// A success with Prometheus 3's `warnings` and `infos`, each key
/// present only when it has something to say (as Prometheus writes them).
pub fn ok_annotated(data: Json, warnings: Vec<String>, infos: Vec<String>) -> Response {
    let mut body = json!({ "status": "success", "data": data });
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    if !infos.is_empty() {
        body["infos"] = json!(infos);
    }
    axum::Json(body).into_response()
}

/// Parameters from the URL and, for a POST, from a form-encoded body.
pub fn params(q: Option<String>, headers: &HeaderMap, body: &Bytes) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = q
        .as_deref()
        .map(|s| serde_urlencoded::from_str(s).unwrap_or_default())
        .unwrap_or_default();
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        out.extend(serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default());
    }
    out
}

/// The first value of a parameter.
pub fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The integer parameter `name` (a limit), absent or empty as `None`;
/// the error names the parameter and the value.
pub fn int_param(p: &[(String, String)], name: &str) -> Result<Option<i64>, String> {
    match param(p, name) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{name}: cannot parse {v:?} to a valid limit")),
    }
}

/// A time as Prometheus accepts it: Unix seconds (float) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        // Beyond what milliseconds in an i64 hold (±292 million years).
        let ms = (f * 1000.0).round();
        if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok(ms as i64);
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// A query resolution step (ms): float seconds or a Prometheus duration
/// (`15s`, `1m`). Zero, negative, or under a millisecond (what Keel's
/// millisecond timestamps can step by) is refused with Prometheus' words.
pub fn parse_step(s: &str) -> Result<i64, String> {
    let ms = match s.parse::<f64>() {
        Ok(f) if f.is_finite() => f * 1000.0,
        Ok(_) => return Err(format!("cannot parse {s:?} to a valid duration")),
        Err(_) => promql_parser::util::parse_duration(s)
            .map(|d| d.as_millis() as f64)
            .map_err(|e| format!("cannot parse {s:?} to a valid duration: {e}"))?,
    };
    if ms < 1.0 {
        return Err(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        );
    }
    Ok(ms.round().min(i64::MAX as f64) as i64)
}

/// Most points a range query may return per series, as in Prometheus.
pub const MAX_POINTS: i128 = 11_000;

/// Check a range query's `start`, `end` and `step` (ms) as Prometheus
/// does, without overflow whatever the values.
pub fn check_range(start: i64, end: i64, step: i64) -> Result<(), String> {
    if step <= 0 {
        return Err("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into());
    }
    if end < start {
        return Err(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        );
    }
    if (i128::from(end) - i128::from(start)) / i128::from(step) > MAX_POINTS {
        return Err("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into());
    }
    Ok(())
}

/// The body length a request declares (Content-Length), if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
