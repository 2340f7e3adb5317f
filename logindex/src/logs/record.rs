//! A structured log record, and how JSON lines and OTLP logs become one.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One log record as Keel stores and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogRecord {
    /// When it happened, in nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// `trace`, `debug`, `info`, `warn`, `error` or `fatal` (normalised;
    /// anything else is kept lower-cased), or empty.
    pub level: String,
    /// The service that wrote it.
    pub service: String,
    /// The host it ran on.
    pub host: String,
    /// W3C trace id (32 lower-case hex digits), or empty.
    pub trace_id: String,
    /// Span id (16 lower-case hex digits), or empty.
    pub span_id: String,
    /// The message, searched as full text.
    pub message: String,
    /// Every other field, searchable as `attributes.key:value`.
    pub attributes: Map<String, Value>,
}

/// The usual names of severities, lower-cased.
pub fn normalise_level(s: &str) -> String {
    let l = s.trim().to_ascii_lowercase();
    match l.as_str() {
        "warning" | "warn" => "warn".into(),
        "err" | "error" => "error".into(),
        "critical" | "crit" | "fatal" | "panic" | "emergency" | "alert" => "fatal".into(),
        "information" | "informational" | "notice" | "info" => "info".into(),
        "dbg" | "debug" => "debug".into(),
        "trace" | "verbose" => "trace".into(),
        _ => l,
    }
}

/// OTLP severity numbers (1–24) by range.
fn level_of_number(n: i32) -> &'static str {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "",
    }
}

/// A trace or span id as lower-case hex of exactly `digits`, not all zero.
fn hex_id(s: &str, digits: usize, what: &str) -> Result<String, String> {
    let ok = s.len() == digits
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b != b'0');
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{what} {s:?} is not {digits} hex digits (and not all zero)"
        ))
    }
}

fn timestamp(v: &Value) -> Result<i64, String> {
    keel_core::timestamp::json_ns(v)
}

pub(crate) fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// One JSON object (a line of `POST /api/v1/logs`) as a record; fields
/// not recognised become attributes. `now_ns` stands in for a missing
/// timestamp.
pub fn from_json(obj: Map<String, Value>, now_ns: i64) -> Result<LogRecord, String> {
    let mut r = LogRecord {
        timestamp_ns: now_ns,
        ..LogRecord::default()
    };
    for (k, v) in obj {
        match k.as_str() {
            "timestamp" | "time" | "ts" | "@timestamp" => r.timestamp_ns = timestamp(&v)?,
            "level" | "severity" | "lvl" => r.level = normalise_level(&text(v)),
            "service" | "service.name" | "service_name" => r.service = text(v),
            "host" | "hostname" | "host.name" => r.host = text(v),
            "trace_id" | "traceId" | "trace.id" => r.trace_id = hex_id(&text(v), 32, "trace_id")?,
            "span_id" | "spanId" | "span.id" => r.span_id = hex_id(&text(v), 16, "span_id")?,
            "message" | "msg" | "body" => r.message = text(v),
            _ => {
                r.attributes.insert(k, v);
            }
        }
    }
    Ok(r)
}

/// Parse a body of JSON lines: the good lines as records, and one
/// problem for each bad line, named by its line number (from 1). Blank
/// lines are skipped.
pub fn parse_json_lines(body: &[u8], now_ns: i64) -> (Vec<LogRecord>, Vec<String>) {
    let (good, bad) = parse_json_lines_numbered(body, now_ns);
    (good.into_iter().map(|(_, r)| r).collect(), bad)
}

/// As [`parse_json_lines`], each good record with its line number.
pub fn parse_json_lines_numbered(
    body: &[u8],
    now_ns: i64,
) -> (Vec<(usize, LogRecord)>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|e| format!("not JSON ({e})"))
            .and_then(|v| match v {
                Value::Object(o) => from_json(o, now_ns),
                other => Err(format!("expected a JSON object, got {other}")),
            });
        match parsed {
            Ok(r) => good.push((i + 1, r)),
            Err(e) => bad.push(format!("line {}: {e}", i + 1)),
        }
    }
    (good, bad)
}

/// An OTLP value as JSON.
pub(crate) fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        None => Value::Null,
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

