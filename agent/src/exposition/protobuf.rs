//! Prometheus' protobuf exposition format (a body of length-delimited
//! `MetricFamily` messages), read as Prometheus' protobuf parser reads
//! it: counters, gauges and untyped metrics as one series each; a
//! summary as its `quantile` series, `_sum` and `_count`; a histogram as
//! one native histogram series when it carries native buckets and native
//! histograms are on, else (and also, with `always_classic`) as its
//! classic `_bucket` series — an `+Inf` bucket added when the target left
//! it out — with `_sum` and `_count`. `le` and `quantile` values are
//! written as Prometheus writes them from this format (`1.0`, `0.25`).
//!
//! A family that cannot be decoded is skipped, named by its byte offset,
//! and the families around it are kept; a body whose framing breaks stops
//! there, keeping what came before. A metric or label name that is not
//! one, or a label given twice, refuses that series.
//!
//! A body cannot grow without bound as it is read: a metric's labels are
//! written once but copied into each of its buckets' and quantiles'
//! series, and a native histogram's buckets are laid out densely for
//! OTLP, so a small body could otherwise become gigabytes. What a body
//! yields is charged against [`EXPANSION`] times its size (and at least
//! [`MIN_BUDGET`]); past that, the rest of the body is refused, named.

use keel_core::names::{is_label_name, is_metric_name};
use keel_series::float_text::format_openmetrics;
use keel_series::histogram::{
    CounterReset, Histogram, MAX_SCHEMA, MIN_SCHEMA, from_spans, undelta,
};
use prost::Message;

use super::proto::{self, kind};
use super::{Exemplar, Family, NativeHistograms, Parsed, Sample};

/// What a body may yield, in bytes of labels and dense buckets, for each
/// byte of it.
pub const EXPANSION: usize = 64;
/// What any body may yield (a small body with many buckets is fine).
pub const MIN_BUDGET: usize = 64 << 20;
/// The finest schema read (OpenTelemetry's finest); finer than
/// [`MAX_SCHEMA`] is merged down to it, as Prometheus 3 does.
const FINEST_READ: i32 = 20;

/// Bytes still to be yielded.
struct Budget(usize);

