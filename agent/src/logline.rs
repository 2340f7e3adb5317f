//! A log line (or a multi-line record) as an OTLP log record.
//!
//! A line that is a JSON object is structured: `timestamp` (`time`, `ts`,
//! `@timestamp`; RFC 3339, or epoch seconds, ms, µs or ns) becomes the
//! record's time, `level` (`severity`, `lvl`) its severity, `message`
//! (`msg`) its body, `trace_id`/`span_id` (hex) its ids, and every other
//! field an attribute, nested objects included. Any other line is kept
//! whole as the body, timed by when it was read.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::Value;

/// A JSON value as an OTLP value, moving its strings (no copies: this
/// runs for every field of every line).
fn any(v: Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(any_value::Value::IntValue(i)),
            None => Some(any_value::Value::DoubleValue(
                n.as_f64().unwrap_or(f64::NAN),
            )),
        },
        Value::String(s) => Some(any_value::Value::StringValue(s)),
        Value::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: a.into_iter().map(any).collect(),
        })),
        Value::Object(m) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: m.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })),
    };
    AnyValue { value }
}

fn kv(key: String, v: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(any(v)),
        ..KeyValue::default()
    }
}

fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Epoch nanoseconds of a JSON timestamp (as the collector reads one;
/// an epoch number written as a string is taken too).
fn time_ns(v: &Value) -> Option<u64> {
    use keel_core::timestamp::{epoch_ns, json_ns, rfc3339_ns};
    let ns = match v {
        Value::String(s) => rfc3339_ns(s.trim())
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().and_then(epoch_ns)),
        other => json_ns(other).ok(),
    };
    ns.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0)
}

const TIME: [&str; 4] = ["timestamp", "time", "ts", "@timestamp"];
const LEVEL: [&str; 3] = ["level", "severity", "lvl"];
const MESSAGE: [&str; 2] = ["message", "msg"];

/// The OTLP record of one log record's text, read at `observed_ns`.
pub fn record(text: &str, observed_ns: u64, json: bool) -> LogRecord {
    let mut r = LogRecord {
        observed_time_unix_nano: observed_ns,
        time_unix_nano: observed_ns,
        ..LogRecord::default()
    };
    let parsed = if json {
        serde_json::from_str::<serde_json::Map<String, Value>>(text).ok()
    } else {
        None
    };
    let Some(fields) = parsed else {
        r.body = Some(any(Value::String(text.to_owned())));
        return r;
    };
    for (k, v) in fields {
        let key = k.as_str();
        let id_len = match key {
            "trace_id" => 16,
            "span_id" => 8,
            _ => 0,
        };
        if TIME.contains(&key)
            && let Some(t) = time_ns(&v)
        {
            r.time_unix_nano = t;
        } else if LEVEL.contains(&key) && v.is_string() {
            if let Value::String(s) = v {
                r.severity_text = s;
            }
        } else if MESSAGE.contains(&key) && r.body.is_none() {
            r.body = Some(match v {
                Value::String(s) => any(Value::String(s)),
                other => any(Value::String(other.to_string())),
            });
        } else if let Some(bytes) = (id_len > 0)
            .then(|| v.as_str().and_then(|s| hex_bytes(s, id_len)))
            .flatten()
        {
            if id_len == 16 {
                r.trace_id = bytes;
            } else {
                r.span_id = bytes;
            }
        } else {
            r.attributes.push(kv(k, v));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &LogRecord) -> String {
        match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn json_fields_become_time_level_body_ids_and_attributes() {
        let r = record(
            r#"{"timestamp":"2026-11-23T10:00:00.5+01:00","level":"WARN","msg":"slow","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"bad","user":{"id":7},"ms":12.5}"#,
            1,
            true,
        );
        assert_eq!(r.time_unix_nano, 1_795_424_400_500_000_000);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(body(&r), "slow");
        assert_eq!(r.trace_id.len(), 16);
        assert!(r.span_id.is_empty(), "a malformed id stays an attribute");
        let keys: Vec<&str> = r.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, vec!["ms", "span_id", "user"]);
        let ms = record(r#"{"ts":1700000000123,"message":"m"}"#, 1, true);
        assert_eq!(ms.time_unix_nano, 1_700_000_000_123_000_000);
    }

    #[test]
    fn other_lines_are_kept_whole_at_the_time_read() {
        let r = record("java.lang.Error: boom\n\tat A.b(A.java:1)", 99, true);
        assert_eq!(body(&r), "java.lang.Error: boom\n\tat A.b(A.java:1)");
        assert_eq!(r.time_unix_nano, 99);
        assert_eq!(
            body(&record("{\"message\":\"x\"}", 5, false)),
            "{\"message\":\"x\"}"
        );
    }
}
