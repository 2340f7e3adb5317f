//! Classic histograms as native histograms with custom buckets (NHCB),
//! as Prometheus' `convert_classic_histograms_to_nhcb` takes them: the
//! `_bucket{le}`, `_count` and `_sum` series of one `histogram` family
//! and label set become one histogram sample under the family's name,
//! its bounds the `le` values (`+Inf` implied), its buckets the
//! cumulative counts taken apart.
//!
//! Only families typed `histogram` are converted (not gauge histograms,
//! summaries or untyped series), and not a histogram that also came
//! with native buckets. A `_bucket` whose `le` is not a number stays a
//! plain series. Unlike Prometheus, which then stores nothing for it, a
//! histogram that cannot be converted (counts that go down, a `_count`
//! other than its `+Inf` bucket's) keeps its classic series and is
//! reported as an invalid part of the scrape, naming it.

use keel_series::histogram::Histogram;
use std::collections::HashMap;

use super::{Families, Sample, family_of};

/// Which part of a classic histogram a series is.
enum Part {
    Bucket(f64),
    Count,
    Sum,
}

/// A histogram's family name and its labels but `__name__` and `le`.
type Key = (String, Vec<(String, String)>);

/// One classic histogram being gathered: where its first series was,
/// its members' positions, and what they said.
#[derive(Default)]
struct Gathered {
    first: usize,
    members: Vec<usize>,
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    native: bool,
}

/// Convert the classic histograms among `samples`; their classic series
/// stay too with `always_classic`. A histogram with more populated
/// buckets than the job's `bucket_limit` (custom buckets cannot be
/// coarsened) is not converted. Returns the samples, in scrape order (a
/// histogram where its first series was), and the histograms that could
/// not be converted, each with why.
pub fn convert(
    samples: Vec<Sample>,
    families: &Families,
    job: &super::NativeHistograms,
) -> (Vec<Sample>, Vec<String>) {
    let keep_classic = job.always_classic;
    // Family name and labels without `__name__`/`le` → its histogram.
    let mut gathered: HashMap<Key, Gathered> = HashMap::new();
    let mut order: Vec<Key> = Vec::new();
    for (k, s) in samples.iter().enumerate() {
        let Some((key, part)) = classify(s, families) else {
            continue;
        };
        let g = gathered.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Gathered {
                first: k,
                ..Gathered::default()
            }
        });
        match part {
            Some(Part::Bucket(le)) => g.buckets.push((le, s.value)),
            Some(Part::Count) => g.count = Some(s.value),
            Some(Part::Sum) => g.sum = Some(s.value),
            None => {
                g.native = true;
                continue;
            }
        }
        g.members.push(k);
    }
    let mut problems = Vec::new();
    let mut replace: HashMap<usize, Sample> = HashMap::new();
    let mut drop = vec![false; samples.len()];
    for key in order {
        let Some(g) = gathered.remove(&key) else {
            continue;
        };
        if g.native || g.buckets.is_empty() {
            continue;
        }
        let converted = custom_buckets(g.buckets, g.count, g.sum).and_then(|h| {
            let limit = job.bucket_limit as usize;
            if limit > 0 && h.positive.len() > limit {
                return Err(format!(
                    "{} buckets, above the job's native_histogram_bucket_limit {limit}",
                    h.positive.len()
                ));
            }
            Ok(h)
        });
        match converted {
            Ok(h) => {
                let first = &samples[g.first];
                let mut labels = Vec::with_capacity(key.1.len() + 1);
                labels.push(("__name__".to_owned(), key.0.clone()));
                labels.extend(key.1.iter().cloned());
                let exemplar = g
                    .members
                    .iter()
                    .filter_map(|m| samples[*m].exemplar.clone())
                    .max_by_key(|e| e.timestamp_ms);
                replace.insert(
                    g.first,
                    Sample {
                        labels,
                        value: 0.0,
                        timestamp_ms: first.timestamp_ms,
                        exemplar,
                        histogram: Some(Box::new(h)),
                    },
                );
                if !keep_classic {
                    for m in g.members {
                        drop[m] = true;
                    }
                }
            }
            Err(why) => problems.push(format!(
                "classic histogram {}{} not converted to custom buckets: {why}",
                key.0,
                show_labels(&key.1)
            )),
        }
    }
    let mut out = Vec::with_capacity(samples.len());
    for (k, s) in samples.into_iter().enumerate() {
        if let Some(h) = replace.remove(&k) {
            out.push(h);
        }
        if !drop[k] {
            out.push(s);
        }
    }
    (out, problems)
}

