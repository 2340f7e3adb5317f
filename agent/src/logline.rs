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
pub(crate) fn any(v: Value) -> AnyValue {
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

pub(crate) fn hex_bytes(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Epoch nanoseconds of a JSON timestamp (as the collector reads one;
/// an epoch number written as a string is taken too).
pub(crate) fn time_ns(v: &Value) -> Option<u64> {
    use keel_core::timestamp::json_ns;
    match v {
        Value::String(s) => time_ns_str(s),
        other => json_ns(other)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0),
    }
}

/// Epoch nanoseconds of a timestamp written as a string.
pub(crate) fn time_ns_str(s: &str) -> Option<u64> {
    use keel_core::timestamp::{epoch_ns, rfc3339_ns};
    rfc3339_ns(s.trim())
        .ok()
        .or_else(|| s.trim().parse::<f64>().ok().and_then(epoch_ns))
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
}

pub(crate) const TIME: [&str; 4] = ["timestamp", "time", "ts", "@timestamp"];
pub(crate) const LEVEL: [&str; 3] = ["level", "severity", "lvl"];
pub(crate) const MESSAGE: [&str; 2] = ["message", "msg"];

/// The OTLP record of one log record's text, read at `observed_ns`.
pub fn record(text: &str, observed_ns: u64, json: bool) -> LogRecord {
    let base = LogRecord {
        observed_time_unix_nano: observed_ns,
        time_unix_nano: observed_ns,
        ..LogRecord::default()
    };
    if json {
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = serde::Deserializer::deserialize_map(&mut de, RecordVisitor(base.clone()))
            .and_then(|r| de.end().map(|()| r));
        if let Ok(r) = parsed {
            return r;
        }
    }
    LogRecord {
        body: Some(any(Value::String(text.to_owned()))),
        ..base
    }
}

/// Fills a record from a JSON object as it is parsed: attribute values
/// go straight into OTLP values ([`Any`]), with no intermediate map —
/// this runs for every line the agent tails. The few special fields are
/// read as JSON values and interpreted as before.
struct RecordVisitor(LogRecord);

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = LogRecord;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<LogRecord, A::Error> {
        let mut r = self.0;
        // Room for a typical line's fields, so they do not regrow the list.
        r.attributes.reserve(m.size_hint().unwrap_or(0).max(8));
        while let Some(Key(k)) = m.next_key::<Key>()? {
            let key: &str = &k;
            let id_len = match key {
                "trace_id" => 16,
                "span_id" => 8,
                _ => 0,
            };
            let special = id_len > 0
                || TIME.contains(&key)
                || LEVEL.contains(&key)
                || (MESSAGE.contains(&key) && r.body.is_none());
            if !special {
                let Any(v) = m.next_value::<Any>()?;
                set_attribute(&mut r, k.into_owned(), v);
                continue;
            }
            if TIME.contains(&key) {
                // Most timestamps are strings without escapes: read them
                // in place, with no copy.
                let v = m.next_value::<Scalar>()?;
                let t = match &v {
                    Scalar::Str(s) => time_ns_str(s),
                    Scalar::Other(v) => time_ns(v),
                };
                match t {
                    Some(t) => r.time_unix_nano = t,
                    None => set_attribute(&mut r, k.into_owned(), any(v.into_value())),
                }
                continue;
            }
            let v = m.next_value::<Value>()?;
            if LEVEL.contains(&key) && v.is_string() {
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
                set_attribute(&mut r, k.into_owned(), any(v));
            }
        }
        Ok(r)
    }
}

/// A map key, borrowed from the line when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A value that is usually a string: borrowed when it can be, any other
/// JSON value otherwise.
pub(crate) enum Scalar<'de> {
    Str(std::borrow::Cow<'de, str>),
    Other(Value),
}

impl Scalar<'_> {
    /// The string, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            Scalar::Other(_) => None,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.into_owned()),
            Scalar::Other(v) => v,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(std::borrow::Cow::Owned(s)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::from(i)))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::from(u)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::from(f)))
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> Result<Scalar<'de>, A::Error> {
                <Value as serde::Deserialize>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(a),
                )
                .map(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Scalar<'de>, A::Error> {
                <Value as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(m),
                )
                .map(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Add an attribute; a key seen before takes the later value, as a JSON
/// object's would.
fn set_attribute(r: &mut LogRecord, key: String, value: AnyValue) {
    match r.attributes.iter_mut().find(|a| a.key == key) {
        Some(a) => a.value = Some(value),
        None => r.attributes.push(KeyValue {
            key,
            value: Some(value),
            ..KeyValue::default()
        }),
    }
}

/// A JSON value parsed straight into an OTLP value.
pub(crate) struct Any(pub(crate) AnyValue);

impl<'de> serde::Deserialize<'de> for Any {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

pub(crate) struct AnyVisitor;

fn some(v: any_value::Value) -> Any {
    Any(AnyValue { value: Some(v) })
}

impl<'de> serde::de::Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any(AnyValue { value: None }))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Any, E> {
        Ok(some(any_value::Value::BoolValue(b)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Any, E> {
        Ok(some(any_value::Value::IntValue(i)))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Any, E> {
        Ok(some(match i64::try_from(u) {
            Ok(i) => any_value::Value::IntValue(i),
            Err(_) => any_value::Value::DoubleValue(u as f64),
        }))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Any, E> {
        Ok(some(any_value::Value::DoubleValue(f)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Any, E> {
        Ok(some(any_value::Value::StringValue(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Any, E> {
        Ok(some(any_value::Value::StringValue(s)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Any, A::Error> {
        let mut values = Vec::new();
        while let Some(Any(v)) = a.next_element::<Any>()? {
            values.push(v);
        }
        Ok(some(any_value::Value::ArrayValue(ArrayValue { values })))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Any, A::Error> {
        let mut values = Vec::new();
        while let Some((key, Any(v))) = m.next_entry::<String, Any>()? {
            values.push(KeyValue {
                key,
                value: Some(v),
                ..KeyValue::default()
            });
        }
        Ok(some(any_value::Value::KvlistValue(KeyValueList { values })))
    }
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
        assert_eq!(keys, vec!["span_id", "user", "ms"], "in the line's order");
        let user = &r.attributes[1];
        assert!(
            matches!(&user.value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::KvlistValue(l)) if l.values[0].key == "id"),
            "{user:?}"
        );
        let dup = record(
            r#"{"a":1,"a":"two","n":18446744073709551615,"z":null,"l":[1,2.5]}"#,
            1,
            true,
        );
        assert_eq!(
            dup.attributes.len(),
            4,
            "a repeated key keeps its last value"
        );
        assert!(
            matches!(dup.attributes[0].value.as_ref().and_then(|v| v.value.as_ref()), Some(any_value::Value::StringValue(s)) if s == "two")
        );
        assert!(matches!(
            dup.attributes[1]
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref()),
            Some(any_value::Value::DoubleValue(_))
        ));
        assert!(
            dup.attributes[2]
                .value
                .as_ref()
                .is_some_and(|v| v.value.is_none())
        );
        assert_eq!(
            body(&record(r#"{"a":1} trailing"#, 1, true)),
            r#"{"a":1} trailing"#,
            "not one JSON object: kept whole"
        );
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
