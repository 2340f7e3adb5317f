//! `/federate` in Prometheus' protobuf format, for a scraper that asks
//! for it (a Prometheus with native histograms on does): the same newest
//! samples as the text answer, floats as `UNTYPED` families as
//! Prometheus federates them, and native histograms — which the text
//! format cannot carry — as `HISTOGRAM` (or `GAUGE_HISTOGRAM`) families,
//! integer counts as deltas, fractional ones as float counts, an empty
//! one with the no-op span that marks it native. A histogram with custom
//! buckets, which the format cannot say natively, is written as the
//! classic histogram it holds (cumulative buckets at its bounds), which
//! a scraper converting classic histograms reads back as it was.

use std::collections::BTreeMap;

use keel_agent::exposition::proto::{
    BucketSpan, Histogram as Proto, LabelPair, Metric, MetricFamily, Value, kind,
};
use keel_series::histogram::{CounterReset, Histogram};
use keel_series::labels::Labels;
use prost::Message;

use crate::forward::histograms::{deltas, is_integer, spans};

/// Whether Accept headers (each a list of media ranges) prefer the
/// delimited protobuf format to text: its best `q` is above zero and at
/// least any text range's (`text/plain`, OpenMetrics, `text/*`, `*/*`).
pub fn wanted<'a>(accept: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut proto, mut text) = (0.0f64, 0.0f64);
    for range in accept.into_iter().flat_map(|a| a.split(',')) {
        let mut parts = range.split(';').map(|p| p.trim().to_ascii_lowercase());
        let media = parts.next().unwrap_or_default();
        let (mut q, mut family, mut delimited) = (1.0f64, false, true);
        for p in parts {
            match p.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("q", v)) => q = v.parse().unwrap_or(0.0),
                Some(("proto", v)) => family = v == "io.prometheus.client.metricfamily",
                Some(("encoding", v)) => delimited = v == "delimited",
                _ => {}
            }
        }
        if !q.is_finite() {
            q = 0.0;
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if family && delimited => proto = proto.max(q),
            "text/plain" | "application/openmetrics-text" | "text/*" | "*/*" => {
                text = text.max(q);
            }
            _ => {}
        }
    }
    proto > 0.0 && proto >= text
}

/// A sample to federate: a float or a native histogram, at its time.
pub enum Newest {
    /// A float.
    Float(i64, f64),
    /// A native histogram.
    Histogram(i64, Box<Histogram>),
}

