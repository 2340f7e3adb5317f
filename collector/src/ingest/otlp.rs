//! OTLP metrics → Prometheus series, the way Prometheus' own OTLP ingestion
//! maps them (its "underscore escaping with suffixes" translation):
//!
//! - names: non-alphanumeric runs become `_`; the unit becomes a suffix
//!   (`s` → `_seconds`, `By` → `_bytes`, `By/s` → `_bytes_per_second`,
//!   `1` on a gauge → `_ratio`); monotonic sums end in `_total`;
//! - gauges and sums → one series; histograms → `_bucket{le}`, `_sum`,
//!   `_count`; exponential histograms → the same classic buckets (bucket
//!   upper bounds `base^(i+1)`); summaries → `{quantile}`, `_sum`, `_count`;
//! - resource `service.name` → `job` and `service` (`namespace/name` for
//!   `job` when `service.namespace` is set), `service.instance.id` →
//!   `instance`; other resource attributes go to `target_info`;
//! - delta temporality is accumulated into cumulative series (what a
//!   Prometheus query expects), starting from the stored series' last value;
//! - a point flagged "no recorded value" becomes a staleness marker.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, metric::Data, number_data_point,
};

use crate::labels::{Labels, NAME};
use crate::store::STALE_NAN;
use crate::store::wal::Batch;

/// The result of converting one export request.
#[derive(Debug, Default)]
pub struct Converted {
    /// Series and samples to store.
    pub batch: Batch,
    /// Data points that could not be converted.
    pub rejected: u64,
    /// Why, for the first few.
    pub reasons: Vec<String>,
}

impl Converted {
    fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.reasons.len() < 5 {
            self.reasons.push(why);
        }
    }
}

fn any_to_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A label name Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("key_{s}");
    }
    s
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The Prometheus name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, is_counter: bool, is_gauge: bool) -> String {
    let mut parts: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    // Unit annotations in braces ({request}) carry no unit.
    let unit: String = {
        let mut depth = 0;
        unit.chars()
            .filter(|c| {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        return false;
                    }
                    _ => {}
                }
                depth == 0 && *c != '{'
            })
            .collect()
    };
    let (main, per) = match unit.split_once('/') {
        Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
        None => (unit.clone(), None),
    };
    let has = |parts: &[String], w: &str| parts.iter().any(|p| p == w);
    if let Some(w) = unit_word(main.trim()) {
        if !has(&parts, w) {
            parts.push(w.to_owned());
        }
    } else if !main.trim().is_empty()
        && main.trim() != "1"
        && !main.contains(|c: char| !c.is_ascii_alphanumeric())
    {
        parts.push(main.trim().to_owned());
    }
    if let Some(p) = per.as_deref().and_then(|p| per_word(p.trim()))
        && !has(&parts, p)
    {
        parts.push("per".into());
        parts.push(p.into());
    }
    if is_gauge && main.trim() == "1" && !has(&parts, "ratio") {
        parts.push("ratio".into());
    }
    if is_counter {
        parts.retain(|p| p != "total");
        parts.push("total".into());
    }
    let mut s = parts.join("_");
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("_{s}");
    }
    s
}

fn attrs_to_pairs(attrs: &[KeyValue], out: &mut Vec<(String, String)>) {
    for kv in attrs {
        out.push((label_name(&kv.key), any_to_string(&kv.value)));
    }
}

const NO_RECORDED_VALUE: u32 = 1;

struct Sink<'a> {
    out: &'a mut Converted,
    series: HashMap<Labels, Vec<(i64, f64)>>,
    /// Delta accumulation: the running total per series within this request.
    running: HashMap<Labels, f64>,
    last: &'a dyn Fn(&Labels) -> Option<f64>,
}

impl Sink<'_> {
    fn push(&mut self, labels: Labels, t: i64, v: f64, delta: bool) {
        let v = if delta && v.to_bits() != STALE_NAN {
            let base = match self.running.get(&labels) {
                Some(r) => *r,
                None => (self.last)(&labels)
                    .filter(|x| x.is_finite())
                    .unwrap_or(0.0),
            };
            let total = base + v;
            self.running.insert(labels.clone(), total);
            total
        } else {
            v
        };
        self.series.entry(labels).or_default().push((t, v));
    }
}

