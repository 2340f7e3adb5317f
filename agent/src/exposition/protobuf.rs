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
//! there, keeping what came before.

use keel_series::float_text::format_openmetrics;
use keel_series::histogram::{CounterReset, Histogram, MIN_SCHEMA, from_spans, undelta};
use prost::Message;

use super::proto::{self, kind};
use super::{Exemplar, Family, NativeHistograms, Parsed, Sample};

/// Read a protobuf exposition body.
pub fn parse(body: &[u8], native: &NativeHistograms) -> Parsed {
    let mut out = Parsed::default();
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
            Ok(f) => family(f, at, native, &mut out),
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

/// The samples of one family (at byte offset `at`).
fn family(f: proto::MetricFamily, at: usize, native: &NativeHistograms, out: &mut Parsed) {
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
            return;
        }
    };
    if f.name.is_empty() {
        invalid(out, at, "a family without a name".into());
        return;
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
        match f.r#type {
            kind::COUNTER => {
                let c = m.counter.unwrap_or_default();
                let e = c.exemplar.map(exemplar);
                out.samples.push(series.float(&name, None, c.value, e));
            }
            kind::GAUGE => {
                let v = m.gauge.unwrap_or_default().value;
                out.samples.push(series.float(&name, None, v, None));
            }
            kind::UNTYPED => {
                let v = m.untyped.unwrap_or_default().value;
                out.samples.push(series.float(&name, None, v, None));
            }
            kind::SUMMARY => {
                let s = m.summary.unwrap_or_default();
                for q in &s.quantile {
                    let label = ("quantile", format_openmetrics(q.quantile));
                    out.samples
                        .push(series.float(&name, Some(label), q.value, None));
                }
                let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
                out.samples
                    .push(series.float(&sum, None, s.sample_sum, None));
                out.samples
                    .push(series.float(&count, None, s.sample_count as f64, None));
            }
            _ => {
                let h = m.histogram.unwrap_or_default();
                let is_native = native.enabled && carries_native(&h);
                if is_native {
                    let gauge = f.r#type == kind::GAUGE_HISTOGRAM;
                    match native_histogram(&h, gauge, native) {
                        Ok(n) => out.samples.push(series.histogram(&name, n)),
                        Err(why) => invalid(out, at, format!("histogram {name:?}: {why}")),
                    }
                }
                if !is_native || (native.always_classic && !h.bucket.is_empty()) {
                    classic(&name, &series, h, &mut out.samples);
                }
            }
        }
    }
}

/// One series' labels and time, from which its samples are made.
struct Series {
    labels: Vec<(String, String)>,
    timestamp_ms: Option<i64>,
}

impl Series {
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
/// bound (with `+Inf` when the target left it out).
fn classic(name: &str, series: &Series, h: proto::Histogram, out: &mut Vec<Sample>) {
    let count = if h.sample_count_float > 0.0 {
        h.sample_count_float
    } else {
        h.sample_count as f64
    };
    out.push(series.float(&format!("{name}_count"), None, count, None));
    out.push(series.float(&format!("{name}_sum"), None, h.sample_sum, None));
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
        out.push(series.float(&bucket, Some(le), c, b.exemplar.map(exemplar)));
    }
    if !has_inf {
        out.push(series.float(&bucket, Some(("le", "+Inf".into())), count, None));
    }
}

/// An exemplar as the text formats give it.
fn exemplar(e: proto::Exemplar) -> Exemplar {
    Exemplar {
        labels: e.label.into_iter().map(|l| (l.name, l.value)).collect(),
        value: e.value,
        timestamp_ms: e
            .timestamp
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000),
    }
}

/// The native histogram a message carries, checked, and brought within
/// the job's resolution and bucket limits by merging buckets.
fn native_histogram(
    h: &proto::Histogram,
    gauge: bool,
    limits: &NativeHistograms,
) -> Result<Histogram, String> {
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
    }
    .compact();
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