/// The delimited `MetricFamily` stream of `series`, one family a metric
/// name and kind, with `external` labels added where a series lacks them.
pub fn federation_body(
    series: Vec<(Labels, Newest)>,
    external: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut families: BTreeMap<(String, i32), Vec<Metric>> = BTreeMap::new();
    for (labels, newest) in series {
        let label = super::federated_labels(&labels, external)
            .iter()
            .map(|(k, v)| LabelPair {
                name: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect();
        let (kind, metric) = match newest {
            Newest::Float(t, v) => (
                kind::UNTYPED,
                Metric {
                    label,
                    untyped: Some(Value { value: v }),
                    timestamp_ms: t,
                    ..Metric::default()
                },
            ),
            // A float histogram whose count and zero count are both 0 reads
            // back as an integer one (Prometheus tells them apart by
            // those): it cannot be written, so it is left out.
            Newest::Histogram(_, h) if !is_integer(&h) && h.count <= 0.0 && h.zero_count <= 0.0 => {
                continue;
            }
            Newest::Histogram(t, h) => (
                if h.reset == CounterReset::Gauge {
                    kind::GAUGE_HISTOGRAM
                } else {
                    kind::HISTOGRAM
                },
                Metric {
                    label,
                    histogram: Some(proto(&h)),
                    timestamp_ms: t,
                    ..Metric::default()
                },
            ),
        };
        families
            .entry((labels.get("__name__").to_owned(), kind))
            .or_default()
            .push(metric);
    }
    let mut out = Vec::new();
    for ((name, kind), metric) in families {
        let f = MetricFamily {
            name,
            help: String::new(),
            r#type: kind,
            metric,
            unit: String::new(),
        };
        // Writing to a Vec cannot fail.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

/// A native histogram as the exposition format's `Histogram`.
fn proto(h: &Histogram) -> Proto {
    if h.is_custom() {
        return classic(h);
    }
    let integer = is_integer(h);
    let side = |b: &[(i32, f64)]| {
        let (s, counts) = spans(b);
        let s: Vec<BucketSpan> = s
            .into_iter()
            .map(|(offset, length)| BucketSpan { offset, length })
            .collect();
        (s, counts)
    };
    let (mut positive_span, pos) = side(&h.positive);
    let (negative_span, neg) = side(&h.negative);
    if positive_span.is_empty() && negative_span.is_empty() {
        // The no-op span: native, not a classic histogram without buckets.
        positive_span.push(BucketSpan {
            offset: 0,
            length: 0,
        });
    }
    let mut p = Proto {
        sample_sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        positive_span,
        negative_span,
        ..Proto::default()
    };
    if integer {
        p.sample_count = h.count as u64;
        p.zero_count = h.zero_count as u64;
        p.positive_delta = deltas(&pos);
        p.negative_delta = deltas(&neg);
    } else {
        p.sample_count_float = h.count;
        p.zero_count_float = h.zero_count;
        p.positive_count = pos;
        p.negative_count = neg;
    }
    p
}

/// A custom-bucket histogram as classic buckets: one a bound, each
/// counting what lies at or below it, and +Inf.
fn classic(h: &Histogram) -> Proto {
    let integer = is_integer(h);
    let bucket = h
        .cumulative()
        .into_iter()
        .map(|(bound, below)| keel_agent::exposition::proto::Bucket {
            cumulative_count: if integer { below as u64 } else { 0 },
            cumulative_count_float: if integer { 0.0 } else { below },
            upper_bound: bound,
            exemplar: None,
        })
        .collect();
    Proto {
        sample_count: if integer { h.count as u64 } else { 0 },
        sample_count_float: if integer { 0.0 } else { h.count },
        sample_sum: h.sum,
        bucket,
        ..Proto::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_agent::exposition::{NativeHistograms, protobuf};

    #[test]
    fn the_agents_own_reader_takes_back_what_is_federated() {
        let h = Histogram {
            schema: 2,
            zero_threshold: 0.001,
            zero_count: 1.0,
            count: 8.0,
            sum: 3.5,
            positive: vec![(-4, 2.0), (-3, 1.0), (1, 3.0)],
            negative: vec![(0, 1.0)],
            reset: CounterReset::Unknown,
            custom_values: Default::default(),
        };
        let float = Histogram {
            count: 1.5,
            zero_count: 0.0,
            positive: vec![(2, 1.5)],
            negative: Vec::new(),
            reset: CounterReset::Gauge,
            ..h.clone()
        };
        let body = federation_body(
            vec![
                (
                    Labels::new(vec![("__name__", "lat"), ("job", "api")]),
                    Newest::Histogram(1_000, Box::new(h.clone())),
                ),
                (
                    Labels::new(vec![("__name__", "empty"), ("job", "api")]),
                    Newest::Histogram(1_000, Box::default()),
                ),
                (
                    Labels::new(vec![("__name__", "queue"), ("job", "api")]),
                    Newest::Histogram(1_000, Box::new(float)),
                ),
                (
                    Labels::new(vec![("__name__", "up"), ("job", "api")]),
                    Newest::Float(2_000, 1.0),
                ),
            ],
            &BTreeMap::from([("dc".to_owned(), "eu".to_owned())]),
        );
        let native = NativeHistograms {
            enabled: true,
            ..NativeHistograms::default()
        };
        let p = protobuf::parse(&body, &native);
        // The fractional float histogram is refused by the agent's reader
        // (the agent ships whole counts); the rest come back as they were.
        assert_eq!(p.samples.len(), 3, "{:?}", p.first_invalid);
        assert!(
            p.first_invalid[0].1.contains("fractional counts"),
            "{:?}",
            p.first_invalid
        );
        let by_name = |n: &str| {
            p.samples
                .iter()
                .find(|s| s.labels[0].1 == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let lat = by_name("lat");
        assert_eq!(lat.histogram.as_deref(), Some(&h));
        assert_eq!(lat.timestamp_ms, Some(1_000));
        assert_eq!(
            by_name("empty").histogram.as_deref().map(|e| e.count),
            Some(0.0),
            "an empty histogram is still native"
        );
        let up = by_name("up");
        assert_eq!((up.value, up.timestamp_ms), (1.0, Some(2_000)));
        assert!(up.labels.contains(&("dc".to_owned(), "eu".to_owned())));
        assert_eq!(p.families["queue"].kind, "gaugehistogram");
        assert_eq!(p.families["up"].kind, "untyped");
    }

    #[test]
    fn custom_buckets_are_federated_as_the_classic_histogram_a_converting_scraper_reads_back() {
        let h = Histogram {
            schema: keel_series::histogram::CUSTOM_SCHEMA,
            count: 7.0,
            sum: 2.5,
            positive: vec![(0, 2.0), (2, 4.0), (3, 1.0)],
            custom_values: std::sync::Arc::from([0.1, 0.5, 1.0]),
            ..Histogram::default()
        };
        let body = federation_body(
            vec![(
                Labels::new(vec![("__name__", "rpc"), ("job", "api")]),
                Newest::Histogram(1_000, Box::new(h.clone())),
            )],
            &BTreeMap::new(),
        );
        // Read plainly: the classic series, cumulative, +Inf the count.
        let p = protobuf::parse(&body, &NativeHistograms::default());
        let le: Vec<(String, f64)> = p
            .samples
            .iter()
            .filter(|s| s.labels[0].1 == "rpc_bucket")
            .filter_map(|s| {
                let le = s.labels.iter().find(|(k, _)| k == "le")?;
                Some((le.1.clone(), s.value))
            })
            .collect();
        assert_eq!(
            le,
            [
                ("0.1".to_owned(), 2.0),
                ("0.5".to_owned(), 2.0),
                ("1.0".to_owned(), 6.0),
                ("+Inf".to_owned(), 7.0)
            ]
        );
        // Read with the conversion on: the same histogram again.
        let converting = NativeHistograms {
            convert_classic: true,
            ..NativeHistograms::default()
        };
        let p = keel_agent::exposition::parse_body(
            &body,
            keel_agent::exposition::Format::Protobuf,
            &converting,
        );
        let back: Vec<&Histogram> = p
            .samples
            .iter()
            .filter_map(|s| s.histogram.as_deref())
            .collect();
        assert_eq!(back, [&h], "{:?}", p.first_invalid);
    }

    #[test]
    fn protobuf_is_answered_only_to_who_prefers_it() {
        let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
        // Prometheus with native histograms on (2.42 and 3.x forms).
        assert!(wanted([format!("{proto};q=0.6,*/*;q=0.1").as_str()]));
        assert!(wanted([format!(
            "{proto},application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )
        .as_str()]));
        assert!(wanted([
            "text/plain;q=0.3",
            "APPLICATION/VND.GOOGLE.PROTOBUF; proto=io.prometheus.client.MetricFamily; q=0.5"
        ]));
        for no in [
            "text/plain;version=0.0.4".to_owned(),
            format!("{proto};q=0,text/plain"),
            format!("{proto};q=0.0"),
            format!("{proto};q=0.000,*/*;q=0.1"),
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
                .into(),
            format!("text/plain;version=0.0.4;q=0.6,{proto};q=0.5"),
            "application/vnd.google.protobuf;proto=other.Message".into(),
            String::new(),
        ] {
            assert!(!wanted([no.as_str()]), "{no}");
        }
    }
}
