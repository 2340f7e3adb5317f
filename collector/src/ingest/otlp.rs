//! OTLP metrics → Prometheus series, the way Prometheus' own OTLP ingestion
//! maps them (its "underscore escaping with suffixes" translation):
//!
//! - names: non-alphanumeric runs become `_`; the unit becomes a suffix
//!   (`s` → `_seconds`, `By` → `_bytes`, `By/s` → `_bytes_per_second`,
//!   `1` on a gauge → `_ratio`); monotonic sums end in `_total`;
//! - gauges and sums → one series; histograms → `_bucket{le}`, `_sum`,
//!   `_count`; exponential histograms → one native histogram series (as
//!   Prometheus 3 stores them: OTLP scale is the schema, scales above 8
//!   merged down to 8, bucket `i` becomes index `i + 1`), or with
//!   `exponential_histograms: classic` the classic buckets (upper bounds
//!   `base^(i+1)`); summaries → `{quantile}`, `_sum`, `_count`;
//! - resource `service.name` → `job` (`namespace/name` when
//!   `service.namespace` is set), `service.instance.id` → `instance`, both
//!   over a data point's own `job`/`instance`; the other resource
//!   attributes go to one `target_info` series a resource (joined on
//!   `job`/`instance`), and become labels only when promoted
//!   ([`Translation`], Prometheus 3's `otlp:` settings) — a series carries
//!   exactly the labels Prometheus 3 would give it;
//! - attribute keys that sanitise to one label name have their values
//!   joined with `;` in the order of the original keys;
//! - delta temporality is accumulated into cumulative series (what a
//!   Prometheus query expects), starting from the stored series' last value;
//! - a point flagged "no recorded value" becomes a staleness marker;
//! - a point's exemplars are kept with its series (a histogram's on the
//!   first bucket whose bound holds the exemplar's value), labelled
//!   `trace_id` and `span_id` (hex) and their filtered attributes.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, exemplar, metric::Data, number_data_point,
};

use serde::{Deserialize, Serialize};

use keel_metricstore::STALE_NAN;
use keel_metricstore::exemplars::Exemplar;
use keel_metricstore::wal::Batch;
use keel_series::histogram::{
    CounterReset, Histogram, MAX_BUCKETS, MAX_SCHEMA, MIN_SCHEMA, coarser_index,
};
use keel_series::labels::{Labels, NAME};

mod names;
pub use names::{label_name, metric_name, unit_name};

/// The result of converting one export request.
#[derive(Debug, Default)]
pub struct Converted {
    /// Series and samples to store.
    pub batch: Batch,
    /// The `target_info` samples derived from the resources: stored after
    /// `batch`, and never counted as the sender's rejected points (they
    /// are not the sender's).
    pub target_info: Batch,
    /// Data points that could not be converted.
    pub rejected: u64,
    /// Why, for the first few.
    pub reasons: Vec<String>,
    /// Each metric's family, type, help and unit.
    pub metadata: Vec<(String, keel_metricstore::metadata::Meta)>,
    /// The points' exemplars, each with its series.
    pub exemplars: Vec<(Labels, Exemplar)>,
    /// Native histogram series (from exponential histograms).
    pub histograms: Vec<(Labels, Vec<(i64, Histogram)>)>,
    /// Native histogram series sent with delta temporality: each point
    /// an increase, to add to the stored series' newest
    /// ([`accumulate_deltas`]) before they are stored.
    pub delta_histograms: Vec<(Labels, Vec<(i64, Histogram)>)>,
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

/// Which resource attributes become labels: Prometheus 3's `otlp:`
/// settings of the same names (the `collector.otlp` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Translation {
    /// Resource attributes promoted to labels on every series of the
    /// resource (a data point's own attribute of the same name wins).
    pub promote_resource_attributes: Vec<String>,
    /// Promote every resource attribute but those in
    /// `ignore_resource_attributes`.
    pub promote_all_resource_attributes: bool,
    /// With `promote_all_resource_attributes`: the ones not promoted.
    pub ignore_resource_attributes: Vec<String>,
    /// Keep `service.name`, `service.namespace` and `service.instance.id`
    /// on `target_info` too (they are its `job`/`instance` anyway).
    pub keep_identifying_resource_attributes: bool,
    /// Label every series with its instrumentation scope's name and
    /// version (`otel_scope_name`, `otel_scope_version`), as Prometheus'
    /// setting of the same name does (off by default there too: the
    /// labels split a series whose library is upgraded); unlike it, not
    /// the scope's schema URL or attributes. The agent's own scope
    /// (`keel-agent`, a transport for scraped series) is never promoted.
    pub promote_scope_metadata: bool,
    /// What an exponential histogram becomes: `native` (one native
    /// histogram series, as Prometheus 3 stores it) or `classic`
    /// (`_bucket{le}`, `_sum` and `_count` series, as Keel stored them
    /// before native histograms).
    pub exponential_histograms: ExponentialAs,
    /// Store explicit-bucket histograms as native histograms with
    /// custom buckets (one series, bounds as sent), as Prometheus'
    /// `otlp.convert_histograms_to_nhcb`; off: classic `le` series. The
    /// agent's conversions of scraped classic histogram
    /// (`convert_classic_histograms_to_nhcb`) are stored so either way.
    pub convert_histograms_to_nhcb: bool,
}

