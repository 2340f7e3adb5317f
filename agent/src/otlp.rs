//! Series points as OTLP metrics requests.
//!
//! Points are grouped by their `job` and `instance` labels, and each group
//! is one resource with exactly `service.name` = job and
//! `service.instance.id` = instance: Prometheus 3's OTLP translation (the
//! collector's, or a real Prometheus') turns those back into `job` and
//! `instance` and, with no other resource attribute, writes no
//! `target_info` — so a scraped series arrives with exactly the labels a
//! Prometheus scraping the same target would store. Every point is an OTLP
//! gauge with no unit, named as exposed (counters included: PromQL reads a
//! counter's samples, not its type). A staleness marker travels as a point
//! flagged `FLAG_NO_RECORDED_VALUE` with no value.
//!
//! A native histogram travels as a cumulative exponential histogram:
//! OTLP's scale is its schema, OTLP's bucket `i` its bucket `i + 1` (the
//! collector maps them back), its buckets dense from the lowest to the
//! highest (see [`fit_exponential`]).

use std::io::Write;

use keel_series::histogram::{Histogram, MAX_BUCKETS, MIN_SCHEMA};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram as OtlpHistogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, exemplar, exponential_histogram_data_point, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::exposition::Families;
use crate::scrape::Point;

/// A record's own string `service` attribute (a JSON line's field).
pub fn own_service(r: &opentelemetry_proto::tonic::logs::v1::LogRecord) -> Option<&str> {
    r.attributes.iter().find_map(service_value)
}

/// The value of a string `service` attribute.
fn service_value(a: &KeyValue) -> Option<&str> {
    match a.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) if a.key == "service" => Some(s),
        _ => None,
    }
}

/// Remove a record's own string `service` attribute (a JSON line's
/// field) and return it: the record's resource names its service.
pub fn take_service(r: &mut opentelemetry_proto::tonic::logs::v1::LogRecord) -> Option<String> {
    let i = r
        .attributes
        .iter()
        .position(|a| service_value(a).is_some())?;
    match r.attributes.remove(i).value?.value? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The resource (`service.name`, `host.name`, `log.file.path`) and scope
/// of a tailed file's records.
pub fn log_resource(service: &str, host: &str, file: &str) -> (Resource, InstrumentationScope) {
    (
        Resource {
            attributes: vec![
                kv("service.name", service),
                kv("host.name", host),
                kv("log.file.path", file),
            ],
            ..Resource::default()
        },
        InstrumentationScope {
            name: "keel-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..InstrumentationScope::default()
        },
    )
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// OTLP's `FLAG_NO_RECORDED_VALUE`: the point is a staleness marker.
const NO_RECORDED_VALUE: u32 = 1;

/// Milliseconds since the epoch as OTLP's nanoseconds (0 before 1970).
fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

/// `s` as bytes if it is exactly `n` bytes of hex.
fn hex_bytes(s: &str, n: usize) -> Option<Vec<u8>> {
    if s.len() != 2 * n || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..n)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// A scraped exemplar as OTLP carries it: `trace_id` and `span_id` in
/// their own fields when they are W3C ids in hex (the collector writes
/// them back as those labels), every other label an attribute; at the
/// point's time when it gave none.
fn exemplar(e: crate::exposition::Exemplar, t_ms: i64) -> Exemplar {
    let mut out = Exemplar {
        time_unix_nano: nanos(e.timestamp_ms.unwrap_or(t_ms)),
        value: Some(exemplar::Value::AsDouble(e.value)),
        ..Exemplar::default()
    };
    for (k, v) in e.labels {
        match (k.as_str(), hex_bytes(&v, 16), hex_bytes(&v, 8)) {
            ("trace_id", Some(id), _) => out.trace_id = id,
            ("span_id", _, Some(id)) => out.span_id = id,
            _ => out.filtered_attributes.push(KeyValue {
                key: k,
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v)),
                }),
                ..KeyValue::default()
            }),
        }
    }
    out
}

