//! Aggregation operators: `sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`.

use std::collections::BTreeMap;

use super::EvalError;
use super::float;
use super::functions::quantile;
use super::value::{Sample, format_value};
use keel_series::labels::Labels;

/// How samples are grouped: `by (…)` or `without (…)`.
#[derive(Debug, Clone)]
pub enum Grouping {
    /// Keep only these labels.
    By(Vec<String>),
    /// Drop these labels (and the metric name).
    Without(Vec<String>),
}

/// Per-query memo of group keys. `keys`: (aggregation node, labels id) →
/// (labels, key); `interned`: one shared key per distinct content, so
/// groups can be told apart by identity instead of comparing strings.
#[derive(Default)]
pub struct KeyMemo {
    keys: keel_series::FastMap<(usize, usize), (Labels, Labels)>,
    interned: keel_series::FastMap<(usize, Labels), Labels>,
}

impl Grouping {
    /// The group key of a series' labels.
    pub fn key(&self, l: &Labels) -> Labels {
        match self {
            Grouping::By(names) => l.project(names, true),
            Grouping::Without(names) => l.without_name().project(names, false),
        }
    }
}

/// Aggregate `input` with operator `op`; `param` is the numeric or string
/// parameter of `topk`/`bottomk`/`quantile`/`count_values`.
pub fn aggregate(
    op: &str,
    input: Vec<Sample>,
    grouping: &Grouping,
    num: Option<f64>,
    label: Option<&str>,
    memo: &mut KeyMemo,
    node: usize,
) -> Result<Vec<Sample>, EvalError> {
    if op == "count_values" {
        return count_values(input, grouping, label.unwrap_or_default());
    }
    let mut groups: keel_series::FastMap<usize, (Labels, Vec<Sample>)> =
        keel_series::FastMap::default();
    for s in input {
        let key = match memo.keys.get(&(node, s.labels.id())) {
            Some((_, k)) => k.clone(),
            None => {
                let k = grouping.key(&s.labels);
                let k = memo.interned.entry((node, k.clone())).or_insert(k).clone();
                memo.keys
                    .insert((node, s.labels.id()), (s.labels.clone(), k.clone()));
                k
            }
        };
        groups
            .entry(key.id())
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push(s);
    }
    let mut groups: Vec<(Labels, Vec<Sample>)> = groups.into_values().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, members) in groups {
        let vals = || members.iter().map(|s| s.value);
        let one = |v: f64| {
            vec![Sample {
                labels: key.clone(),
                value: v,
            }]
        };
        let produced = match op {
            "sum" => one(float::kahan_sum(vals())),
            "avg" => one(float::mean(vals())),
            "count" => one(members.len() as f64),
            "group" => one(1.0),
            "min" => one(vals().fold(f64::NAN, |a, b| if a.is_nan() || b < a { b } else { a })),
            "max" => one(vals().fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a })),
            "stdvar" => one(variance(vals())),
            "stddev" => one(variance(vals()).sqrt()),
            "quantile" => one(quantile(num.unwrap_or(f64::NAN), vals().collect())),
            "topk" | "bottomk" => {
                let k = num.unwrap_or(0.0);
                if k < 1.0 || k.is_nan() {
                    Vec::new()
                } else {
                    let mut m = members.clone();
                    // NaN sorts last either way, as in Prometheus.
                    m.sort_by(|a, b| {
                        let (x, y) = (a.value, b.value);
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if op == "topk" => y.total_cmp(&x),
                            _ => x.total_cmp(&y),
                        }
                    });
                    m.truncate(k.min(m.len() as f64) as usize);
                    m
                }
            }
            "limitk" => {
                // The first k of the group in label order, as Prometheus
                // reads them (its selectors return series sorted).
                let k = num.unwrap_or(0.0);
                let mut m = members.clone();
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
                m.truncate(if k >= 1.0 {
                    k.min(m.len() as f64) as usize
                } else {
                    0
                });
                m
            }
            "limit_ratio" => {
                let r = num.unwrap_or(f64::NAN).clamp(-1.0, 1.0);
                members
                    .iter()
                    .filter(|s| in_ratio(r, &s.labels))
                    .cloned()
                    .collect()
            }
            other => return Err(EvalError::Unsupported(format!("aggregation {other}"))),
        };
        out.extend(produced);
    }
    Ok(out)
}

/// `count_values(label, v)`: each sample's value is written to `label`
/// first (overwriting a label of that name), then samples are grouped
/// with `label` among the `by` labels, as Prometheus 3 does.
fn count_values(
    input: Vec<Sample>,
    grouping: &Grouping,
    label: &str,
) -> Result<Vec<Sample>, EvalError> {
    if label.is_empty() {
        return Err(EvalError::Execution(format!(
            "invalid label name {label:?}"
        )));
    }
    let grouping = match grouping {
        Grouping::By(names) => {
            let mut names = names.clone();
            names.push(label.to_owned());
            Grouping::By(names)
        }
        without => without.clone(),
    };
    let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
    for s in input {
        let labelled = s.labels.with(label, &format_value(s.value));
        *counts.entry(grouping.key(&labelled)).or_default() += 1.0;
    }
    Ok(counts
        .into_iter()
        .map(|(labels, value)| Sample { labels, value })
        .collect())
}

/// Whether `limit_ratio(r, …)` keeps a series: its labels' hash as a
/// fraction of the hash space is below `r` (r ≥ 0) or at least `1 + r`
/// (r < 0), Prometheus' xxhash of `name 0xff value 0xff …`, so Keel and
/// Prometheus keep the same series and `r` and `-(1 - r)` complement.
fn in_ratio(r: f64, labels: &Labels) -> bool {
    let mut bytes = Vec::new();
    for (k, v) in labels.pairs() {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0xff);
    }
    let offset = xxhash_rust::xxh64::xxh64(&bytes, 0) as f64 / u64::MAX as f64;
    (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
}

fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut mean, mut m2) = (0.0, 0.0, 0.0);
    for v in values {
        n += 1.0;
        let d = v - mean;
        mean += d / n;
        m2 += d * (v - mean);
    }
    m2 / n
}