/// `{a="b",…}`, or nothing for no labels.
fn show_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// The family, part (`None`: the family's own native histogram) and
/// other labels of a sample that belongs to a `histogram` family; `None`
/// for any other sample.
fn classify(s: &Sample, families: &Families) -> Option<(Key, Option<Part>)> {
    let name = s.labels.iter().find(|(k, _)| k == "__name__")?.1.as_str();
    let (family, f) = family_of(families, name)?;
    if f.kind != "histogram" {
        return None;
    }
    // Sorted: a target may order a histogram's labels differently from
    // one of its series to the next.
    let rest = |skip_le: bool| -> Vec<(String, String)> {
        let mut l: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "__name__" && !(skip_le && k == "le"))
            .cloned()
            .collect();
        l.sort();
        l
    };
    if s.histogram.is_some() {
        return (name == family).then(|| ((family.to_owned(), rest(false)), None));
    }
    let suffix = name.strip_prefix(family)?;
    let part = match suffix {
        "_bucket" => {
            let le = s.labels.iter().find(|(k, _)| k == "le")?.1.trim();
            let le = match le {
                "+Inf" | "Inf" | "+inf" | "inf" => f64::INFINITY,
                other => other.parse::<f64>().ok().filter(|v| !v.is_nan())?,
            };
            Part::Bucket(le)
        }
        "_count" => Part::Count,
        "_sum" => Part::Sum,
        _ => return None,
    };
    let skip_le = matches!(part, Part::Bucket(_));
    Some(((family.to_owned(), rest(skip_le)), Some(part)))
}