fn time_ms(nanos: u64) -> Option<i64> {
    (nanos > 0).then_some((nanos / 1_000_000) as i64)
}

/// Convert an export request; `last` gives a stored series' newest value
/// (for delta accumulation).
pub fn convert(
    req: &ExportMetricsServiceRequest,
    last: &dyn Fn(&Labels) -> Option<f64>,
) -> Converted {
    let mut out = Converted::default();
    let mut sink = Sink {
        out: &mut out,
        series: HashMap::new(),
        running: HashMap::new(),
        last,
    };
    for rm in &req.resource_metrics {
        let attrs = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| any_to_string(&kv.value))
                .unwrap_or_default()
        };
        let (svc, ns, inst) = (
            get("service.name"),
            get("service.namespace"),
            get("service.instance.id"),
        );
        let job = if ns.is_empty() {
            svc.clone()
        } else {
            format!("{ns}/{svc}")
        };
        let base = vec![
            ("job".to_owned(), job.clone()),
            ("service".to_owned(), svc.clone()),
            ("instance".to_owned(), inst.clone()),
        ];
        let mut newest = 0i64;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                newest = newest.max(convert_metric(m, &base, &mut sink));
            }
        }
        // target_info: the other resource attributes, once per resource.
        let other: Vec<&KeyValue> = attrs
            .iter()
            .filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            })
            .collect();
        if !other.is_empty() && newest > 0 {
            let mut pairs = vec![
                (NAME.to_owned(), "target_info".to_owned()),
                ("job".into(), job),
                ("instance".into(), inst),
            ];
            for kv in other {
                pairs.push((label_name(&kv.key), any_to_string(&kv.value)));
            }
            sink.push(Labels::new(pairs), newest, 1.0, false);
        }
    }
    let series = std::mem::take(&mut sink.series);
    out.batch = series.into_iter().collect();
    out
}

fn number(p: &NumberDataPoint) -> f64 {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return f64::from_bits(STALE_NAN);
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

fn labels_for(
    base: &[(String, String)],
    name: &str,
    attrs: &[KeyValue],
    extra: &[(&str, String)],
) -> Labels {
    let mut pairs = base.to_vec();
    attrs_to_pairs(attrs, &mut pairs);
    pairs.push((NAME.to_owned(), name.to_owned()));
    for (k, v) in extra {
        pairs.push(((*k).to_owned(), v.clone()));
    }
    Labels::new(pairs)
}

fn le(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".into()
    } else {
        crate::promql::format_value(bound)
    }
}