/// See [`Translation::exponential_histograms`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExponentialAs {
    /// A native histogram series.
    #[default]
    Native,
    /// Classic `le` bucket series.
    Classic,
}

/// The scope the agent sends scraped series under: not instrumentation.
const AGENT_SCOPE: &str = "keel-agent";

impl Translation {
    /// Every problem, named by its field under `at` (`collector.otlp`).
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.promote_all_resource_attributes && !self.promote_resource_attributes.is_empty() {
            problems.push(format!(
                "{at}.promote_resource_attributes: cannot be set with promote_all_resource_attributes (list what to leave out in ignore_resource_attributes)"
            ));
        }
        if !self.promote_all_resource_attributes && !self.ignore_resource_attributes.is_empty() {
            problems.push(format!(
                "{at}.ignore_resource_attributes: only applies with promote_all_resource_attributes: true"
            ));
        }
        for (field, list) in [
            (
                "promote_resource_attributes",
                &self.promote_resource_attributes,
            ),
            (
                "ignore_resource_attributes",
                &self.ignore_resource_attributes,
            ),
        ] {
            for (i, a) in list.iter().enumerate() {
                if a.trim().is_empty() {
                    problems.push(format!("{at}.{field}[{i}]: empty attribute name"));
                } else if list[..i].contains(a) {
                    problems.push(format!("{at}.{field}[{i}]: {a:?} is listed twice"));
                }
            }
        }
    }

    fn promotes(&self, key: &str) -> bool {
        if self.promote_all_resource_attributes {
            !self.ignore_resource_attributes.iter().any(|a| a == key)
        } else {
            self.promote_resource_attributes.iter().any(|a| a == key)
        }
    }
}

/// The resource attributes that name a target: `job` and `instance`.
const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

/// What a resource gives each of its series.
struct Base {
    /// Promoted resource attributes (a point's own attributes win).
    promoted: Vec<(String, String)>,
    /// `job` and `instance`, those the resource has (they win over a
    /// point's own).
    ids: Vec<(String, String)>,
    /// `otel_scope_name` and `otel_scope_version` when promoted (over a
    /// point's own attributes of those names).
    scope: Vec<(String, String)>,
}

