//! Tailed log records straight to the bytes of an OTLP logs request.
//!
//! [`logline::record`](crate::logline::record) builds a `LogRecord` — a
//! tree with an allocation for every key and value — and prost then
//! measures each nested message once per level above it while encoding.
//! That was most of the agent's cost at a few thousand lines a second.
//! Here a JSON line is parsed straight into its `LogRecord`'s protobuf
//! bytes, with keys and values borrowed from the line, by the same rules
//! as `logline::record` (a test holds the two equal on a corpus of odd
//! lines). A line this path does not take — a key written twice, whose
//! later value replaces the earlier in place — goes through
//! `logline::record` and prost.

use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message as _;
use serde::de::{Deserializer as _, MapAccess};

use crate::logline::{self, Key, LEVEL, MESSAGE, Scalar, TIME};

/// Protobuf wire types a field's tag carries.
const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

fn tag(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field: its tag, its length, its bytes.
fn bytes_field(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(tag(field, LEN));
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// How long a length-delimited field of `len` bytes is, tag included.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A JSON value as the fast path writes it: scalars borrowed, nested
/// arrays and objects as OTLP values (encoded by prost; rare).
enum Val<'de> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(std::borrow::Cow<'de, str>),
    Nested(AnyValue),
}

impl Val<'_> {
    /// The bytes of the `AnyValue` message this is.
    fn any_value(&self, out: &mut Vec<u8>) {
        match self {
            Val::Null => {}
            Val::Bool(b) => {
                out.push(tag(2, VARINT));
                out.push(u8::from(*b));
            }
            Val::Int(i) => {
                out.push(tag(3, VARINT));
                varint(*i as u64, out);
            }
            Val::Double(d) => {
                out.push(tag(4, FIXED64));
                out.extend_from_slice(&d.to_le_bytes());
            }
            Val::Str(s) => bytes_field(1, s.as_bytes(), out),
            Val::Nested(v) => v.encode_raw(out),
        }
    }

    /// The length of [`Val::any_value`]'s bytes.
    fn any_value_len(&self) -> usize {
        match self {
            Val::Null => 0,
            Val::Bool(_) => 2,
            Val::Int(i) => 1 + varint_len(*i as u64),
            Val::Double(_) => 9,
            Val::Str(s) => field_len(s.len()),
            Val::Nested(v) => v.encoded_len(),
        }
    }

    fn from_scalar(s: Scalar<'_>) -> Val<'_> {
        match s {
            Scalar::Str(s) => Val::Str(s),
            Scalar::Other(v) => Val::Nested(logline::any(v)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Val<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Val<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Val<'de>, E> {
                Ok(Val::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Val<'de>, E> {
                Ok(Val::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Val<'de>, E> {
                Ok(Val::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Val<'de>, E> {
                Ok(i64::try_from(u).map_or(Val::Double(u as f64), Val::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Val<'de>, E> {
                Ok(Val::Double(f))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Val<'de>, E> {
                Ok(Val::Str(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Val<'de>, E> {
                Ok(Val::Str(std::borrow::Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Val<'de>, E> {
                Ok(Val::Str(std::borrow::Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Val<'de>, A::Error> {
                serde::de::Visitor::visit_seq(logline::AnyVisitor, a).map(|a| Val::Nested(a.0))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Val<'de>, A::Error> {
                serde::de::Visitor::visit_map(logline::AnyVisitor, m).map(|a| Val::Nested(a.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Write an attribute (`LogRecord.attributes`, a `KeyValue`).
fn attribute(key: &str, v: &Val<'_>, out: &mut Vec<u8>) {
    let value_len = v.any_value_len();
    out.push(tag(6, LEN));
    varint((field_len(key.len()) + field_len(value_len)) as u64, out);
    bytes_field(1, key.as_bytes(), out);
    out.push(tag(2, LEN));
    varint(value_len as u64, out);
    v.any_value(out);
}

/// A string body (`LogRecord.body`, an `AnyValue`).
fn string_body(s: &str, out: &mut Vec<u8>) {
    out.push(tag(5, LEN));
    varint(field_len(s.len()) as u64, out);
    bytes_field(1, s.as_bytes(), out);
}

/// The time fields, last: protobuf lets fields come in any order.
fn times(time_ns: u64, observed_ns: u64, out: &mut Vec<u8>) {
    if time_ns != 0 {
        out.push(tag(1, FIXED64));
        out.extend_from_slice(&time_ns.to_le_bytes());
    }
    if observed_ns != 0 {
        out.push(tag(11, FIXED64));
        out.extend_from_slice(&observed_ns.to_le_bytes());
    }
}

/// Most keys a line may have on the fast path (their hashes are kept on
/// the stack to find a repeated key).
const MAX_KEYS: usize = 32;

fn key_hash(k: &str) -> u64 {
    // FNV-1a: keys are short; a collision only sends the line the slow way.
    k.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes one JSON object's `LogRecord` bytes as it is parsed. `Ok(None)`:
/// the line needs the slow path; `Ok(Some(service))`: written, with the
/// line's own string `service` field if it had one.
struct RecordWriter<'a> {
    out: &'a mut Vec<u8>,
    observed_ns: u64,
}

impl<'de> serde::de::Visitor<'de> for RecordWriter<'_> {
    type Value = Option<Option<std::borrow::Cow<'de, str>>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let out = self.out;
        let mut seen = [0u64; MAX_KEYS];
        let mut n_keys = 0;
        let mut time_ns = self.observed_ns;
        let mut severity: Option<std::borrow::Cow<'de, str>> = None;
        let mut has_body = false;
        let mut service = None;
        while let Some(Key(k)) = m.next_key::<Key>()? {
            let key: &str = &k;
            let h = key_hash(key);
            if n_keys == MAX_KEYS || seen[..n_keys].contains(&h) {
                // The rest still has to parse for the line to be an object.
                m.next_value::<serde::de::IgnoredAny>()?;
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                return Ok(None);
            }
            seen[n_keys] = h;
            n_keys += 1;
            if TIME.contains(&key) {
                let v = m.next_value::<Scalar>()?;
                let t = match &v {
                    Scalar::Str(s) => logline::time_ns_str(s),
                    Scalar::Other(v) => logline::time_ns(v),
                };
                match t {
                    Some(t) => time_ns = t,
                    None => attribute(key, &Val::from_scalar(v), out),
                }
            } else if LEVEL.contains(&key) {
                match m.next_value::<Scalar>()? {
                    Scalar::Str(s) => severity = Some(s),
                    other => attribute(key, &Val::from_scalar(other), out),
                }
            } else if MESSAGE.contains(&key) && !has_body {
                has_body = true;
                match m.next_value::<Scalar>()? {
                    Scalar::Str(s) => string_body(&s, out),
                    Scalar::Other(v) => string_body(&v.to_string(), out),
                }
            } else if let Some((field, len)) = match key {
                "trace_id" => Some((9, 16)),
                "span_id" => Some((10, 8)),
                _ => None,
            } {
                let v = m.next_value::<Scalar>()?;
                match v.as_str().and_then(|s| logline::hex_bytes(s, len)) {
                    Some(bytes) => bytes_field(field, &bytes, out),
                    None => attribute(key, &Val::from_scalar(v), out),
                }
            } else {
                match m.next_value::<Val>()? {
                    Val::Str(s) if key == "service" => service = Some(s),
                    v => attribute(key, &v, out),
                }
            }
        }
        if let Some(s) = severity {
            bytes_field(3, s.as_bytes(), out);
        }
        times(time_ns, self.observed_ns, out);
        Ok(Some(service))
    }
}

/// A file batch's records as an `ExportLogsServiceRequest`: one
/// resource per service (`service.name`, `host.name`, `log.file.path`),
/// as the collector groups them. A record's own string `service` field
/// names its service; else the default the batch gives. One writer
/// serves a file's batches one after another, keeping its buffers.
#[derive(Default)]
pub struct LogsWriter {
    /// (service, its `ScopeLogs.log_records` fields) in order of first
    /// use; emptied (capacity kept) after each request.
    groups: Vec<(String, Vec<u8>)>,
    /// The record being written.
    scratch: Vec<u8>,
}

/// Services whose buffers a writer keeps between requests.
const KEPT_GROUPS: usize = 8;

impl LogsWriter {
    /// Add the record of one text read at `observed_ns`: structured if it
    /// is a JSON object, else kept whole as the body.
    pub fn push(&mut self, text: &str, observed_ns: u64, default_service: &str) {
        self.scratch.clear();
        let service = if text.trim_start().starts_with('{') {
            self.json(text, observed_ns)
        } else {
            Err(())
        };
        let service = match service {
            Ok(s) => s,
            Err(()) => {
                // Not one JSON object: the whole text is the body, read now.
                self.scratch.clear();
                string_body(text, &mut self.scratch);
                times(observed_ns, observed_ns, &mut self.scratch);
                None
            }
        };
        let service = service.as_deref().unwrap_or(default_service);
        // An emptied group keeps its place (and buffer) for its service.
        let i = match self.groups.iter().position(|(s, _)| s == service) {
            Some(i) => i,
            None => {
                self.groups.push((service.to_owned(), Vec::new()));
                self.groups.len() - 1
            }
        };
        bytes_field(2, &self.scratch, &mut self.groups[i].1);
    }

    /// The record of a JSON text into `scratch`, and its own service;
    /// `Err` when the text is not one JSON object.
    fn json(&mut self, text: &str, observed_ns: u64) -> Result<Option<String>, ()> {
        let mut de = serde_json::Deserializer::from_str(text);
        let written = de
            .deserialize_map(RecordWriter {
                out: &mut self.scratch,
                observed_ns,
            })
            .and_then(|w| de.end().map(|()| w));
        match written {
            Ok(Some(service)) => Ok(service.map(std::borrow::Cow::into_owned)),
            Ok(None) => {
                // A repeated key: the slow path has the rule for it.
                let mut r = logline::record(text, observed_ns, true);
                let service = crate::otlp::take_service(&mut r);
                self.scratch.clear();
                r.encode_raw(&mut self.scratch);
                Ok(service)
            }
            Err(_) => Err(()),
        }
    }

    /// The request so far, protobuf-encoded and gzipped (the records are
    /// compressed where they lie, not copied into one buffer first); the
    /// writer is empty again afterwards.
    pub fn gzip_request(&mut self, host: &str, file: &str) -> Vec<u8> {
        // Each non-empty group's resource and scope head, beside its records.
        let mut groups: Vec<(Vec<u8>, &[u8])> = Vec::new();
        for (service, records) in self.groups.iter().filter(|g| !g.1.is_empty()) {
            let (resource, scope) = crate::otlp::log_resource(service, host, file);
            let (resource, scope) = (resource.encode_to_vec(), scope.encode_to_vec());
            let scope_logs = field_len(scope.len()) + records.len();
            let resource_logs = field_len(resource.len()) + field_len(scope_logs);
            let mut head = Vec::with_capacity(resource.len() + scope.len() + 32);
            head.push(tag(1, LEN));
            varint(resource_logs as u64, &mut head);
            bytes_field(1, &resource, &mut head);
            head.push(tag(2, LEN));
            varint(scope_logs as u64, &mut head);
            bytes_field(1, &scope, &mut head);
            groups.push((head, records));
        }
        let parts: Vec<&[u8]> = groups
            .iter()
            .flat_map(|(head, records)| [head.as_slice(), records])
            .collect();
        let body = crate::otlp::gzip_parts(&parts);
        self.groups.truncate(KEPT_GROUPS);
        for g in &mut self.groups {
            g.1.clear();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    /// What the slow path makes of `texts`: `logline::record` per text,
    /// grouped by service as prost structs.
    fn expected(texts: &[&str], observed_ns: u64, default: &str) -> ExportLogsServiceRequest {
        let mut groups: Vec<(String, Vec<LogRecord>)> = Vec::new();
        for t in texts {
            let mut r = logline::record(t, observed_ns, t.trim_start().starts_with('{'));
            let s = crate::otlp::take_service(&mut r).unwrap_or_else(|| default.to_owned());
            match groups.iter_mut().find(|g| g.0 == s) {
                Some(g) => g.1.push(r),
                None => groups.push((s, vec![r])),
            }
        }
        ExportLogsServiceRequest {
            resource_logs: groups
                .into_iter()
                .map(|(s, log_records)| {
                    let (resource, scope) = crate::otlp::log_resource(&s, "h", "/f.log");
                    ResourceLogs {
                        resource: Some(resource),
                        scope_logs: vec![ScopeLogs {
                            scope: Some(scope),
                            log_records,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    }
                })
                .collect(),
        }
    }

    fn decode(body: &[u8]) -> ExportLogsServiceRequest {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut raw)
            .expect("gunzip");
        ExportLogsServiceRequest::decode(raw.as_slice()).expect("the bytes decode")
    }

    #[test]
    fn a_writer_is_empty_after_each_request_and_keeps_its_groups_apart() {
        let mut w = LogsWriter::default();
        w.push(r#"{"service":"a","message":"1"}"#, 1, "d");
        w.push("two", 1, "d");
        assert_eq!(
            decode(&w.gzip_request("h", "/f.log")),
            expected(&[r#"{"service":"a","message":"1"}"#, "two"], 1, "d")
        );
        // The next request has only its own records, and no empty resource
        // for the service that wrote nothing this time.
        w.push("three", 2, "d");
        assert_eq!(
            decode(&w.gzip_request("h", "/f.log")),
            expected(&["three"], 2, "d")
        );
        assert_eq!(
            decode(&w.gzip_request("h", "/f.log")),
            ExportLogsServiceRequest::default()
        );
    }

    #[test]
    fn varints_are_as_long_as_protobuf_says() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }

    #[test]
    fn the_fast_path_writes_what_the_struct_path_would() {
        let texts = [
            r#"{"timestamp":"2026-11-23T10:00:00.5+01:00","level":"WARN","msg":"slow","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"bad","user":{"id":7},"ms":12.5}"#,
            r#"{"a":1,"a":"two","n":18446744073709551615,"z":null,"l":[1,2.5]}"#,
            r#"{"ts":1700000000123,"message":"m","msg":"second","service":"pay"}"#,
            r#"{"time":"not a time","level":3,"message":{"nested":true},"service":7}"#,
            r#"{"service":"pay","span_id":"00f067aa0ba902b7","trace_id":12,"neg":-5,"big":-9223372036854775808,"b":false,"esc":"a\"b\u00e9"}"#,
            r#"{"ké\u0079":"v","message":"x\ny","level":"error","@timestamp":1700000000.25}"#,
            r#"{"a":1} trailing"#,
            "plain line ünïcode",
            "java.lang.Error: boom\n\tat A.b(A.java:1)",
            r#"{"service":"web","ok":true,"f":1e300,"arr":[{"k":"v"},null,"s"]}"#,
            "{}",
            "{not json",
        ];
        let mut w = LogsWriter::default();
        for t in texts {
            w.push(t, 99, "default");
        }
        let got = decode(&w.gzip_request("h", "/f.log"));
        assert_eq!(got, expected(&texts, 99, "default"));
        let services: Vec<String> = got
            .resource_logs
            .iter()
            .map(|r| {
                let a = &r.resource.as_ref().expect("a resource").attributes[0];
                match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => s.clone(),
                    other => format!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(services, ["default", "pay", "web"], "grouped by first use");
    }

    #[test]
    fn many_keys_go_the_slow_way_and_stay_equal() {
        let line = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut w = LogsWriter::default();
        w.push(&line, 5, "d");
        let got = decode(&w.gzip_request("h", "/f.log"));
        assert_eq!(got, expected(&[&line], 5, "d"));
        assert_eq!(
            got.resource_logs[0].scope_logs[0].log_records[0]
                .attributes
                .len(),
            40
        );
    }
}