/// Convert one metric; returns the newest timestamp seen.
fn convert_metric(m: &Metric, base: &[(String, String)], sink: &mut Sink<'_>) -> i64 {
    let mut newest = 0;
    let Some(data) = &m.data else {
        sink.out.reject(format!("metric {:?} has no data", m.name));
        return 0;
    };
    match data {
        Data::Gauge(g) => {
            let name = metric_name(&m.name, &m.unit, false, true);
            newest = number_points(&m.name, &name, base, &g.data_points, false, sink);
        }
        Data::Sum(s) => {
            let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, s.is_monotonic, !s.is_monotonic);
            newest = number_points(&m.name, &name, base, &s.data_points, delta, sink);
        }
        Data::Histogram(h) => {
            let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in &h.data_points {
                match time_ms(p.time_unix_nano) {
                    Some(t) => {
                        newest = newest.max(t);
                        histogram(base, &name, p, t, delta, sink);
                    }
                    None => sink
                        .out
                        .reject(format!("{}: data point without a timestamp", m.name)),
                }
            }
        }
        Data::ExponentialHistogram(h) => {
            let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in &h.data_points {
                match (time_ms(p.time_unix_nano), exponential_to_classic(p)) {
                    (Some(t), Ok(classic)) => {
                        newest = newest.max(t);
                        histogram(base, &name, &classic, t, delta, sink);
                    }
                    (None, _) => sink
                        .out
                        .reject(format!("{}: data point without a timestamp", m.name)),
                    (_, Err(why)) => sink.out.reject(format!("{}: {why}", m.name)),
                }
            }
        }
        Data::Summary(s) => {
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in &s.data_points {
                let Some(t) = time_ms(p.time_unix_nano) else {
                    sink.out
                        .reject(format!("{}: data point without a timestamp", m.name));
                    continue;
                };
                newest = newest.max(t);
                let stale = p.flags & NO_RECORDED_VALUE != 0;
                let val = |v: f64| if stale { f64::from_bits(STALE_NAN) } else { v };
                for q in &p.quantile_values {
                    let l = labels_for(
                        base,
                        &name,
                        &p.attributes,
                        &[("quantile", crate::promql::format_value(q.quantile))],
                    );
                    sink.push(l, t, val(q.value), false);
                }
                sink.push(
                    labels_for(base, &format!("{name}_sum"), &p.attributes, &[]),
                    t,
                    val(p.sum),
                    false,
                );
                sink.push(
                    labels_for(base, &format!("{name}_count"), &p.attributes, &[]),
                    t,
                    val(p.count as f64),
                    false,
                );
            }
        }
    }
    newest
}

/// Store gauge or sum points as one series each; returns the newest time.
fn number_points(
    otlp_name: &str,
    name: &str,
    base: &[(String, String)],
    points: &[NumberDataPoint],
    delta: bool,
    sink: &mut Sink<'_>,
) -> i64 {
    let mut newest = 0;
    for p in points {
        let Some(t) = time_ms(p.time_unix_nano) else {
            sink.out
                .reject(format!("{otlp_name}: data point without a timestamp"));
            continue;
        };
        newest = newest.max(t);
        sink.push(
            labels_for(base, name, &p.attributes, &[]),
            t,
            number(p),
            delta,
        );
    }
    newest
}

fn histogram(
    base: &[(String, String)],
    name: &str,
    p: &HistogramDataPoint,
    t: i64,
    delta: bool,
    sink: &mut Sink<'_>,
) {
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let val = |v: f64| if stale { f64::from_bits(STALE_NAN) } else { v };
    let mut cumulative = 0u64;
    for (i, count) in p.bucket_counts.iter().enumerate() {
        // Counts come from outside: saturate rather than overflow.
        cumulative = cumulative.saturating_add(*count);
        let bound = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
        let l = labels_for(
            base,
            &format!("{name}_bucket"),
            &p.attributes,
            &[("le", le(bound))],
        );
        sink.push(l, t, val(cumulative as f64), delta);
    }
    if p.explicit_bounds.len() >= p.bucket_counts.len() {
        // No overflow bucket sent: +Inf holds the total count.
        let l = labels_for(
            base,
            &format!("{name}_bucket"),
            &p.attributes,
            &[("le", "+Inf".into())],
        );
        sink.push(l, t, val(p.count as f64), delta);
    }
    if let Some(sum) = p.sum {
        sink.push(
            labels_for(base, &format!("{name}_sum"), &p.attributes, &[]),
            t,
            val(sum),
            delta,
        );
    }
    sink.push(
        labels_for(base, &format!("{name}_count"), &p.attributes, &[]),
        t,
        val(p.count as f64),
        delta,
    );
}