/// Points as `ResourceMetrics`, one a (`job`, `instance`) pair, one metric
/// a name within it. The points' strings move into the request. A metric
/// whose family is in `families` carries its help as the description and
/// its type, unit and family name in the metadata (`prometheus.type`,
/// `prometheus.unit`, `prometheus.family`), which the collector serves
/// at `/api/v1/metadata`.
pub fn resource_metrics(points: Vec<Point>, families: &Families) -> Vec<ResourceMetrics> {
    type Metrics = (
        Vec<Metric>,
        std::collections::HashMap<(String, Kind), usize>,
    );
    let mut targets: std::collections::BTreeMap<(String, String), Metrics> =
        std::collections::BTreeMap::new();
    for p in points {
        let mut name = String::new();
        let (mut job, mut instance) = (String::new(), String::new());
        let mut attributes = Vec::with_capacity(p.labels.len().saturating_sub(1));
        for (k, v) in p.labels {
            match k.as_str() {
                "__name__" => name = v,
                "job" => job = v,
                "instance" => instance = v,
                _ => attributes.push(KeyValue {
                    key: k,
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v)),
                    }),
                    ..KeyValue::default()
                }),
            }
        }
        let (metrics, by_name) = targets.entry((job, instance)).or_default();
        let kind = match &p.histogram {
            None => Kind::Float,
            Some(h) if h.is_custom() => Kind::Custom,
            Some(_) => Kind::Exponential,
        };
        let key = (name, kind);
        let i = match by_name.get(&key) {
            Some(i) => *i,
            None => {
                let (description, mut metadata) = described(families, &key.0);
                let cumulative = AggregationTemporality::Cumulative as i32;
                let data = match kind {
                    Kind::Exponential => metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: Vec::new(),
                        aggregation_temporality: cumulative,
                    }),
                    Kind::Custom => {
                        let (k, v) = keel_core::names::OTLP_CUSTOM_BUCKETS;
                        metadata.push(kv(k, v));
                        metric::Data::Histogram(OtlpHistogram {
                            data_points: Vec::new(),
                            aggregation_temporality: cumulative,
                        })
                    }
                    Kind::Float => metric::Data::Gauge(Gauge {
                        data_points: Vec::new(),
                    }),
                };
                metrics.push(Metric {
                    name: key.0.clone(),
                    description,
                    metadata,
                    data: Some(data),
                    ..Metric::default()
                });
                by_name.insert(key, metrics.len() - 1);
                metrics.len() - 1
            }
        };
        if let Some(h) = p.histogram {
            let exemplars: Vec<Exemplar> = p
                .exemplar
                .map(|e| exemplar(e, p.t_ms))
                .into_iter()
                .collect();
            match &mut metrics[i].data {
                Some(metric::Data::ExponentialHistogram(e)) => {
                    let mut point = exponential_point(&h, attributes, p.t_ms);
                    point.exemplars = exemplars;
                    e.data_points.push(point);
                }
                Some(metric::Data::Histogram(e)) => {
                    let mut point = explicit_point(&h, attributes, p.t_ms);
                    point.exemplars = exemplars;
                    e.data_points.push(point);
                }
                _ => {}
            }
            continue;
        }
        let stale = keel_core::stale::is_stale(p.value);
        if let Some(metric::Data::Gauge(g)) = &mut metrics[i].data {
            g.data_points.push(NumberDataPoint {
                attributes,
                time_unix_nano: nanos(p.t_ms),
                value: (!stale).then_some(number_data_point::Value::AsDouble(p.value)),
                flags: if stale { NO_RECORDED_VALUE } else { 0 },
                exemplars: p
                    .exemplar
                    .map(|e| exemplar(e, p.t_ms))
                    .into_iter()
                    .collect(),
                ..NumberDataPoint::default()
            });
        }
    }
    targets
        .into_iter()
        .map(|((job, instance), (metrics, _))| {
            let mut attributes = Vec::with_capacity(2);
            if !job.is_empty() {
                attributes.push(kv("service.name", &job));
            }
            if !instance.is_empty() {
                attributes.push(kv("service.instance.id", &instance));
            }
            ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "keel-agent".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect()
}

/// A native histogram brought within what an OTLP exponential histogram
/// carries: whole counts, and each side's buckets, laid out densely from
/// its lowest to its highest, at most [`MAX_BUCKETS`] (the collector's
/// limit) — the resolution is halved until they are.
pub fn fit_exponential(mut h: Histogram) -> Result<Histogram, String> {
    let whole = |c: f64| c.fract() == 0.0 && c < u64::MAX as f64;
    let counts = h.positive.iter().chain(&h.negative).map(|(_, c)| *c);
    if !std::iter::once(h.count)
        .chain(std::iter::once(h.zero_count))
        .chain(counts)
        .all(whole)
    {
        return Err(
            "a float histogram with fractional counts: the agent ships whole counts only".into(),
        );
    }
    // Custom buckets are not coarsened (validated to at most
    // MAX_BUCKETS): the loop below would never end for them.
    while !h.is_custom() && dense_len(&h.positive).max(dense_len(&h.negative)) > MAX_BUCKETS {
        if h.schema == MIN_SCHEMA {
            return Err(format!(
                "its buckets span more than {MAX_BUCKETS} even at schema {MIN_SCHEMA}"
            ));
        }
        h = h.to_schema(h.schema - 1);
    }
    Ok(h)
}

/// Buckets a side takes laid out densely, from its lowest to its
/// highest (as OTLP lays them out).
pub fn dense_len(b: &[(i32, f64)]) -> usize {
    match (b.first(), b.last()) {
        (Some(lo), Some(hi)) => (i64::from(hi.0) - i64::from(lo.0) + 1) as usize,
        _ => 0,
    }
}

/// A native histogram (fitted by [`fit_exponential`]) as a cumulative
/// exponential histogram point; a staleness marker flagged as one.
fn exponential_point(
    h: &Histogram,
    attributes: Vec<KeyValue>,
    t_ms: i64,
) -> ExponentialHistogramDataPoint {
    let dense = |b: &[(i32, f64)]| {
        let lo = b.first()?;
        let mut counts = vec![0u64; dense_len(b)];
        for (i, c) in b {
            counts[(i - lo.0) as usize] = *c as u64;
        }
        Some(exponential_histogram_data_point::Buckets {
            offset: lo.0 - 1,
            bucket_counts: counts,
        })
    };
    let stale = h.is_stale();
    ExponentialHistogramDataPoint {
        attributes,
        time_unix_nano: nanos(t_ms),
        count: h.count as u64,
        sum: (!stale).then_some(h.sum),
        scale: h.schema,
        zero_count: h.zero_count as u64,
        positive: dense(&h.positive),
        negative: dense(&h.negative),
        flags: if stale { NO_RECORDED_VALUE } else { 0 },
        zero_threshold: h.zero_threshold,
        ..ExponentialHistogramDataPoint::default()
    }
}

/// A custom-bucket histogram as a cumulative explicit-bucket point:
/// its bounds, and a count for each bucket up to the one past the last
/// bound; a staleness marker flagged as one.
fn explicit_point(h: &Histogram, attributes: Vec<KeyValue>, t_ms: i64) -> HistogramDataPoint {
    let mut counts = vec![0u64; h.custom_values.len() + 1];
    for (i, c) in &h.positive {
        if let Some(slot) = usize::try_from(*i).ok().and_then(|i| counts.get_mut(i)) {
            *slot = *c as u64;
        }
    }
    let stale = h.is_stale();
    HistogramDataPoint {
        attributes,
        time_unix_nano: nanos(t_ms),
        count: h.count as u64,
        sum: (!stale).then_some(h.sum),
        bucket_counts: counts,
        explicit_bounds: h.custom_values.to_vec(),
        flags: if stale { NO_RECORDED_VALUE } else { 0 },
        ..HistogramDataPoint::default()
    }
}

/// Which OTLP metric a scraped point travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// A gauge point.
    Float,
    /// An exponential histogram point.
    Exponential,
    /// An explicit-bucket histogram point, marked as custom buckets.
    Custom,
}

