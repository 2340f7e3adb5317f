//! The span store: OTLP spans in an [`IndexStore`], found by trace id (the
//! whole tree) or by service, operation, duration and error status; and
//! the RED metrics derived from them.
//!
//! Indexed fields: `trace_id`, `span_id`, `parent_span_id`, `service`,
//! `operation` (the span name, exact), `span_kind` (`server`, `client`,
//! …), `status` (`unset`, `ok`, `error`), `error` (`true`/`false`),
//! `duration_ns`, `name` (the span name as text, the default field),
//! `attributes` (JSON: the span's and its resource's, `otel.scope.name`
//! and `otel.scope.version`, `events`, and the span's `links`), plus the store's
//! `timestamp` (start, ms).

pub mod api;
pub mod red;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tantivy::TantivyDocument;
use tantivy::schema::{FAST, Field, INDEXED, STRING, Schema, SchemaBuilder, TEXT};

use crate::index_store::{IndexStore, Record, add_text, attributes_options};
use crate::logs::record::{attributes, id_hex, resource_parts};

/// One span as Keel stores and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanRecord {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// The parent's span id, or empty for a root span.
    pub parent_span_id: String,
    /// `service.name` of the resource.
    pub service: String,
    /// The span name (the operation).
    pub operation: String,
    /// `server`, `client`, `producer`, `consumer`, `internal` or `unspecified`.
    pub span_kind: String,
    /// Start (ns since the epoch).
    pub start_ns: i64,
    /// End (ns since the epoch).
    pub end_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// The status message, if any.
    pub status_message: String,
    /// Span and resource attributes (resource ones other than
    /// `service.name`), the scope's name and version
    /// (`otel.scope.name`, `otel.scope.version`), and `events` when the
    /// span has any.
    pub attributes: Map<String, Value>,
    /// Links to other spans, `{trace_id, span_id, attributes}` each (at
    /// most [`MAX_LINKS`]); searchable as `attributes.links.*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Value>,
}

/// Most links a span keeps (OpenTelemetry SDKs' default limit).
pub const MAX_LINKS: usize = 128;

impl SpanRecord {
    /// Duration in nanoseconds (0 if the end precedes the start).
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }

    /// True when its status is error.
    pub fn is_error(&self) -> bool {
        self.status == "error"
    }
}

/// The span store.
pub type SpanStore = IndexStore<SpanRecord>;

impl Record for SpanRecord {
    fn timestamp_ns(&self) -> i64 {
        self.start_ns
    }

    fn schema(b: &mut SchemaBuilder) -> Vec<Field> {
        for keyword in [
            "trace_id",
            "span_id",
            "parent_span_id",
            "service",
            "operation",
            "span_kind",
            "status",
            "error",
        ] {
            b.add_text_field(keyword, STRING);
        }
        b.add_i64_field("duration_ns", INDEXED | FAST);
        b.add_json_field("attributes", attributes_options());
        vec![b.add_text_field("name", TEXT)]
    }

    fn index(&self, schema: &Schema, doc: &mut TantivyDocument) {
        for (field, v) in [
            ("trace_id", self.trace_id.as_str()),
            ("span_id", &self.span_id),
            ("parent_span_id", &self.parent_span_id),
            ("service", &self.service),
            ("operation", &self.operation),
            ("span_kind", &self.span_kind),
            ("status", &self.status),
            ("error", if self.is_error() { "true" } else { "false" }),
            ("name", &self.operation),
        ] {
            add_text(schema, doc, field, v);
        }
        if let Ok(f) = schema.get_field("duration_ns") {
            doc.add_i64(f, self.duration_ns());
        }
        if (!self.attributes.is_empty() || !self.links.is_empty())
            && let Ok(f) = schema.get_field("attributes")
        {
            // Links are searched as `attributes.links.*` (over an
            // attribute of that name).
            let mut indexed = self.attributes.clone();
            if !self.links.is_empty() {
                indexed.insert("links".into(), Value::Array(self.links.clone()));
            }
            doc.add_field_value(f, &tantivy::schema::OwnedValue::from(indexed));
        }
    }
}