/// A data point's attributes as label pairs. Keys that sanitise to one
/// name (`a.b`, `a_b`) are one label whose values are joined with `;` in
/// the order of the original keys, as Prometheus does.
fn attrs_to_pairs(attrs: &[KeyValue], out: &mut Vec<(String, String)>) {
    let start = out.len();
    let mut renamed = false;
    // An empty key is no attribute (OpenTelemetry: keys are non-empty).
    for kv in attrs.iter().filter(|kv| !kv.key.is_empty()) {
        let name = label_name(&kv.key);
        renamed |= name != kv.key;
        out.push((name, any_to_string(&kv.value)));
    }
    // Keys already valid label names cannot collide (OTLP keys are unique).
    if !renamed {
        return;
    }
    let mut mine: Vec<(&str, String, String)> = attrs
        .iter()
        .filter(|kv| !kv.key.is_empty())
        .zip(out.drain(start..))
        .map(|(kv, (name, value))| (kv.key.as_str(), name, value))
        .collect();
    mine.sort_by(|a, b| a.0.cmp(b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(mine.len());
    for (_, name, value) in mine {
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    out.extend(merged);
}

const NO_RECORDED_VALUE: u32 = 1;

struct Sink<'a> {
    out: &'a mut Converted,
    exponential: ExponentialAs,
    /// Explicit-bucket histograms as custom-bucket native ones.
    nhcb: bool,
    series: HashMap<Labels, Vec<(i64, f64)>>,
    /// Native histogram series, cumulative (`false`) and delta (`true`).
    histograms: [HashMap<Labels, Vec<(i64, Histogram)>>; 2],
    info: Vec<(Labels, Vec<(i64, f64)>)>,
    /// Delta accumulation: the running total per series within this request.
    running: HashMap<Labels, f64>,
    last: &'a dyn Fn(&Labels) -> Option<f64>,
}

impl Sink<'_> {
    /// One native histogram sample of the series `name` with `attrs`,
    /// its exemplars beside it; a delta one to be accumulated.
    #[allow(clippy::too_many_arguments)]
    fn native(
        &mut self,
        base: &Base,
        name: &str,
        attrs: &[KeyValue],
        exemplars: &[opentelemetry_proto::tonic::metrics::v1::Exemplar],
        t: i64,
        h: Histogram,
        delta: bool,
    ) {
        let labels = labels_for(base, name, attrs, &[]);
        for e in exemplars {
            if let Some(e) = exemplar_of(e, t) {
                self.out.exemplars.push((labels.clone(), e));
            }
        }
        let delta = usize::from(delta && !h.is_stale());
        self.histograms[delta]
            .entry(labels)
            .or_default()
            .push((t, h));
    }

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

/// Half Prometheus' lookback: how far apart `target_info` samples are
/// written between a resource's earliest and newest point, so the info
/// series is found at every moment its metrics are.
const TARGET_INFO_EVERY_MS: i64 = 150_000;

/// At most this far back from a resource's newest point (timestamps come
/// from the sender: two points a century apart must not make millions of
/// samples; older ones are out of the store's window anyway).
const TARGET_INFO_SPAN_MS: i64 = 3_600_000;

/// Convert an export request under `translation`; `last` gives a stored
/// series' newest value (for delta accumulation).
pub fn convert(
    req: &ExportMetricsServiceRequest,
    translation: &Translation,
    last: &dyn Fn(&Labels) -> Option<f64>,
) -> Converted {
    let mut out = Converted::default();
    let mut sink = Sink {
        out: &mut out,
        exponential: translation.exponential_histograms,
        nhcb: translation.convert_histograms_to_nhcb,
        series: HashMap::new(),
        histograms: Default::default(),
        info: Vec::new(),
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
        };
        let (svc, ns, inst) = (
            get("service.name"),
            get("service.namespace"),
            get("service.instance.id"),
        );
        // Only what the resource has overrides a point's own job/instance.
        let mut ids = Vec::with_capacity(2);
        if let Some(svc) = svc {
            ids.push((
                "job".to_owned(),
                match ns {
                    Some(ns) if !ns.is_empty() && !svc.is_empty() => format!("{ns}/{svc}"),
                    _ => svc,
                },
            ));
        }
        if let Some(inst) = inst {
            ids.push(("instance".to_owned(), inst));
        }
        let mut promoted: Vec<(String, String)> = Vec::new();
        for kv in attrs
            .iter()
            .filter(|kv| !kv.key.is_empty() && translation.promotes(&kv.key))
        {
            let name = label_name(&kv.key);
            if !promoted.iter().any(|(n, _)| *n == name) {
                promoted.push((name, any_to_string(&kv.value)));
            }
        }
        let mut base = Base {
            promoted,
            ids,
            scope: Vec::new(),
        };
        let mut span: Option<(i64, i64)> = None;
        for sm in &rm.scope_metrics {
            base.scope.clear();
            if translation.promote_scope_metadata
                && let Some(scope) = sm.scope.as_ref().filter(|s| s.name != AGENT_SCOPE)
            {
                for (k, v) in [
                    ("otel_scope_name", &scope.name),
                    ("otel_scope_version", &scope.version),
                ] {
                    if !v.is_empty() {
                        base.scope.push((k.to_owned(), v.clone()));
                    }
                }
            }
            for m in &sm.metrics {
                if let Some((a, b)) = convert_metric(m, &base, &mut sink) {
                    span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
                }
            }
        }
        // target_info is the resource's, not a scope's.
        base.scope.clear();
        if let Some((earliest, newest)) = span {
            target_info(attrs, translation, &base, earliest, newest, &mut sink);
        }
    }
    let series = std::mem::take(&mut sink.series);
    let info = std::mem::take(&mut sink.info);
    let [histograms, delta] = std::mem::take(&mut sink.histograms);
    out.batch = series.into_iter().collect();
    out.histograms = histograms.into_iter().collect();
    out.delta_histograms = delta.into_iter().collect();
    out.target_info = info;
    out
}

/// `target_info` of one resource, as Prometheus 3 writes it: its
/// non-identifying attributes as labels beside `job`/`instance`; none
/// when it has no other attributes or neither `job` nor `instance`.
fn target_info(
    attrs: &[KeyValue],
    translation: &Translation,
    base: &Base,
    earliest: i64,
    newest: i64,
    sink: &mut Sink<'_>,
) {
    let other = attrs
        .iter()
        .filter(|kv| !kv.key.is_empty() && !IDENTIFYING.contains(&kv.key.as_str()))
        .count();
    if other == 0 || base.ids.iter().all(|(_, v)| v.is_empty()) {
        return;
    }
    let earliest = earliest.max(newest.saturating_sub(TARGET_INFO_SPAN_MS));
    let shown: Vec<KeyValue> = attrs
        .iter()
        .filter(|kv| {
            translation.keep_identifying_resource_attributes
                || !IDENTIFYING.contains(&kv.key.as_str())
        })
        .cloned()
        .collect();
    let mut pairs = Vec::with_capacity(shown.len() + 3);
    attrs_to_pairs(&shown, &mut pairs);
    pairs.extend(base.ids.iter().cloned());
    pairs.push((NAME.to_owned(), "target_info".to_owned()));
    let mut samples = Vec::new();
    let mut t = earliest;
    while t < newest {
        samples.push((t, 1.0));
        t = t.saturating_add(TARGET_INFO_EVERY_MS);
    }
    samples.push((newest, 1.0));
    // Two resources of one target in a request: one series.
    let labels = Labels::new(pairs);
    match sink.info.iter_mut().find(|(l, _)| *l == labels) {
        Some((_, s)) => {
            s.extend(samples);
            s.sort_by_key(|p| p.0);
            s.dedup_by_key(|p| p.0);
        }
        None => sink.info.push((labels, samples)),
    }
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

/// A series' labels: promoted resource attributes, overridden by the
/// point's own, overridden by `job`/`instance`, then the name and
/// `extra` (`le`, `quantile`). Later pairs win in [`Labels::new`].
fn labels_for(base: &Base, name: &str, attrs: &[KeyValue], extra: &[(&str, String)]) -> Labels {
    let mut pairs = Vec::with_capacity(base.promoted.len() + attrs.len() + 3 + extra.len());
    pairs.extend(base.promoted.iter().cloned());
    attrs_to_pairs(attrs, &mut pairs);
    pairs.extend(base.scope.iter().cloned());
    pairs.extend(base.ids.iter().cloned());
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
        keel_promql::format_value(bound)
    }
}

/// Convert one metric; returns the earliest and newest times seen.
fn convert_metric(m: &Metric, base: &Base, sink: &mut Sink<'_>) -> Option<(i64, i64)> {
    let mut span = None;
    let Some(data) = &m.data else {
        sink.out.reject(format!("metric {:?} has no data", m.name));
        return None;
    };
    let kind = match data {
        Data::Gauge(_) => "gauge",
        Data::Sum(s) if s.is_monotonic => "counter",
        Data::Sum(_) => "gauge",
        Data::Histogram(_) | Data::ExponentialHistogram(_) => "histogram",
        Data::Summary(_) => "summary",
    };
    let stated = metadata(m, kind);
    match data {
        Data::Gauge(g) => {
            let name = metric_name(&m.name, &m.unit, false, true);
            span = number_points(&m.name, &name, base, &g.data_points, false, sink);
        }
        Data::Sum(s) => {
            let delta = s.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, s.is_monotonic, !s.is_monotonic);
            span = number_points(&m.name, &name, base, &s.data_points, delta, sink);
        }
        Data::Histogram(h) if sink.nhcb || is_custom_buckets(m) => {
            let points = h.data_points.iter().map(|p| {
                let native = explicit_to_custom(p);
                (
                    p.time_unix_nano,
                    native,
                    &p.attributes[..],
                    &p.exemplars[..],
                )
            });
            let how = (h.aggregation_temporality, stated.1.kind == "gaugehistogram");
            native_points(m, base, how, points, sink, &mut span);
        }
        Data::Histogram(h) => {
            let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in &h.data_points {
                match time_ms(p.time_unix_nano) {
                    Some(t) => {
                        widen(&mut span, t);
                        histogram(base, &name, p, t, delta, sink);
                    }
                    None => sink
                        .out
                        .reject(format!("{}: data point without a timestamp", m.name)),
                }
            }
        }
        Data::ExponentialHistogram(h) if sink.exponential == ExponentialAs::Native => {
            let points = h.data_points.iter().map(|p| {
                let native = exponential_to_native(p);
                (
                    p.time_unix_nano,
                    native,
                    &p.attributes[..],
                    &p.exemplars[..],
                )
            });
            let how = (h.aggregation_temporality, stated.1.kind == "gaugehistogram");
            native_points(m, base, how, points, sink, &mut span);
        }
        Data::ExponentialHistogram(h) => {
            let delta = h.aggregation_temporality == AggregationTemporality::Delta as i32;
            let name = metric_name(&m.name, &m.unit, false, false);
            for p in &h.data_points {
                match (time_ms(p.time_unix_nano), exponential_to_classic(p)) {
                    (Some(t), Ok(classic)) => {
                        widen(&mut span, t);
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
                widen(&mut span, t);
                let stale = p.flags & NO_RECORDED_VALUE != 0;
                let val = |v: f64| if stale { f64::from_bits(STALE_NAN) } else { v };
                for q in &p.quantile_values {
                    let l = labels_for(
                        base,
                        &name,
                        &p.attributes,
                        &[("quantile", keel_promql::format_value(q.quantile))],
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
    // A gauge that states nothing else (the agent's points between its
    // once-a-minute metadata, an SDK gauge without description or unit)
    // says nothing worth recording: its type may not even be gauge.
    let bare = matches!(data, Data::Gauge(_))
        && m.description.is_empty()
        && m.unit.is_empty()
        && m.metadata.is_empty();
    if span.is_some() && !bare {
        let family = stated.0.unwrap_or_else(|| {
            let (counter, gauge) = (
                kind == "counter",
                matches!(data, Data::Gauge(_)) || matches!(data, Data::Sum(s) if !s.is_monotonic),
            );
            metric_name(&m.name, &m.unit, counter, gauge)
        });
        sink.out.metadata.push((family, stated.1));
    }
    span
}

/// A metric's family and metadata: OTLP's kind, description and unit,
/// unless the sender stated Prometheus' own in the metric's metadata
/// (`prometheus.type`, `prometheus.unit`, `prometheus.family`: the agent
/// carries a scrape's `# TYPE`, `# UNIT` and family name so; the help is
/// the description either way).
fn metadata(m: &Metric, kind: &str) -> (Option<String>, keel_metricstore::metadata::Meta) {
    let get = |k: &str| {
        m.metadata
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| any_to_string(&kv.value))
    };
    (
        get("prometheus.family"),
        keel_metricstore::metadata::Meta {
            kind: get("prometheus.type").unwrap_or_else(|| kind.to_owned()),
            help: m.description.clone(),
            unit: get("prometheus.unit").unwrap_or_else(|| unit_name(&m.unit)),
        },
    )
}

/// Store gauge or sum points as one series each; returns the earliest and
/// newest times.
fn number_points(
    otlp_name: &str,
    name: &str,
    base: &Base,
    points: &[NumberDataPoint],
    delta: bool,
    sink: &mut Sink<'_>,
) -> Option<(i64, i64)> {
    let mut span = None;
    for p in points {
        let Some(t) = time_ms(p.time_unix_nano) else {
            sink.out
                .reject(format!("{otlp_name}: data point without a timestamp"));
            continue;
        };
        widen(&mut span, t);
        let labels = labels_for(base, name, &p.attributes, &[]);
        for e in &p.exemplars {
            if let Some(e) = exemplar_of(e, t) {
                sink.out.exemplars.push((labels.clone(), e));
            }
        }
        sink.push(labels, t, number(p), delta);
    }
    span
}

/// An OTLP exemplar as Prometheus keeps it: `trace_id` and `span_id` in
/// lowercase hex (when set) and the filtered attributes as labels; at the
/// point's time when it has none of its own.
fn exemplar_of(e: &opentelemetry_proto::tonic::metrics::v1::Exemplar, t: i64) -> Option<Exemplar> {
    let value = match e.value? {
        exemplar::Value::AsDouble(d) => d,
        exemplar::Value::AsInt(i) => i as f64,
    };
    let mut pairs = Vec::with_capacity(e.filtered_attributes.len() + 2);
    attrs_to_pairs(&e.filtered_attributes, &mut pairs);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if !e.trace_id.is_empty() {
        pairs.push(("trace_id".into(), hex(&e.trace_id)));
    }
    if !e.span_id.is_empty() {
        pairs.push(("span_id".into(), hex(&e.span_id)));
    }
    if keel_metricstore::exemplars::too_long(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        return None;
    }
    Some(Exemplar {
        labels: Labels::new(pairs),
        value,
        t: time_ms(e.time_unix_nano).unwrap_or(t),
    })
}

/// Stretch `span` to cover `t`.
fn widen(span: &mut Option<(i64, i64)>, t: i64) {
    *span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
}

fn histogram(
    base: &Base,
    name: &str,
    p: &HistogramDataPoint,
    t: i64,
    delta: bool,
    sink: &mut Sink<'_>,
) {
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let val = |v: f64| if stale { f64::from_bits(STALE_NAN) } else { v };
    // Each exemplar on the first bucket written below whose upper bound
    // holds its value (+Inf last); a bucket's labels built once.
    let mut buckets: Vec<(f64, Labels)> = Vec::new();
    for e in &p.exemplars {
        let Some(e) = exemplar_of(e, t) else { continue };
        let bound = p
            .explicit_bounds
            .iter()
            .take(p.bucket_counts.len())
            .copied()
            .find(|b| e.value <= *b)
            .unwrap_or(f64::INFINITY);
        let l = match buckets.iter().find(|(b, _)| *b == bound) {
            Some((_, l)) => l.clone(),
            None => {
                let l = labels_for(
                    base,
                    &format!("{name}_bucket"),
                    &p.attributes,
                    &[("le", le(bound))],
                );
                buckets.push((bound, l.clone()));
                l
            }
        };
        sink.out.exemplars.push((l, e));
    }
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

/// Prometheus' zero threshold for an OTLP histogram that states none.
const DEFAULT_ZERO_THRESHOLD: f64 = 1e-128;

/// An exponential histogram point as a native histogram: OTLP bucket `i`
/// holds `(base^i, base^(i+1)]`, Prometheus' index `i + 1` the same
/// range; scales finer than schema 8 are merged down to it; coarser than
/// -4 cannot be said and are refused.
fn exponential_to_native(p: &ExponentialHistogramDataPoint) -> Result<Histogram, String> {
    if p.scale < MIN_SCHEMA {
        return Err(format!(
            "exponential histogram scale {} is below {MIN_SCHEMA}, the coarsest native histogram schema",
            p.scale
        ));
    }
    if p.scale > 20 {
        return Err(format!(
            "exponential histogram scale {} is above 20, the finest OpenTelemetry defines",
            p.scale
        ));
    }
    let schema = p.scale.min(MAX_SCHEMA);
    let side = |b: &Option<
        opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >|
     -> Result<Vec<(i32, f64)>, String> {
        let Some(b) = b else { return Ok(Vec::new()) };
        if b.bucket_counts.len() > MAX_BUCKETS {
            return Err(format!(
                "exponential histogram with {} buckets a side, more than {MAX_BUCKETS}",
                b.bucket_counts.len()
            ));
        }
        let mut out: Vec<(i32, f64)> = Vec::with_capacity(b.bucket_counts.len());
        for (k, c) in b.bucket_counts.iter().enumerate() {
            let i = i64::from(b.offset) + k as i64 + 1;
            let i = i32::try_from(i).map_err(|_| format!("bucket index {i} out of range"))?;
            let i = coarser_index(i, p.scale, schema);
            match out.last_mut() {
                Some((last, n)) if *last == i => *n += *c as f64,
                _ => out.push((i, *c as f64)),
            }
        }
        Ok(out)
    };
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let h = Histogram {
        schema,
        zero_threshold: if p.zero_threshold > 0.0 {
            p.zero_threshold
        } else {
            DEFAULT_ZERO_THRESHOLD
        },
        zero_count: p.zero_count as f64,
        count: p.count as f64,
        sum: if stale {
            f64::from_bits(STALE_NAN)
        } else {
            p.sum.unwrap_or(0.0)
        },
        positive: side(&p.positive)?,
        negative: side(&p.negative)?,
        reset: CounterReset::Unknown,
        custom_values: Default::default(),
    }
    .compact();
    h.validate()?;
    Ok(h)
}

/// A histogram metric's points as native histogram samples: `how` is its
/// aggregation temporality and whether the sender called it a gauge
/// histogram (the agent's `prometheus.type: gaugehistogram`, which OTLP
/// cannot say otherwise); a point without a time or that does not
/// convert is refused, named.
fn native_points<'p>(
    m: &Metric,
    base: &Base,
    (temporality, gauge): (i32, bool),
    points: impl Iterator<
        Item = (
            u64,
            Result<Histogram, String>,
            &'p [KeyValue],
            &'p [opentelemetry_proto::tonic::metrics::v1::Exemplar],
        ),
    >,
    sink: &mut Sink<'_>,
    span: &mut Option<(i64, i64)>,
) {
    let delta = temporality == AggregationTemporality::Delta as i32;
    let name = metric_name(&m.name, &m.unit, false, false);
    for (nanos, native, attrs, exemplars) in points {
        match (time_ms(nanos), native) {
            (Some(t), Ok(mut native)) => {
                widen(span, t);
                if gauge {
                    native.reset = CounterReset::Gauge;
                }
                sink.native(base, &name, attrs, exemplars, t, native, delta);
            }
            (None, _) => sink
                .out
                .reject(format!("{}: data point without a timestamp", m.name)),
            (_, Err(why)) => sink.out.reject(format!("{}: {why}", m.name)),
        }
    }
}

/// Does the sender ask for this explicit-bucket histogram to be stored
/// with custom buckets (the agent's `prometheus.histogram:
/// custom_buckets`, for a scraped classic histogram it converted)?
fn is_custom_buckets(m: &Metric) -> bool {
    let (key, value) = keel_core::names::OTLP_CUSTOM_BUCKETS;
    m.metadata
        .iter()
        .any(|kv| kv.key == key && any_to_string(&kv.value) == value)
}

/// An explicit-bucket point as a native histogram with custom buckets
/// (Prometheus' `explicitHistogramToCustomBucketsHistogram`): the bounds
/// as sent, bucket `i` the point's count `i`; a bound list that is not
/// strictly ascending, or counts that are not one more than the bounds,
/// are refused.
fn explicit_to_custom(p: &HistogramDataPoint) -> Result<Histogram, String> {
    if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
        return Err(format!(
            "histogram with {} bucket counts for {} bounds (there must be one more count than bounds)",
            p.bucket_counts.len(),
            p.explicit_bounds.len()
        ));
    }
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let counts: Vec<f64> = p.bucket_counts.iter().map(|c| *c as f64).collect();
    let sum = if stale {
        f64::from_bits(STALE_NAN)
    } else {
        p.sum.unwrap_or(0.0)
    };
    // The point's own count, which may differ from its buckets' total.
    let h = Histogram {
        count: p.count as f64,
        ..Histogram::with_custom_buckets(&p.explicit_bounds, &counts, sum)
    };
    h.validate()?;
    Ok(h)
}

/// Delta histogram points as cumulative ones: each series' points added
/// in time order onto `last` (the stored series' newest), or onto
/// nothing for a new series.
pub fn accumulate_deltas(
    deltas: Vec<(Labels, Vec<(i64, Histogram)>)>,
    last: &dyn Fn(&Labels) -> Option<Histogram>,
) -> Vec<(Labels, Vec<(i64, Histogram)>)> {
    deltas
        .into_iter()
        .map(|(labels, mut points)| {
            points.sort_by_key(|(t, _)| *t);
            let mut total = last(&labels).filter(|h| !h.is_stale());
            let points = points
                .into_iter()
                .map(|(t, d)| {
                    // A delta of another bucket layout (exponential after
                    // custom, or other custom bounds) starts the series
                    // anew: adding would fold the total onto fewer bounds
                    // for good.
                    let next = match total
                        .as_ref()
                        .filter(|base| !base.bounds_differ(&d))
                        .map(|base| base.add(&d))
                    {
                        Some(Ok(mut h)) => {
                            h.reset = CounterReset::NotReset;
                            h
                        }
                        _ => d,
                    };
                    total = Some(next.clone());
                    (t, next)
                })
                .collect();
            (labels, points)
        })
        .collect()
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
        exemplars: p.exemplars.clone(),
        flags: p.flags,
        min: p.min,
        max: p.max,
    })
}

#[cfg(test)]
mod tests;