impl Budget {
    /// Spend `n`; false (and nothing spent) when that is past the budget.
    fn spend(&mut self, n: usize) -> bool {
        match self.0.checked_sub(n) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

/// Read a protobuf exposition body.
pub fn parse(body: &[u8], native: &NativeHistograms) -> Parsed {
    let mut out = Parsed::default();
    let mut budget = Budget(body.len().saturating_mul(EXPANSION).max(MIN_BUDGET));
    let mut at = 0usize;
    while at < body.len() {
        let mut rest = &body[at..];
        let before = rest.len();
        let len = match prost::encoding::decode_varint(&mut rest) {
            Ok(len) => len,
            Err(e) => {
                invalid(&mut out, at, format!("unreadable family length: {e}"));
                break;
            }
        };
        let head = before - rest.len();
        let Some(msg) = usize::try_from(len)
            .ok()
            .filter(|l| *l <= rest.len())
            .map(|l| &rest[..l])
        else {
            invalid(
                &mut out,
                at,
                format!(
                    "a family of {len} bytes runs past the end of the body ({} bytes)",
                    body.len()
                ),
            );
            break;
        };
        match proto::MetricFamily::decode(msg) {
            Ok(f) => {
                if !family(f, at, native, &mut budget, &mut out) {
                    invalid(
                        &mut out,
                        at,
                        format!(
                            "the body yields more than {EXPANSION} times its {} bytes: the rest is refused",
                            body.len()
                        ),
                    );
                    break;
                }
            }
            Err(e) => invalid(&mut out, at, format!("unreadable family: {e}")),
        }
        at += head + msg.len();
    }
    out
}

/// Count a problem at byte offset `at`, keeping the first few.
fn invalid(out: &mut Parsed, at: usize, why: String) {
    out.invalid_lines += 1;
    if out.first_invalid.len() < super::KEEP_INVALID {
        out.first_invalid.push((at, why));
    }
}

/// The samples of one family (at byte offset `at`); false when the
/// budget ran out.
fn family(
    f: proto::MetricFamily,
    at: usize,
    native: &NativeHistograms,
    budget: &mut Budget,
    out: &mut Parsed,
) -> bool {
    let kind_name = match f.r#type {
        kind::COUNTER => "counter",
        kind::GAUGE => "gauge",
        kind::SUMMARY => "summary",
        kind::UNTYPED => "untyped",
        kind::HISTOGRAM => "histogram",
        kind::GAUGE_HISTOGRAM => "gaugehistogram",
        t => {
            invalid(
                out,
                at,
                format!("family {:?} has unknown metric type {t}", f.name),
            );
            return true;
        }
    };
    if !is_metric_name(&f.name) {
        invalid(
            out,
            at,
            format!("family name {:?} is not a metric name", f.name),
        );
        return true;
    }
    out.families.insert(
        f.name.clone(),
        Family {
            kind: kind_name.into(),
            help: f.help,
            unit: f.unit,
        },
    );
    let name = f.name;
    for m in f.metric {
        let series = Series {
            labels: m.label.into_iter().map(|l| (l.name, l.value)).collect(),
            timestamp_ms: (m.timestamp_ms != 0).then_some(m.timestamp_ms),
        };
        let suffixed = matches!(
            f.r#type,
            kind::SUMMARY | kind::HISTOGRAM | kind::GAUGE_HISTOGRAM
        );
        if let Err(why) = series.check(suffixed.then_some(if f.r#type == kind::SUMMARY {
            "quantile"
        } else {
            "le"
        })) {
            invalid(out, at, format!("a series of {name:?}: {why}"));
            continue;
        }
        let mut push = |s: Sample, out: &mut Parsed| {
            let cost = 64
                + s.labels
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            let dense = s.histogram.as_deref().map_or(0, |h| {
                8 * (crate::otlp::dense_len(&h.positive) + crate::otlp::dense_len(&h.negative))
            });
            let ok = budget.spend(cost + dense);
            if ok {
                out.samples.push(s);
            }
            ok
        };
        let pushed = match f.r#type {
            kind::COUNTER => {
                let c = m.counter.unwrap_or_default();
                let e = c.exemplar.map(exemplar);
                push(series.float(&name, None, c.value, e), out)
            }
            kind::GAUGE => {
                let v = m.gauge.unwrap_or_default().value;
                push(series.float(&name, None, v, None), out)
            }
            kind::UNTYPED => {
                let v = m.untyped.unwrap_or_default().value;
                push(series.float(&name, None, v, None), out)
            }
            kind::SUMMARY => {
                let s = m.summary.unwrap_or_default();
                s.quantile.iter().all(|q| {
                    let label = ("quantile", format_openmetrics(q.quantile));
                    push(series.float(&name, Some(label), q.value, None), out)
                }) && push(
                    series.float(&format!("{name}_sum"), None, s.sample_sum, None),
                    out,
                ) && push(
                    series.float(&format!("{name}_count"), None, s.sample_count as f64, None),
                    out,
                )
            }
            _ => {
                let h = m.histogram.unwrap_or_default();
                let is_native = native.enabled && carries_native(&h);
                let mut ok = true;
                if is_native {
                    let gauge = f.r#type == kind::GAUGE_HISTOGRAM;
                    match native_histogram(&h, gauge, native) {
                        Ok(n) => {
                            let mut s = series.histogram(&name, n);
                            s.exemplar = native_exemplar(&h);
                            ok = push(s, out);
                        }
                        Err(why) => invalid(out, at, format!("histogram {name:?}: {why}")),
                    }
                }
                if ok && (!is_native || (native.always_classic && !h.bucket.is_empty())) {
                    ok = classic(&name, &series, h, &mut |s| push(s, out));
                }
                ok
            }
        };
        if !pushed {
            return false;
        }
    }
    true
}

