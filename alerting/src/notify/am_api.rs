//! Alertmanager's API v2, so that Prometheus, vmalert and `amtool` work
//! against Keel as against an Alertmanager:
//!
//! - `POST /api/v2/alerts` takes alerts (routed with Keel's own, see
//!   [`super::received`]); `GET /api/v2/alerts` lists Keel's firing
//!   alerts and the received ones (`filter`, `active`, `silenced`,
//!   `inhibited`, `unprocessed`, `receiver`);
//! - `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}`:
//!   Keel's silences in Alertmanager's shape (ids as UUIDs);
//! - `GET /api/v2/status`: enough of Alertmanager's status for
//!   `amtool config` and readiness checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::Notifier;
use super::silence::{Matcher, Op, Silence};
use crate::rules::engine::State as AlertState;

/// The routes.
pub fn routes(n: Arc<Notifier>) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v2/alerts", get(list_alerts).post(post_alerts))
        .route("/api/v2/silences", get(list_silences).post(post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(one_silence).delete(delete_silence),
        )
        .route("/api/v2/status", get(status))
        .map(|r| r.with_state(Am { n }))
}

#[derive(Clone)]
struct Am {
    n: Arc<Notifier>,
}

/// Alertmanager's error answer: the message as a JSON string.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(Json::String(msg.into()))).into_response()
}

fn rfc3339(ms: i64) -> String {
    super::to_alertmanager::rfc3339(ms)
}

fn parse_time(s: &str) -> Result<i64, String> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// A silence id as Alertmanager's UUIDs look (`amtool` shows and takes
/// them so): Keel's number in the last group.
pub fn silence_uuid(id: u64) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        id >> 48,
        (id >> 32) & 0xffff,
        id & 0xffff_ffff_ffff
    )
}

/// Keel's number of a silence UUID made by [`silence_uuid`] (or a plain
/// number).
pub fn silence_number(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 5 || parts[2] != "4000" || parts[3] != "8000" {
        return None;
    }
    let hi = u64::from_str_radix(parts[0], 16).ok()?;
    let mid = u64::from_str_radix(parts[1], 16).ok()?;
    let lo = u64::from_str_radix(parts[4], 16).ok()?;
    (hi <= 0xffff && mid <= 0xffff && lo <= 0xffff_ffff_ffff)
        .then_some((hi << 48) | (mid << 32) | lo)
}

/// `key=value` parameters of a query string.
fn pairs(q: Option<&str>) -> Result<Vec<(String, String)>, String> {
    match q {
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| format!("bad query string: {e}")),
        None => Ok(Vec::new()),
    }
}

/// Alertmanager's `filter` parameters (each a matcher such as
/// `alertname="X"`), parsed.
fn filters(p: &[(String, String)]) -> Result<Vec<Matcher>, String> {
    p.iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| Matcher::parse(v))
        .collect()
}

fn flag(p: &[(String, String)], name: &str) -> Result<bool, String> {
    match p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()) {
        None | Some("") | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(format!("{name}: {v:?} is not true or false")),
    }
}

/// One alert in Alertmanager's `GettableAlert` shape; `times` are its
/// start, end and last update (ms).
fn gettable(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    (starts_at_ms, ends_at_ms, updated_at_ms): (i64, i64, i64),
    generator_url: &str,
    silenced_by: Vec<String>,
    inhibited_by: Vec<String>,
    receivers: &[String],
) -> Json {
    let muted = !silenced_by.is_empty() || !inhibited_by.is_empty();
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(starts_at_ms),
        "endsAt": rfc3339(ends_at_ms),
        "updatedAt": rfc3339(updated_at_ms),
        "generatorURL": generator_url,
        "fingerprint": fingerprint(labels),
        "receivers": receivers.iter().map(|r| json!({ "name": r })).collect::<Vec<_>>(),
        "status": {
            "state": if muted { "suppressed" } else { "active" },
            "silencedBy": silenced_by,
            "inhibitedBy": inhibited_by,
        },
    })
}

/// A label set's fingerprint (FNV-1a of its pairs, as 16 hex digits).
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