pub(crate) fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, any_json),
            )
        })
        .collect()
}

pub(crate) fn id_hex(bytes: &[u8], len: usize, what: &str) -> Result<String, String> {
    if bytes.is_empty() {
        return Ok(String::new());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex_id(&hex, len * 2, what)
}

/// A resource's attributes without `service.name` and `host.name`, and
/// those two.
pub(crate) fn resource_parts(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> (Map<String, Value>, Option<String>, Option<String>) {
    let mut attrs = resource
        .map(|r| attributes(&r.attributes))
        .unwrap_or_default();
    let service = attrs.remove("service.name").map(text);
    let host = attrs.remove("host.name").map(text);
    (attrs, service, host)
}

/// OTLP logs as records: resource `service.name` and `host.name` become
/// service and host, other resource and record attributes become
/// attributes; records with malformed ids are left out and each named.
pub fn from_otlp(req: &ExportLogsServiceRequest, now_ns: i64) -> (Vec<LogRecord>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let (resource, service, host) = resource_parts(rl.resource.as_ref());
        let (service, host) = (service.unwrap_or_default(), host.unwrap_or_default());
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            for (li, l) in sl.log_records.iter().enumerate() {
                let place = format!("resource_logs[{ri}].scope_logs[{si}].log_records[{li}]");
                let ids = id_hex(&l.trace_id, 16, "trace_id")
                    .and_then(|t| id_hex(&l.span_id, 8, "span_id").map(|s| (t, s)));
                let (trace_id, span_id) = match ids {
                    Ok(ids) => ids,
                    Err(e) => {
                        bad.push(format!("{place}: {e}"));
                        continue;
                    }
                };
                let t = if l.time_unix_nano > 0 {
                    l.time_unix_nano
                } else {
                    l.observed_time_unix_nano
                };
                let mut attrs = resource.clone();
                // The scope of a log record is its logger (Python's
                // logging, Java's loggers): `otel.scope.name`.
                crate::traces::scope_attributes(sl.scope.as_ref(), &mut attrs);
                attrs.extend(attributes(&l.attributes));
                let level = if l.severity_text.is_empty() {
                    level_of_number(l.severity_number).to_owned()
                } else {
                    normalise_level(&l.severity_text)
                };
                good.push(LogRecord {
                    timestamp_ns: if t == 0 {
                        now_ns
                    } else {
                        i64::try_from(t).unwrap_or(i64::MAX)
                    },
                    level,
                    service: service.clone(),
                    host: host.clone(),
                    trace_id,
                    span_id,
                    message: l.body.as_ref().map(any_json).map(text).unwrap_or_default(),
                    attributes: attrs,
                });
            }
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_good_lines_and_name_bad_ones_by_number() {
        let body = br#"{"timestamp":"2026-11-23T10:00:00.5Z","level":"ERROR","service":"payment-service","trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736","user_id":456789,"message":"Payment declined","error":{"code":"insufficient_funds"}}
not json

[1, 2]
{"ts": 1700000000123, "msg": "ms epoch", "level": "warning"}
{"trace_id": "abc123", "message": "short id"}
{"timestamp": "yesterday"}
"#;
        let (good, bad) = parse_json_lines(body, 42);
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].level, "error");
        assert_eq!(good[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(good[0].timestamp_ns, 1_795_428_000_500_000_000);
        assert_eq!(good[0].attributes["error"]["code"], "insufficient_funds");
        assert_eq!(good[0].attributes["user_id"], 456789);
        assert_eq!(good[1].timestamp_ns, 1_700_000_000_123_000_000);
        assert_eq!(good[1].level, "warn");
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[0].starts_with("line 2: not JSON"));
        assert!(bad[1].starts_with("line 4: expected a JSON object"));
        assert!(bad[2].starts_with("line 6: trace_id \"abc123\""));
        assert!(bad[3].starts_with("line 7: timestamp \"yesterday\""));
    }

    #[test]
    fn a_missing_timestamp_is_the_arrival_time() {
        let (good, _) = parse_json_lines(br#"{"message":"x"}"#, 42);
        assert_eq!(good[0].timestamp_ns, 42);
    }
}