/// One classic histogram's cumulative `(le, count)` buckets, `_count`
/// and `_sum` as custom buckets (Prometheus' `TempHistogram.Convert`):
/// buckets sorted by bound (a bound given twice counts once), a missing
/// `+Inf` bucket taken from `_count`, a missing `_count` from the
/// highest bucket, a missing `_sum` 0.
fn custom_buckets(
    mut buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
) -> Result<Histogram, String> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.dedup_by(|later, earlier| later.0 == earlier.0);
    if let Some((le, c)) = buckets.iter().find(|(_, c)| c.is_nan() || *c < 0.0) {
        return Err(format!("bucket le={le} has count {c}"));
    }
    // The agent ships histograms over OTLP, whose bucket counts are whole.
    let whole = keel_series::histogram::is_whole_count;
    if let Some((le, c)) = buckets.iter().find(|(_, c)| !whole(*c)) {
        return Err(format!(
            "bucket le={le} has the fractional count {c} (the agent ships whole counts only)"
        ));
    }
    if let Some(c) = count.filter(|c| !c.is_nan() && !whole(*c)) {
        return Err(format!(
            "_count {c} is fractional (the agent ships whole counts only)"
        ));
    }
    if let Some(w) = buckets.windows(2).find(|w| w[1].1 < w[0].1) {
        return Err(format!(
            "counts are not cumulative (le={} holds {}, le={} {})",
            w[0].0, w[0].1, w[1].0, w[1].1
        ));
    }
    let top = buckets.last().map_or(0.0, |b| b.1);
    let count = count.unwrap_or(top);
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        if count < top {
            return Err(format!(
                "_count {count} is below the highest bucket's {top}"
            ));
        }
        buckets.push((f64::INFINITY, count));
    }
    let inf = buckets.last().map_or(0.0, |b| b.1);
    if inf != count {
        return Err(format!(
            "_count {count} is not the +Inf bucket's count {inf}"
        ));
    }
    let mut prev = 0.0;
    let counts: Vec<f64> = buckets
        .iter()
        .map(|(_, c)| {
            let d = c - prev;
            prev = *c;
            d
        })
        .collect();
    let bounds: Vec<f64> = buckets[..buckets.len() - 1]
        .iter()
        .map(|(le, _)| *le)
        .collect();
    let h = Histogram {
        count,
        ..Histogram::with_custom_buckets(&bounds, &counts, sum.unwrap_or(0.0))
    };
    h.validate()?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, NativeHistograms, parse_body};
    use keel_series::histogram::CUSTOM_SCHEMA;

    /// A classic histogram whose series list their labels in another
    /// order each is still one histogram.
    #[test]
    fn label_order_does_not_split_a_histogram() {
        let body = "# TYPE h histogram
h_bucket{a=\"1\",b=\"2\",le=\"1\"} 1
h_bucket{b=\"2\",le=\"+Inf\",a=\"1\"} 2
h_sum{b=\"2\",a=\"1\"} 3
h_count{a=\"1\",b=\"2\"} 2
";
        let (out, problems) = converted(body, false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            out.len(),
            1,
            "{:?}",
            out.iter().map(name).collect::<Vec<_>>()
        );
        let h = out[0].histogram.as_deref().expect("one histogram");
        assert_eq!((h.count, h.sum), (2.0, 3.0));
    }

    fn converted(body: &str, keep: bool) -> (Vec<Sample>, Vec<String>) {
        let p = parse_body(
            body.as_bytes(),
            Format::Prometheus,
            &NativeHistograms::default(),
        );
        let job = NativeHistograms {
            always_classic: keep,
            ..NativeHistograms::default()
        };
        convert(p.samples, &p.families, &job)
    }

    #[test]
    fn a_histogram_over_the_bucket_limit_stays_classic() {
        let p = parse_body(
            BODY.as_bytes(),
            Format::Prometheus,
            &NativeHistograms::default(),
        );
        let job = NativeHistograms {
            bucket_limit: 2,
            ..NativeHistograms::default()
        };
        let (out, problems) = convert(p.samples, &p.families, &job);
        // /a has 3 populated buckets: refused; /b none: converted.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("native_histogram_bucket_limit 2"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("path=\"/a\""), "{}", problems[0]);
        assert_eq!(out.iter().filter(|s| s.histogram.is_some()).count(), 1);
        assert_eq!(
            out.iter()
                .filter(|s| name(s) == "http_seconds_bucket")
                .count(),
            3
        );
    }

    fn name(s: &Sample) -> &str {
        &s.labels[0].1
    }

    const BODY: &str = "# TYPE up gauge
up 1
# TYPE http_seconds histogram
http_seconds_bucket{path=\"/a\",le=\"0.5\"} 2
http_seconds_bucket{path=\"/a\",le=\"0.1\"} 1
http_seconds_bucket{path=\"/a\",le=\"+Inf\"} 5
http_seconds_sum{path=\"/a\"} 3.5
http_seconds_count{path=\"/a\"} 5
http_seconds_bucket{path=\"/b\",le=\"0.1\"} 0
http_seconds_bucket{path=\"/b\",le=\"0.5\"} 0
http_seconds_bucket{path=\"/b\",le=\"+Inf\"} 0
http_seconds_count{path=\"/b\"} 0
# TYPE queue summary
queue{quantile=\"0.5\"} 1
queue_count 1
";

    #[test]
    fn classic_histograms_become_one_custom_bucket_series_each_in_scrape_order() {
        let (out, problems) = converted(BODY, false);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = out.iter().map(name).collect();
        assert_eq!(
            names,
            ["up", "http_seconds", "http_seconds", "queue", "queue_count"]
        );
        let a = out[1].histogram.as_deref().expect("a histogram");
        assert_eq!(out[1].labels[1], ("path".to_owned(), "/a".to_owned()));
        assert_eq!(a.schema, CUSTOM_SCHEMA);
        assert_eq!(&*a.custom_values, &[0.1, 0.5]);
        // 1 in (-Inf, 0.1], 1 in (0.1, 0.5], 3 above.
        assert_eq!(a.positive, vec![(0, 1.0), (1, 1.0), (2, 3.0)]);
        assert_eq!((a.count, a.sum), (5.0, 3.5));
        let b = out[2].histogram.as_deref().expect("an empty histogram");
        assert_eq!((b.count, b.sum, b.positive.len()), (0.0, 0.0, 0));
        assert_eq!(&*b.custom_values, &[0.1, 0.5]);
    }

    #[test]
    fn always_scrape_classic_keeps_the_le_series_beside_the_histogram() {
        let (out, _) = converted(BODY, true);
        let names: Vec<&str> = out.iter().map(name).collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "http_seconds_bucket")
                .count(),
            6
        );
        assert_eq!(names.iter().filter(|n| **n == "http_seconds").count(), 2);
        assert_eq!(
            names[1], "http_seconds",
            "the histogram where its first series was"
        );
    }

    #[test]
    fn a_histogram_that_does_not_add_up_keeps_its_classic_series_and_is_named() {
        let body = "# TYPE h histogram
h_bucket{le=\"1\"} 5
h_bucket{le=\"2\"} 3
h_bucket{le=\"+Inf\"} 6
h_count 6
# TYPE g histogram
g_bucket{le=\"1\"} 1
g_bucket{le=\"+Inf\"} 2
g_count 3
# TYPE ok histogram
ok_bucket{le=\"1\"} 1
ok_bucket{le=\"nope\"} 1
ok_count 4
";
        let (out, problems) = converted(body, false);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("h ") && problems[0].contains("not cumulative"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains("g ") && problems[1].contains("+Inf"),
            "{}",
            problems[1]
        );
        let names: Vec<&str> = out.iter().map(name).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("h_")).count(), 4);
        assert_eq!(names.iter().filter(|n| n.starts_with("g_")).count(), 3);
        // `le="nope"` stays a plain series; the rest converts, the +Inf
        // bucket taken from _count.
        let ok = out.iter().find(|s| name(s) == "ok").expect("converted");
        let h = ok.histogram.as_deref().expect("histogram");
        assert_eq!(&*h.custom_values, &[1.0]);
        assert_eq!(h.positive, vec![(0, 1.0), (1, 3.0)]);
        assert!(out.iter().any(|s| name(s) == "ok_bucket"));
    }

    #[test]
    fn from_protobuf_a_classic_histogram_converts_and_one_with_native_buckets_does_not() {
        use crate::exposition::proto::{self, Bucket, BucketSpan, LabelPair, Metric, MetricFamily};
        use prost::Message;
        let classic = proto::Histogram {
            sample_count: 4,
            sample_sum: 1.0,
            bucket: vec![
                Bucket {
                    cumulative_count: 1,
                    upper_bound: 0.5,
                    ..Bucket::default()
                },
                Bucket {
                    cumulative_count: 3,
                    upper_bound: 1.0,
                    ..Bucket::default()
                },
            ],
            ..proto::Histogram::default()
        };
        let both = proto::Histogram {
            schema: 0,
            zero_threshold: 1e-128,
            positive_span: vec![BucketSpan {
                offset: 0,
                length: 1,
            }],
            positive_delta: vec![4],
            ..classic.clone()
        };
        let metric = |path: &str, h: proto::Histogram| Metric {
            label: vec![LabelPair::new("path", path)],
            histogram: Some(h),
            ..Metric::default()
        };
        let mut body = Vec::new();
        MetricFamily::new(
            "rpc_seconds",
            proto::kind::HISTOGRAM,
            vec![metric("/classic", classic), metric("/both", both)],
        )
        .encode_length_delimited(&mut body)
        .expect("encode");
        let native = NativeHistograms {
            enabled: true,
            always_classic: true,
            convert_classic: true,
            ..NativeHistograms::default()
        };
        let p = parse_body(&body, Format::Protobuf, &native);
        assert!(p.first_invalid.is_empty(), "{:?}", p.first_invalid);
        let histograms: Vec<(&str, &Histogram)> = p
            .samples
            .iter()
            .filter_map(|s| Some((s.labels[1].1.as_str(), s.histogram.as_deref()?)))
            .collect();
        assert_eq!(histograms.len(), 2, "{histograms:?}");
        // The classic one became custom buckets (1.0 read as written in
        // protobuf: `1.0`, the same bound).
        let (_, c) = histograms
            .iter()
            .find(|(p, _)| *p == "/classic")
            .expect("converted");
        assert!(c.is_custom());
        assert_eq!(&*c.custom_values, &[0.5, 1.0]);
        assert_eq!(c.positive, vec![(0, 1.0), (1, 2.0), (2, 1.0)]);
        // The one with native buckets stayed exponential, its classic
        // series kept beside it (always_classic) and not converted.
        let (_, b) = histograms
            .iter()
            .find(|(p, _)| *p == "/both")
            .expect("native");
        assert_eq!(b.schema, 0);
        let classic_both = p
            .samples
            .iter()
            .filter(|s| s.labels[0].1 == "rpc_seconds_bucket" && s.labels[1].1 == "/both")
            .count();
        assert_eq!(classic_both, 3);
    }

    #[test]
    fn untyped_series_and_gauge_histograms_are_left_alone() {
        let body = "x_bucket{le=\"1\"} 1
x_bucket{le=\"+Inf\"} 1
# TYPE gh gaugehistogram
gh_bucket{le=\"1\"} 1
gh_bucket{le=\"+Inf\"} 1
";
        let (out, problems) = converted(body, false);
        assert!(problems.is_empty());
        assert!(out.iter().all(|s| s.histogram.is_none()));
        assert_eq!(out.len(), 4);
    }
}