async fn list_alerts(State(am): State<Am>, RawQuery(q): RawQuery) -> Response {
    let p = match pairs(q.as_deref()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let flags = (
        flag(&p, "active"),
        flag(&p, "silenced"),
        flag(&p, "inhibited"),
        flag(&p, "unprocessed"),
    );
    let (active, silenced, inhibited) = match flags {
        (Ok(a), Ok(s), Ok(i), Ok(_)) => (a, s, i),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    let matchers = match filters(&p) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let receiver = match p.iter().find(|(k, _)| k == "receiver") {
        Some((_, r)) => match regex::Regex::new(&format!("^(?:{r})$")) {
            Ok(re) => Some(re),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("receiver: {e}")),
        },
        None => None,
    };
    let now = am.n.clock.now_ms();
    let silences = am.n.silences();
    let receivers: Vec<String> = am.n.queues.iter().map(|(r, _)| r.name()).collect();
    let shown: Vec<String> = receivers
        .iter()
        .map(|r| keel_core::secret::redact_url_path(r))
        .collect();
    if receiver
        .as_ref()
        .is_some_and(|re| !shown.iter().any(|r| re.is_match(r)))
    {
        return axum::Json(Json::Array(Vec::new())).into_response();
    }
    let silenced_by = |labels: &BTreeMap<String, String>| -> Vec<String> {
        silences
            .iter()
            .filter(|s| s.mutes(now, labels))
            .map(|s| silence_uuid(s.id))
            .collect()
    };
    // Keel's firing alerts (Prometheus' own: active until 4 resend
    // intervals on) and the received active ones: (labels, annotations,
    // starts, ends, updated, generator URL, severity).
    type Listed = (
        BTreeMap<String, String>,
        BTreeMap<String, String>,
        i64,
        i64,
        i64,
        String,
        crate::rules::Severity,
    );
    let mut listed: Vec<Listed> = super::lock(&am.n.rule_alerts)
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| {
            let start = a.fired_at_ms.unwrap_or(now);
            (
                a.labels.clone(),
                a.annotations.clone(),
                start,
                now + 4 * 60_000,
                now,
                String::new(),
                a.severity,
            )
        })
        .collect();
    listed.extend(
        am.n.received()
            .into_iter()
            .filter(|h| h.active(now))
            .map(|h| {
                (
                    h.labels,
                    h.annotations,
                    h.starts_at_ms,
                    h.ends_at_ms,
                    h.updated_at_ms,
                    h.generator_url,
                    h.severity,
                )
            }),
    );
    // Inhibition sees `severity` as Keel's P0–P2, as the router does.
    let with_severity: Vec<BTreeMap<String, String>> = listed
        .iter()
        .map(|l| {
            let mut m = l.0.clone();
            m.insert("severity".into(), l.6.as_str().into());
            m
        })
        .collect();
    let inhibited_by: Vec<Vec<String>> = {
        let router = super::lock(&am.n.router);
        let sources = router.inhibitions(&with_severity.iter().collect::<Vec<_>>());
        with_severity
            .iter()
            .map(|t| {
                router
                    .inhibited_by(t, &sources)
                    .map(fingerprint)
                    .into_iter()
                    .collect()
            })
            .collect()
    };
    let mut out = Vec::new();
    for (l, inhibitors) in listed.iter().zip(inhibited_by) {
        let by = silenced_by(&l.0);
        // Alertmanager's filter: each kind shown only when asked for.
        let shown_here = matchers.iter().all(|m| m.matches(&l.0))
            && (silenced || by.is_empty())
            && (inhibited || inhibitors.is_empty())
            && (active || !by.is_empty() || !inhibitors.is_empty());
        if shown_here {
            out.push(gettable(
                &l.0,
                &l.1,
                (l.2, l.3, l.4),
                &l.5,
                by,
                inhibitors,
                &shown,
            ));
        }
    }
    axum::Json(Json::Array(out)).into_response()
}