/// One series' labels and time, from which its samples are made.
struct Series {
    labels: Vec<(String, String)>,
    timestamp_ms: Option<i64>,
}

impl Series {
    /// Why its labels cannot be a series' (with `added`, the label the
    /// format adds to some of its series, also counted): a name that is
    /// not a label name, `__name__`, or a name given twice.
    fn check(&self, added: Option<&str>) -> Result<(), String> {
        for (i, (k, _)) in self.labels.iter().enumerate() {
            if !is_label_name(k) || k == "__name__" {
                return Err(format!("{k:?} is not a label name it may carry"));
            }
            if self.labels[..i].iter().any(|(j, _)| j == k) || added == Some(k.as_str()) {
                return Err(format!("label {k:?} is given twice"));
            }
        }
        Ok(())
    }

    /// Labels: `__name__` first, then the series', then `extra`.
    fn labels(&self, name: &str, extra: Option<(&str, String)>) -> Vec<(String, String)> {
        let mut l = Vec::with_capacity(self.labels.len() + 2);
        l.push(("__name__".to_owned(), name.to_owned()));
        l.extend(self.labels.iter().cloned());
        if let Some((k, v)) = extra {
            l.push((k.to_owned(), v));
        }
        l
    }

    fn float(
        &self,
        name: &str,
        extra: Option<(&str, String)>,
        value: f64,
        exemplar: Option<Exemplar>,
    ) -> Sample {
        Sample {
            labels: self.labels(name, extra),
            value,
            timestamp_ms: self.timestamp_ms,
            exemplar,
            histogram: None,
        }
    }

    fn histogram(&self, name: &str, h: Histogram) -> Sample {
        Sample {
            labels: self.labels(name, None),
            value: 0.0,
            timestamp_ms: self.timestamp_ms,
            exemplar: None,
            histogram: Some(Box::new(h)),
        }
    }
}

/// Whether a histogram message carries a native histogram: any span (a
/// no-op one marks one with no observations yet) or a zero bucket.
fn carries_native(h: &proto::Histogram) -> bool {
    !h.positive_span.is_empty()
        || !h.negative_span.is_empty()
        || h.zero_threshold > 0.0
        || h.zero_count > 0
        || h.zero_count_float > 0.0
}

/// A histogram's classic series: `_count`, `_sum`, and a `_bucket` a
/// bound (with `+Inf` when the target left it out), each given to `push`
/// until it refuses one; false then.
fn classic(
    name: &str,
    series: &Series,
    h: proto::Histogram,
    push: &mut dyn FnMut(Sample) -> bool,
) -> bool {
    let count = if h.sample_count_float > 0.0 {
        h.sample_count_float
    } else {
        h.sample_count as f64
    };
    if !push(series.float(&format!("{name}_count"), None, count, None))
        || !push(series.float(&format!("{name}_sum"), None, h.sample_sum, None))
    {
        return false;
    }
    let bucket = format!("{name}_bucket");
    let mut has_inf = false;
    for b in h.bucket {
        has_inf |= b.upper_bound == f64::INFINITY;
        let c = if b.cumulative_count_float > 0.0 {
            b.cumulative_count_float
        } else {
            b.cumulative_count as f64
        };
        let le = ("le", format_openmetrics(b.upper_bound));
        if !push(series.float(&bucket, Some(le), c, b.exemplar.map(exemplar))) {
            return false;
        }
    }
    has_inf || push(series.float(&bucket, Some(("le", "+Inf".into())), count, None))
}

/// The exemplar a native histogram sample carries: the newest of its
/// own, or of its classic buckets' when it has none of its own, as
/// Prometheus picks them (only exemplars with a timestamp count). Keel
/// keeps one a sample.
fn native_exemplar(h: &proto::Histogram) -> Option<Exemplar> {
    let own = h.exemplars.iter();
    let buckets = h.bucket.iter().filter_map(|b| b.exemplar.as_ref());
    let pick = |it: &mut dyn Iterator<Item = &proto::Exemplar>| {
        it.filter(|e| e.timestamp.is_some())
            .max_by_key(|e| e.timestamp.as_ref().map(|t| (t.seconds, t.nanos)))
            .cloned()
    };
    if h.exemplars.is_empty() {
        pick(&mut buckets.into_iter())
    } else {
        pick(&mut own.into_iter())
    }
    .map(exemplar)
}