/// Exponential buckets as classic ones: bucket `i` holds values in
/// `(base^i, base^(i+1)]` with `base = 2^(2^-scale)`; the zero bucket's
/// bound is the zero threshold.
fn exponential_to_classic(p: &ExponentialHistogramDataPoint) -> Result<HistogramDataPoint, String> {
    if !(-10..=20).contains(&p.scale) {
        return Err(format!(
            "exponential histogram scale {} is outside -10..=20",
            p.scale
        ));
    }
    let base = 2f64.powf(2f64.powi(-p.scale));
    let index = |offset: i32, i: usize| i32::try_from(i).unwrap_or(i32::MAX).saturating_add(offset);
    let mut bounds = Vec::new();
    let mut counts = Vec::new();
    // Negative bucket i holds values in [-base^(i+1), -base^i): classic
    // upper bound -base^i, most negative first so bounds ascend.
    if let Some(neg) = &p.negative {
        for (i, c) in neg.bucket_counts.iter().enumerate().rev() {
            bounds.push(-base.powi(index(neg.offset, i)));
            counts.push(*c);
        }
    }
    bounds.push(p.zero_threshold);
    counts.push(p.zero_count);
    if let Some(pos) = &p.positive {
        for (i, c) in pos.bucket_counts.iter().enumerate() {
            bounds.push(base.powi(index(pos.offset, i).saturating_add(1)));
            counts.push(*c);
        }
    }
    counts.push(0); // overflow bucket
    Ok(HistogramDataPoint {
        attributes: p.attributes.clone(),
        start_time_unix_nano: p.start_time_unix_nano,
        time_unix_nano: p.time_unix_nano,
        count: p.count,
        sum: p.sum,
        bucket_counts: counts,
        explicit_bounds: bounds,
        exemplars: Vec::new(),
        flags: p.flags,
        min: p.min,
        max: p.max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_histograms_with_negative_values_become_ascending_classic_buckets() {
        use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
        // scale 0: base 2. Negative buckets 0 and 1 hold values in [-2, -1)
        // and [-4, -2); zero bucket 1; positive bucket 0 holds (1, 2].
        let p = ExponentialHistogramDataPoint {
            time_unix_nano: 1,
            scale: 0,
            count: 3 + 4 + 1 + 5,
            zero_count: 1,
            zero_threshold: 0.0,
            negative: Some(Buckets {
                offset: 0,
                bucket_counts: vec![3, 4],
            }),
            positive: Some(Buckets {
                offset: 0,
                bucket_counts: vec![5],
            }),
            ..Default::default()
        };
        let c = exponential_to_classic(&p).expect("converts");
        assert_eq!(c.explicit_bounds, vec![-2.0, -1.0, 0.0, 2.0]);
        assert_eq!(c.bucket_counts, vec![4, 3, 1, 5, 0]);
        let cumulative: Vec<u64> = c
            .bucket_counts
            .iter()
            .scan(0, |acc, x| {
                *acc += x;
                Some(*acc)
            })
            .collect();
        assert_eq!(*cumulative.last().expect("buckets"), p.count);
        let bad = ExponentialHistogramDataPoint { scale: 99, ..p };
        assert!(exponential_to_classic(&bad).is_err());
    }

    #[test]
    fn histogram_counts_that_overflow_saturate_instead_of_panicking() {
        use opentelemetry_proto::tonic::metrics::v1::{Histogram, ResourceMetrics, ScopeMetrics};
        let p = HistogramDataPoint {
            time_unix_nano: 1_000_000_000,
            count: u64::MAX,
            bucket_counts: vec![u64::MAX, u64::MAX, 5],
            explicit_bounds: vec![1.0, 2.0],
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "h".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![p],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = convert(&req, &|_| None);
        let inf = out
            .batch
            .iter()
            .find(|(l, _)| l.get("le") == "+Inf")
            .expect("+Inf bucket");
        assert_eq!(inf.1[0].1, u64::MAX as f64);
    }

    #[test]
    fn names_follow_prometheus_otlp_translation() {
        assert_eq!(
            metric_name("http.server.request.duration", "s", false, false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("http.server.requests", "{request}", true, false),
            "http_server_requests_total"
        );
        assert_eq!(
            metric_name("system.memory.usage", "By", false, true),
            "system_memory_usage_bytes"
        );
        assert_eq!(
            metric_name("net.io", "By/s", true, false),
            "net_io_bytes_per_second_total"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", false, true),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("requests_total", "", true, false),
            "requests_total"
        );
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("1st"), "key_1st");
    }
}