async fn post_alerts(State(am): State<Am>, body: axum::body::Bytes) -> Response {
    let alerts: Vec<super::received::Posted> = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body is not a list of alerts (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    let (_, errors) = am.n.receive(alerts);
    if errors.is_empty() {
        StatusCode::OK.into_response()
    } else {
        error(StatusCode::BAD_REQUEST, errors.join("; "))
    }
}

/// A silence in Alertmanager's `GettableSilence` shape.
fn silence_json(s: &Silence, now: i64) -> Json {
    let state = if s.ends_at_ms <= now {
        "expired"
    } else if s.starts_at_ms > now {
        "pending"
    } else {
        "active"
    };
    json!({
        "id": silence_uuid(s.id),
        "status": { "state": state },
        "updatedAt": rfc3339(s.starts_at_ms.min(now)),
        "matchers": s.matchers.iter().map(|m| json!({
            "name": m.name,
            "value": m.value,
            "isRegex": matches!(m.op, Op::Re | Op::NotRe),
            "isEqual": matches!(m.op, Op::Eq | Op::Re),
        })).collect::<Vec<_>>(),
        "startsAt": rfc3339(s.starts_at_ms),
        "endsAt": rfc3339(s.ends_at_ms),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

async fn list_silences(State(am): State<Am>, RawQuery(q): RawQuery) -> Response {
    let matchers = match pairs(q.as_deref()).and_then(|p| filters(&p)) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = am.n.clock.now_ms();
    // A filter keeps the silences with a matcher equal to each of its
    // matchers, as Alertmanager's does.
    let list: Vec<Json> =
        am.n.silences()
            .iter()
            .filter(|s| matchers.iter().all(|f| s.matchers.iter().any(|m| m == f)))
            .map(|s| silence_json(s, now))
            .collect();
    axum::Json(Json::Array(list)).into_response()
}

/// A matcher of Alertmanager's `PostableSilence`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmMatcher {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

/// Alertmanager's `PostableSilence`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<AmMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

async fn post_silence(State(am): State<Am>, body: axum::body::Bytes) -> Response {
    let s: PostableSilence = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body is not a silence: {e}"),
            );
        }
    };
    let mut matchers = Vec::new();
    for m in &s.matchers {
        let op = match (m.is_regex, m.is_equal) {
            (false, true) => Op::Eq,
            (false, false) => Op::Ne,
            (true, true) => Op::Re,
            (true, false) => Op::NotRe,
        };
        if !keel_core::names::is_label_name(&m.name) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid label name {:?}", m.name),
            );
        }
        match Matcher::new(&m.name, op, &m.value) {
            Ok(m) => matchers.push(m),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    }
    let (start, end) = match (parse_time(&s.starts_at), parse_time(&s.ends_at)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = am.n.clock.now_ms();
    if end <= now {
        return error(StatusCode::BAD_REQUEST, "the silence ends in the past");
    }
    if matchers.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence needs at least one matcher",
        );
    }
    if end <= start.max(now) || start < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "a silence must start after 1970 and end after it starts",
        );
    }
    // An update (`amtool silence update`): in place when Alertmanager
    // would, else the old one ends now and a new one takes its place.
    let done = match s.id.as_deref().filter(|i| !i.is_empty()) {
        Some(id) => match silence_number(id).and_then(|n| {
            am.n.update_silence(n, matchers, start, end, &s.created_by, &s.comment)
        }) {
            Some(done) => done,
            None => return error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
        },
        None => {
            am.n.add_silence(matchers, start.max(now), end, &s.created_by, &s.comment)
        }
    };
    match done {
        Ok(new) => axum::Json(json!({ "silenceID": silence_uuid(new.id) })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn one_silence(State(am): State<Am>, Path(id): Path<String>) -> Response {
    let now = am.n.clock.now_ms();
    match silence_number(&id).and_then(|n| am.n.silences().into_iter().find(|s| s.id == n)) {
        Some(s) => axum::Json(silence_json(&s, now)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

async fn delete_silence(State(am): State<Am>, Path(id): Path<String>) -> Response {
    match silence_number(&id) {
        Some(n) if am.n.expire(n) => StatusCode::OK.into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("silence {id} not found")),
    }
}

async fn status(State(am): State<Am>) -> Response {
    axum::Json(json!({
        "cluster": { "status": "disabled", "peers": [] },
        "versionInfo": {
            "version": "0.25.0",
            "revision": concat!("keel-", env!("CARGO_PKG_VERSION")),
            "branch": "keel",
            "buildUser": "keel",
            "buildDate": "",
            "goVersion": "none (Keel, Rust)",
        },
        "config": { "original": "# Keel routes alerts by severity: collector.notify in keel.yaml\n" },
        "uptime": rfc3339(am.n.started_ms),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_ids_round_trip_through_their_uuid_form() {
        for id in [1u64, 42, 0xffff_ffff_ffff, 0x1234_5678_9abc_def0, u64::MAX] {
            let u = silence_uuid(id);
            assert_eq!(u.len(), 36, "{u}");
            assert_eq!(silence_number(&u), Some(id), "{u}");
        }
        assert_eq!(silence_number("7"), Some(7));
        assert_eq!(silence_number("not-a-uuid"), None);
        assert_eq!(silence_number("00000000-0000-4000-9000-000000000001"), None);
    }
}