/// An exemplar as the text formats give it.
fn exemplar(e: proto::Exemplar) -> Exemplar {
    Exemplar {
        labels: e.label.into_iter().map(|l| (l.name, l.value)).collect(),
        value: e.value,
        timestamp_ms: e.timestamp.map(|t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000)
        }),
    }
}

/// The native histogram a message carries, checked, and brought within
/// the job's resolution and bucket limits by merging buckets.
fn native_histogram(
    h: &proto::Histogram,
    gauge: bool,
    limits: &NativeHistograms,
) -> Result<Histogram, String> {
    if h.schema < keel_series::histogram::MIN_SCHEMA {
        // Custom buckets (-53) included: the format carries no bounds.
        return Err(format!(
            "schema {} is below -4, the coarsest exponential schema",
            h.schema
        ));
    }
    let float = h.sample_count_float > 0.0 || h.zero_count_float > 0.0;
    let side = |spans: &[proto::BucketSpan], deltas: &[i64], counts: &[f64], what: &str| {
        let spans: Vec<(i32, u32)> = spans.iter().map(|s| (s.offset, s.length)).collect();
        let counts = if float {
            counts.to_vec()
        } else {
            undelta(deltas)
        };
        from_spans(&spans, &counts).ok_or_else(|| {
            format!(
                "its {what} spans ({} buckets) do not match its {} counts",
                spans.iter().map(|s| u64::from(s.1)).sum::<u64>(),
                counts.len()
            )
        })
    };
    let mut out = Histogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: if float {
            h.zero_count_float
        } else {
            h.zero_count as f64
        },
        count: if float {
            h.sample_count_float
        } else {
            h.sample_count as f64
        },
        sum: h.sample_sum,
        positive: side(
            &h.positive_span,
            &h.positive_delta,
            &h.positive_count,
            "positive",
        )?,
        negative: side(
            &h.negative_span,
            &h.negative_delta,
            &h.negative_count,
            "negative",
        )?,
        reset: if gauge {
            CounterReset::Gauge
        } else {
            CounterReset::Unknown
        },
        custom_values: Default::default(),
    }
    .compact();
    // Finer than Keel stores (as OpenTelemetry allows): merged down.
    if (MAX_SCHEMA + 1..=FINEST_READ).contains(&out.schema) {
        out = out.to_schema(MAX_SCHEMA);
    }
    out.validate()?;
    if !float && out.count < out.bucket_total() {
        return Err(format!(
            "its count {} is below its buckets' total {}",
            out.count,
            out.bucket_total()
        ));
    }
    // The finest schema whose growth factor reaches the job's minimum.
    if limits.min_bucket_factor > 1.0 {
        let mut schema = out.schema;
        while schema > MIN_SCHEMA && 2f64.powf(2f64.powi(-schema)) < limits.min_bucket_factor {
            schema -= 1;
        }
        out = out.to_schema(schema);
    }
    if limits.bucket_limit > 0 {
        let limit = limits.bucket_limit as usize;
        while out.positive.len() + out.negative.len() > limit {
            if out.schema == MIN_SCHEMA {
                return Err(format!(
                    "{} buckets even at schema {MIN_SCHEMA}, above the job's native_histogram_bucket_limit {limit}",
                    out.positive.len() + out.negative.len()
                ));
            }
            out = out.to_schema(out.schema - 1);
        }
    }
    // The agent ships it over OTLP: what OTLP cannot carry is refused here,
    // where the scrape can count and name it.
    crate::otlp::fit_exponential(out)
}

#[cfg(test)]
mod tests;