/// The description and metadata of the metric `name` from its family.
fn described(families: &Families, name: &str) -> (String, Vec<KeyValue>) {
    let Some((family, f)) = crate::exposition::family_of(families, name) else {
        return (String::new(), Vec::new());
    };
    let mut metadata = Vec::with_capacity(3);
    if !f.kind.is_empty() {
        // The text format's "untyped" is Prometheus' "unknown".
        let kind = if f.kind == "untyped" {
            "unknown"
        } else {
            &f.kind
        };
        metadata.push(kv("prometheus.type", kind));
    }
    if !f.unit.is_empty() {
        metadata.push(kv("prometheus.unit", &f.unit));
    }
    if family != name {
        metadata.push(kv("prometheus.family", family));
    }
    (f.help.clone(), metadata)
}

/// Encode and gzip a request.
pub fn gzip_request<M: Message>(req: &M) -> Vec<u8> {
    gzip(&req.encode_to_vec())
}

thread_local! {
    /// One deflate state a thread, reset for each body: setting one up
    /// (a window and hash tables of some 300 kB) cost more than
    /// compressing a small batch.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `raw` as a gzip member (RFC 1952: header, raw deflate, CRC-32, size).
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    gzip_parts(&[raw])
}

/// The concatenation of `parts` as one gzip member, without copying
/// them together first.
pub fn gzip_parts(parts: &[&[u8]]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total / 3 + 64);
    // No name, no mtime, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    // An empty body is still one (empty) stream.
    let parts: &[&[u8]] = if parts.is_empty() { &[&[]] } else { parts };
    let done = DEFLATE.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let flush = if last {
                flate2::FlushCompress::Finish
            } else {
                flate2::FlushCompress::None
            };
            let start = c.total_in();
            loop {
                let consumed = usize::try_from(c.total_in() - start)
                    .unwrap_or(part.len())
                    .min(part.len());
                if !last && consumed == part.len() {
                    break;
                }
                out.reserve(64 + (part.len() - consumed) / 2);
                match c.compress_vec(&part[consumed..], &mut out, flush) {
                    Ok(flate2::Status::StreamEnd) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        }
        false
    });
    if !done {
        // Not expected; the plain encoder then.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for part in parts {
            let _ = gz.write_all(part);
        }
        return gz.finish().unwrap_or_default();
    }
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_histogram_travels_as_a_dense_exponential_point_one_index_down() {
        let h = Histogram {
            schema: 3,
            zero_threshold: 0.001,
            zero_count: 1.0,
            count: 7.0,
            sum: 2.5,
            positive: vec![(-2, 1.0), (0, 3.0)],
            negative: vec![(1, 2.0)],
            ..Histogram::default()
        };
        let h = fit_exponential(h).expect("fits");
        let p = exponential_point(&h, Vec::new(), 1_000);
        assert_eq!(
            (p.scale, p.count, p.zero_count, p.sum),
            (3, 7, 1, Some(2.5))
        );
        let pos = p.positive.expect("positive buckets");
        assert_eq!((pos.offset, pos.bucket_counts), (-3, vec![1, 0, 3]));
        let neg = p.negative.expect("negative buckets");
        assert_eq!((neg.offset, neg.bucket_counts), (0, vec![2]));
        assert_eq!((p.flags, p.time_unix_nano), (0, 1_000_000_000));
        // A marker: flagged, no sum.
        let stale = Histogram {
            sum: keel_core::stale::marker(),
            ..Histogram::default()
        };
        let p = exponential_point(&stale, Vec::new(), 1_000);
        assert_eq!(
            (p.flags, p.sum, p.positive),
            (NO_RECORDED_VALUE, None, None)
        );
        // Buckets too far apart for a dense layout: coarsened until they fit.
        let wide = Histogram {
            schema: 0,
            count: 2.0,
            positive: vec![(0, 1.0), (5000, 1.0)],
            ..Histogram::default()
        };
        let w = fit_exponential(wide).expect("fits coarser");
        assert_eq!(
            (w.schema, w.positive.clone()),
            (-1, vec![(0, 1.0), (2500, 1.0)])
        );
        // Fractional counts cannot be carried.
        let rate = Histogram {
            count: 0.5,
            ..Histogram::default()
        };
        assert!(fit_exponential(rate).is_err());
    }
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use std::io::Read;

    #[test]
    fn gzip_bodies_decode_whatever_their_size_and_one_after_another() {
        let mut seed = 1u64;
        for len in [0usize, 1, 100, 70_000, 3_000_000] {
            // Half text, half noise, so some of it does not compress.
            let raw: Vec<u8> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    if i % 2 == 0 {
                        b'a' + (i % 7) as u8
                    } else {
                        (seed >> 56) as u8
                    }
                })
                .collect();
            let body = gzip(&raw);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut back)
                .expect("gunzip");
            assert_eq!(back, raw, "{len} bytes");
            // The same bytes in uneven parts are the same stream's content.
            let cuts = [0, len / 7, len / 7, len / 2, len];
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &raw[w[0]..w[1]]).collect();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gzip_parts(&parts)[..])
                .read_to_end(&mut back)
                .expect("gunzip parts");
            assert_eq!(back, raw, "{len} bytes in {} parts", parts.len());
        }
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gzip_parts(&[])[..])
            .read_to_end(&mut back)
            .expect("no parts: an empty member");
        assert!(back.is_empty());
    }

    #[test]
    fn points_round_trip_through_gzip_protobuf_a_resource_a_target() {
        let p = |name: &str, code: &str, instance: &str, v: f64| Point {
            labels: vec![
                ("__name__".into(), name.into()),
                ("code".into(), code.into()),
                ("instance".into(), instance.into()),
                ("job".into(), "web".into()),
            ],
            t_ms: 1_700_000_000_123,
            value: v,
            exemplar: None,
            histogram: None,
        };
        let rms = resource_metrics(
            vec![
                p("reqs_total", "200", "a:1", 5.0),
                p("reqs_total", "500", "a:1", keel_core::stale::marker()),
                p("up", "", "a:1", 1.0),
                p("up", "", "b:2", 0.0),
            ],
            &Families::new(),
        );
        let req = ExportMetricsServiceRequest {
            resource_metrics: rms,
        };
        let body = gzip_request(&req);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut raw)
            .expect("gunzip");
        let back = ExportMetricsServiceRequest::decode(&raw[..]).expect("decode");
        assert_eq!(back, req);
        // One resource a target, naming it and nothing else.
        assert_eq!(back.resource_metrics.len(), 2);
        let resource = back.resource_metrics[0]
            .resource
            .as_ref()
            .expect("resource");
        let keys: Vec<(&str, String)> = resource
            .attributes
            .iter()
            .map(|a| (a.key.as_str(), format!("{:?}", a.value)))
            .collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].0, "service.name");
        assert!(keys[1].1.contains("a:1"), "{keys:?}");
        let metrics = &back.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2);
        let Some(metric::Data::Gauge(g)) = &metrics[0].data else {
            panic!("gauge expected");
        };
        assert_eq!(g.data_points.len(), 2);
        assert_eq!(g.data_points[0].time_unix_nano, 1_700_000_000_123_000_000);
        // job and instance are the resource's, not the point's.
        assert_eq!(g.data_points[0].attributes.len(), 1);
        // The stale point: flagged, no value.
        assert_eq!(
            (g.data_points[1].flags, g.data_points[1].value.is_none()),
            (1, true)
        );
        assert_eq!(
            (g.data_points[0].flags, g.data_points[0].value.is_some()),
            (0, true)
        );
    }

    #[test]
    fn a_scraped_exemplar_travels_with_its_point_trace_and_span_in_their_fields() {
        let body = "a_bucket{le=\"1\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\",user=\"u\"} 0.5 2.5\nb 1 # {trace_id=\"short\"} 2\n";
        let parsed = crate::exposition::parse_as(body, crate::exposition::Format::OpenMetrics);
        let points = parsed
            .samples
            .into_iter()
            .map(|s| Point {
                labels: s.labels,
                t_ms: 7,
                value: s.value,
                exemplar: s.exemplar,
                histogram: s.histogram,
            })
            .collect();
        let rms = resource_metrics(points, &parsed.families);
        let ex = |name: &str| {
            let m = rms[0].scope_metrics[0]
                .metrics
                .iter()
                .find(|m| m.name == name)
                .expect(name);
            let Some(metric::Data::Gauge(g)) = &m.data else {
                panic!("gauge")
            };
            g.data_points[0].exemplars[0].clone()
        };
        let a = ex("a_bucket");
        assert_eq!(
            a.trace_id,
            hex_bytes("4bf92f3577b34da6a3ce929d0e0e4736", 16).expect("hex")
        );
        assert_eq!(
            a.span_id,
            vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(a.filtered_attributes.len(), 1);
        assert_eq!(a.filtered_attributes[0].key, "user");
        assert_eq!(
            (a.time_unix_nano, a.value),
            (2_500_000_000, Some(exemplar::Value::AsDouble(0.5)))
        );
        // Not a W3C trace id: kept as a label; no time of its own: the point's.
        let b = ex("b");
        assert!(b.trace_id.is_empty());
        assert_eq!(b.filtered_attributes[0].key, "trace_id");
        assert_eq!(b.time_unix_nano, 7_000_000);
    }

    #[test]
    fn a_scraped_familys_help_type_and_name_travel_with_its_series() {
        let body = "# HELP req_seconds How long.\n# TYPE req_seconds histogram\nreq_seconds_bucket{le=\"1\"} 1\nreq_seconds_count 1\n# TYPE temp gauge\n# UNIT temp celsius\ntemp 3\nother 1\n";
        let parsed = crate::exposition::parse(body);
        let points = parsed
            .samples
            .into_iter()
            .map(|s| Point {
                labels: s.labels,
                t_ms: 1,
                value: s.value,
                exemplar: s.exemplar,
                histogram: s.histogram,
            })
            .collect();
        let rms = resource_metrics(points, &parsed.families);
        let metrics = &rms[0].scope_metrics[0].metrics;
        let meta = |name: &str| {
            let m = metrics.iter().find(|m| m.name == name).expect(name);
            let kvs: Vec<(String, String)> = m
                .metadata
                .iter()
                .map(|kv| {
                    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    };
                    (kv.key.clone(), v)
                })
                .collect();
            (m.description.clone(), kvs)
        };
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            meta("req_seconds_bucket"),
            (
                "How long.".to_owned(),
                vec![
                    kv("prometheus.type", "histogram"),
                    kv("prometheus.family", "req_seconds")
                ]
            )
        );
        assert_eq!(meta("req_seconds_count").1.len(), 2);
        assert_eq!(
            meta("temp"),
            (
                String::new(),
                vec![
                    kv("prometheus.type", "gauge"),
                    kv("prometheus.unit", "celsius")
                ]
            )
        );
        assert_eq!(meta("other"), (String::new(), vec![]));
    }
}
