//! Native histograms as remote write 1.0 writes them (`prompb`'s
//! `Histogram` in a `TimeSeries`' field 4), for forwarding: spans and
//! delta-encoded counts when every count is whole (an integer
//! histogram, as scraped ones are), absolute float counts otherwise; the
//! reset hint and the sample's time with each. A staleness marker keeps
//! its stale-NaN sum, as Prometheus sends one.

use keel_series::histogram::Histogram;

/// `prompb.WriteRequest` holding histogram series only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prompb.TimeSeries` with histogram samples (no float samples).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<crate::ingest::remote_write::Label>,
    /// Its native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<WireHistogram>,
}

/// `prompb.Histogram`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireHistogram {
    /// Observations.
    #[prost(oneof = "Count", tags = "1, 2")]
    pub count: Option<Count>,
    /// Their sum.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// The schema.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// The zero bucket's half-width.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    #[prost(oneof = "ZeroCount", tags = "6, 7")]
    pub zero_count: Option<ZeroCount>,
    /// Negative spans.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<Span>,
    /// Negative counts, each a delta to the one before (integer).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative counts (float).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Positive spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<Span>,
    /// Positive counts, each a delta to the one before (integer).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive counts (float).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// Counter-reset hint.
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Custom buckets' bounds (schema -53 only).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// The `count` oneof.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Count {
    /// Integer histograms.
    #[prost(uint64, tag = "1")]
    Int(u64),
    /// Float histograms.
    #[prost(double, tag = "2")]
    Float(f64),
}

/// The `zero_count` oneof.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ZeroCount {
    /// Integer histograms.
    #[prost(uint64, tag = "6")]
    Int(u64),
    /// Float histograms.
    #[prost(double, tag = "7")]
    Float(f64),
}

/// `prompb.BucketSpan`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// Gap after the previous span (the first's: its start index).
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in it.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// A side's buckets as spans (offset: the gap after the previous span,
/// the first's its start index; length) and their counts in order, as
/// remote write and the protobuf exposition format lay them out.
pub(crate) fn spans(buckets: &[(i32, f64)]) -> (Vec<(i32, u32)>, Vec<f64>) {
    let mut out: Vec<(i32, u32)> = Vec::new();
    let mut next: Option<i32> = None;
    for (i, _) in buckets {
        match next {
            Some(n) if *i == n => {
                if let Some(s) = out.last_mut() {
                    s.1 += 1;
                }
            }
            Some(n) => out.push((i.saturating_sub(n), 1)),
            None => out.push((*i, 1)),
        }
        next = Some(i.saturating_add(1));
    }
    (out, buckets.iter().map(|(_, c)| *c).collect())
}

/// Whether every count is whole (an integer histogram).
pub(crate) fn is_integer(h: &Histogram) -> bool {
    let whole = keel_series::histogram::is_whole_count;
    [h.count, h.zero_count]
        .into_iter()
        .chain(h.positive.iter().chain(&h.negative).map(|(_, c)| *c))
        .all(whole)
}

/// Each count less the one before (the first less zero).
pub(crate) fn deltas(counts: &[f64]) -> Vec<i64> {
    let mut prev = 0i64;
    counts
        .iter()
        .map(|c| {
            let c = *c as i64;
            let d = c.wrapping_sub(prev);
            prev = c;
            d
        })
        .collect()
}

/// One histogram sample at `t` as remote write carries it.
pub fn wire(t: i64, h: &Histogram) -> WireHistogram {
    let integer = is_integer(h);
    let span = |(offset, length): (i32, u32)| Span { offset, length };
    let (pos_spans, pos) = spans(&h.positive);
    let (neg_spans, neg) = spans(&h.negative);
    let (pos_spans, neg_spans): (Vec<Span>, Vec<Span>) = (
        pos_spans.into_iter().map(span).collect(),
        neg_spans.into_iter().map(span).collect(),
    );
    let mut w = WireHistogram {
        count: Some(if integer {
            Count::Int(h.count as u64)
        } else {
            Count::Float(h.count)
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: Some(if integer {
            ZeroCount::Int(h.zero_count as u64)
        } else {
            ZeroCount::Float(h.zero_count)
        }),
        negative_spans: neg_spans,
        positive_spans: pos_spans,
        reset_hint: i32::from(h.reset.code()),
        timestamp: t,
        custom_values: h.custom_values.to_vec(),
        ..WireHistogram::default()
    };
    if integer {
        w.positive_deltas = deltas(&pos);
        w.negative_deltas = deltas(&neg);
    } else {
        w.positive_counts = pos;
        w.negative_counts = neg;
    }
    w
}

/// A label set as remote write's `Label`s.
pub(crate) fn wire_labels(
    labels: &keel_series::labels::Labels,
) -> Vec<crate::ingest::remote_write::Label> {
    labels
        .pairs()
        .map(|(name, value)| crate::ingest::remote_write::Label {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .collect()
}

/// A remote write request of `stored` histogram series.
pub fn request(stored: &[keel_series::SeriesHistograms]) -> WriteRequest {
    WriteRequest {
        timeseries: stored
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: wire_labels(labels),
                histograms: samples.iter().map(|(t, h)| wire(*t, h)).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_series::histogram::CounterReset;
    use keel_series::labels::Labels;
    use prost::Message;

    #[test]
    fn what_is_forwarded_decodes_back_to_the_same_histograms() {
        let int = Histogram {
            schema: 1,
            zero_threshold: 1e-128,
            zero_count: 1.0,
            count: 9.0,
            sum: 4.5,
            positive: vec![(-3, 2.0), (-2, 1.0), (2, 4.0)],
            negative: vec![(0, 1.0)],
            reset: CounterReset::NotReset,
            custom_values: Default::default(),
        };
        let float = Histogram {
            count: 2.5,
            zero_count: 0.5,
            positive: vec![(7, 2.0)],
            negative: Vec::new(),
            reset: CounterReset::Gauge,
            ..int.clone()
        };
        // Custom buckets travel with their bounds (field 16).
        let custom = Histogram {
            schema: keel_series::histogram::CUSTOM_SCHEMA,
            zero_threshold: 0.0,
            zero_count: 0.0,
            count: 6.0,
            sum: 1.5,
            positive: vec![(0, 2.0), (2, 4.0)],
            negative: Vec::new(),
            reset: CounterReset::Unknown,
            custom_values: std::sync::Arc::from([0.25, 1.0]),
        };
        let labels = Labels::new(vec![("__name__", "lat"), ("job", "api")]);
        let rpc = Labels::new(vec![("__name__", "rpc"), ("job", "api")]);
        let stored = vec![
            (labels, vec![(1_000, int.clone()), (2_000, float.clone())]),
            (rpc, vec![(1_000, custom)]),
        ];
        let req = request(&stored);
        assert_eq!(
            req.timeseries[1].histograms[0].custom_values,
            vec![0.25, 1.0]
        );
        let w = &req.timeseries[0].histograms[0];
        assert_eq!(
            w.positive_spans,
            vec![
                Span {
                    offset: -3,
                    length: 2
                },
                Span {
                    offset: 3,
                    length: 1
                }
            ]
        );
        assert_eq!(w.positive_deltas, vec![2, -1, 3]);
        assert_eq!(req.timeseries[0].histograms[1].positive_counts, vec![2.0]);
        // Through the collector's own remote write decoder.
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy");
        let decoded = crate::ingest::remote_write::decode(&body, 1 << 20).expect("decodes");
        let (_, _, histograms) =
            decoded.into_parts(|keys| keys.map(Labels::from_encoded).collect());
        assert_eq!(histograms, stored);
    }
}