fn kind_name(k: i32) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

/// A span's links (to spans of this or other traces: a batch consumer's
/// producers, a retry's first try) as `{trace_id, span_id, attributes}`,
/// the first [`MAX_LINKS`]; a link whose ids are malformed keeps what it
/// has, hex as sent.
fn links(links: &[opentelemetry_proto::tonic::trace::v1::span::Link]) -> Vec<Value> {
    let hex = |b: &[u8], n: usize, what: &str| {
        id_hex(b, n, what).unwrap_or_else(|_| b.iter().map(|x| format!("{x:02x}")).collect())
    };
    links
        .iter()
        .take(MAX_LINKS)
        .map(|l| {
            serde_json::json!({
                "trace_id": hex(&l.trace_id, 16, "trace_id"),
                "span_id": hex(&l.span_id, 8, "span_id"),
                "attributes": attributes(&l.attributes),
            })
        })
        .collect()
}

/// The instrumentation scope's name and version as the attributes
/// `otel.scope.name` and `otel.scope.version` (OpenTelemetry's names for
/// them outside OTLP, as Jaeger shows them); for a log record the name
/// is its logger's.
pub fn scope_attributes(
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    attrs: &mut Map<String, Value>,
) {
    let Some(scope) = scope else { return };
    if !scope.name.is_empty() {
        attrs.insert("otel.scope.name".into(), Value::String(scope.name.clone()));
    }
    if !scope.version.is_empty() {
        attrs.insert(
            "otel.scope.version".into(),
            Value::String(scope.version.clone()),
        );
    }
}

/// OTLP spans as records; spans with missing or malformed ids are left
/// out and each named by its place in the request.
pub fn from_otlp(req: &ExportTraceServiceRequest) -> (Vec<SpanRecord>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let (mut resource, service, host) = resource_parts(rs.resource.as_ref());
        // host.name stays an attribute of spans.
        if let Some(h) = host {
            resource.insert("host.name".into(), Value::String(h));
        }
        let service = service.unwrap_or_else(|| "unknown_service".into());
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (pi, s) in ss.spans.iter().enumerate() {
                let place = format!("resource_spans[{ri}].scope_spans[{si}].spans[{pi}]");
                let ids = (|| {
                    if s.trace_id.is_empty() || s.span_id.is_empty() {
                        return Err("trace_id and span_id are required".to_owned());
                    }
                    Ok((
                        id_hex(&s.trace_id, 16, "trace_id")?,
                        id_hex(&s.span_id, 8, "span_id")?,
                        id_hex(&s.parent_span_id, 8, "parent_span_id")?,
                    ))
                })();
                let (trace_id, span_id, parent_span_id) = match ids {
                    Ok(ids) => ids,
                    Err(e) => {
                        bad.push(format!("{place}: {e}"));
                        continue;
                    }
                };
                let mut attrs = resource.clone();
                scope_attributes(ss.scope.as_ref(), &mut attrs);
                attrs.extend(attributes(&s.attributes));
                if !s.events.is_empty() {
                    let events: Vec<Value> = s
                        .events
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "time_ns": e.time_unix_nano,
                                "name": e.name,
                                "attributes": attributes(&e.attributes),
                            })
                        })
                        .collect();
                    attrs.insert("events".into(), Value::Array(events));
                }
                let status = s.status.as_ref();
                good.push(SpanRecord {
                    trace_id,
                    span_id,
                    parent_span_id,
                    service: service.clone(),
                    operation: s.name.clone(),
                    span_kind: kind_name(s.kind).into(),
                    start_ns: i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX),
                    end_ns: i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX),
                    status: status_name(status.map_or(0, |st| st.code)).into(),
                    status_message: status.map(|st| st.message.clone()).unwrap_or_default(),
                    attributes: attrs,
                    links: links(&s.links),
                });
            }
        }
    }
    (good, bad)
}
