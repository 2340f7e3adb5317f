//! Aggregation operators: `sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile`, `count_values`.

use std::collections::BTreeMap;

use super::EvalError;
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
    fn key(&self, l: &Labels) -> Labels {
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
            "sum" => one(kahan_sum(vals())),
            "avg" => one(mean(vals())),
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
            "count_values" => {
                let dst = label.unwrap_or("value");
                let mut counts: BTreeMap<String, f64> = BTreeMap::new();
                for s in &members {
                    *counts.entry(format_value(s.value)).or_default() += 1.0;
                }
                counts
                    .into_iter()
                    .map(|(v, c)| Sample {
                        labels: key.with(dst, &v),
                        value: c,
                    })
                    .collect()
            }
            other => return Err(EvalError::Unsupported(format!("aggregation {other}"))),
        };
        out.extend(produced);
    }
    Ok(out)
}

fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            c += (sum - t) + v;
        } else {
            c += (v - t) + sum;
        }
        sum = t;
    }
    if (sum + c).is_finite() { sum + c } else { sum }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    kahan_sum(v.iter().copied()) / v.len() as f64
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
