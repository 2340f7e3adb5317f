//! Native histograms in queries: `rate`/`increase` over histogram
//! series, the `histogram_*` functions, aggregation and arithmetic, as
//! Prometheus 3 evaluates them. Anything else asked of a histogram is an
//! error naming it, never a silently dropped series.

use keel_series::histogram::{CounterReset, Histogram};
use keel_series::labels::Labels;

use super::EvalError;
use super::aggregate::Grouping;
use super::value::{HistogramSample, Sample};
use crate::annotations::Annotations;

/// `rate` (`per_second`) or `increase` over a histogram series' window
/// `(start, end]`: the last minus the first, counter resets added back,
/// extrapolated to the window's edges as floats are (the start cut at
/// the histogram count's extrapolated zero). `None` below two samples,
/// and for a window mixing exponential and custom buckets (warned of in
/// `notes` for the series `name`, as Prometheus does). The second value
/// says a gauge histogram was met.
pub fn extrapolated(
    points: &[(i64, Histogram)],
    (start, end): (i64, i64),
    per_second: bool,
    name: &str,
    notes: &mut Annotations,
) -> Option<(Histogram, bool)> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let gauge = points.iter().any(|(_, h)| h.reset == CounterReset::Gauge);
    // A reset right after the first sample makes the first count as
    // empty, so its bucket layout (another kind, even) is not looked at,
    // as Prometheus does.
    let second = &points[1].1;
    let base = if second.is_reset_after(&first.1) {
        Histogram {
            schema: second.schema,
            custom_values: second.custom_values.clone(),
            ..Histogram::default()
        }
    } else {
        first.1.clone()
    };
    let mut result = combine_noted(&last.1, &base, Op::Sub, name, notes)?;
    let mut prev = &base;
    for (_, cur) in &points[1..] {
        if cur.is_reset_after(prev) {
            result = combine_noted(&result, prev, Op::Add, name, notes)?;
        }
        prev = cur;
    }
    let zero =
        (result.count > 0.0 && first.1.count >= 0.0).then_some((first.1.count, result.count));
    let factor = crate::functions::extrapolation(
        (first.0, last.0, points.len()),
        (start, end),
        zero,
        per_second,
    );
    let mut h = result.scale(factor).compact();
    h.reset = CounterReset::Gauge;
    Some((h, gauge))
}

/// `irate` (`per_second`) or `idelta` over a histogram series' window:
/// the last sample less the one before (for `irate`, the last alone
/// after a counter reset), per second for `irate`. `None` below two
/// samples, at one time, or for exponential and custom buckets mixed
/// (warned of, naming the series `name`).
pub fn instant(
    points: &[(i64, Histogram)],
    per_second: bool,
    name: &str,
    notes: &mut Annotations,
) -> Option<Histogram> {
    let [(t0, before), (t1, last)] = points.get(points.len().checked_sub(2)?..)? else {
        return None;
    };
    let dt = t1 - t0;
    if dt == 0 {
        return None;
    }
    let gauge = [before, last].map(|h| h.reset == CounterReset::Gauge);
    if per_second && gauge.contains(&true) {
        notes.warn(not_a_counter(name));
    }
    if !per_second && gauge.contains(&false) {
        notes.warn(format!(
            "this native histogram metric is not a gauge: {name:?}"
        ));
    }
    let mut h = if per_second && last.is_reset_after(before) {
        last.clone()
    } else {
        combine_noted(last, before, Op::Sub, name, notes)?
    };
    h.reset = CounterReset::Gauge;
    if per_second {
        h = h.scale(1000.0 / dt as f64);
    }
    Some(h.compact())
}

/// One of the `histogram_*` functions that read a number from each
/// histogram (`params`: `histogram_fraction`'s bounds,
/// `histogram_quantile`'s φ). The metric name is dropped.
pub fn read(name: &str, input: Vec<HistogramSample>, params: &[f64]) -> Vec<Sample> {
    let p = |i: usize| params.get(i).copied().unwrap_or(f64::NAN);
    input
        .into_iter()
        .map(|s| {
            let h = &s.histogram;
            let value = match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => h.variance().sqrt(),
                "histogram_stdvar" => h.variance(),
                "histogram_fraction" => h.fraction(p(0), p(1)),
                _ => h.quantile(p(0)),
            };
            Sample {
                labels: s.labels.without_name(),
                value,
            }
        })
        .collect()
}

/// Prometheus' warning for a mix of exponential and custom buckets
/// where histograms are added (the result for them is dropped).
pub fn mixed_schemas(name: &str) -> String {
    format!(
        "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {name:?}"
    )
}

/// How two histograms are combined, as Prometheus names it in its info
/// on reconciled custom bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a + b` within an aggregation (`sum`, `avg`, `sum_over_time`).
    Aggregate,
}

/// `a + b` or `a - b` as Prometheus notes it in `notes`: custom bounds
/// that differ are reconciled onto those both have, with an info; one
/// with exponential and one with custom buckets gives `None` and a
/// warning naming the series `name`.
pub fn combine_noted(
    a: &Histogram,
    b: &Histogram,
    op: Op,
    name: &str,
    notes: &mut Annotations,
) -> Option<Histogram> {
    if a.bounds_differ(b) {
        notes.info(format!(
            "mismatched custom buckets were reconciled during {}",
            match op {
                Op::Add => "addition",
                Op::Sub => "subtraction",
                Op::Aggregate => "aggregation",
            }
        ));
    }
    let combined = if op == Op::Sub { a.sub(b) } else { a.add(b) };
    match combined {
        Ok(h) => Some(h),
        Err(_) => {
            notes.warn(mixed_schemas(name));
            None
        }
    }
}

/// Prometheus' warning for a histogram metric `name` that is not a
/// counter where one is wanted (`rate`, `irate`).
pub fn not_a_counter(name: &str) -> String {
    format!("this native histogram metric is not a counter: {name:?}")
}

/// The functions [`read`] computes.
pub fn is_reader(name: &str) -> bool {
    matches!(
        name,
        "histogram_count"
            | "histogram_sum"
            | "histogram_avg"
            | "histogram_stddev"
            | "histogram_stdvar"
            | "histogram_fraction"
            | "histogram_quantile"
    )
}

/// What an aggregation of histograms gives: histograms (`sum`, `avg`)
/// or numbers (`count`, `group`).
pub enum Aggregated {
    /// One histogram a group.
    Histograms(Vec<HistogramSample>),
    /// One number a group.
    Floats(Vec<Sample>),
}

/// Aggregate histogram samples: `sum`, `avg`, `count` and `group`, as
/// Prometheus does; the other operators take numbers and are an error.
/// A `sum`/`avg` group mixing exponential and custom buckets gives
/// nothing, with a warning in `notes`.
pub fn aggregate(
    op: &str,
    input: Vec<HistogramSample>,
    grouping: &Grouping,
    notes: &mut Annotations,
) -> Result<Aggregated, EvalError> {
    if !matches!(op, "sum" | "avg" | "count" | "group") {
        return Err(EvalError::Unsupported(format!(
            "{op}() over native histograms (Prometheus ignores them there; aggregate histogram_count(), histogram_sum() or histogram_quantile() instead)"
        )));
    }
    let adds = matches!(op, "sum" | "avg");
    let mut groups: Vec<(Labels, Option<Histogram>, f64)> = Vec::new();
    let mut at: keel_series::FastMap<Labels, usize> = keel_series::FastMap::default();
    for s in input {
        let key = grouping.key(&s.labels);
        match at.get(&key) {
            Some(&i) => {
                let g = &mut groups[i];
                if adds && let Some(h) = &g.1 {
                    g.1 = combine_noted(
                        h,
                        &s.histogram,
                        Op::Aggregate,
                        s.labels.get(keel_series::labels::NAME),
                        notes,
                    );
                }
                g.2 += 1.0;
            }
            None => {
                at.insert(key.clone(), groups.len());
                groups.push((key, Some(s.histogram), 1.0));
            }
        }
    }
    Ok(match op {
        "sum" | "avg" => Aggregated::Histograms(
            groups
                .into_iter()
                .filter_map(|(labels, h, n)| Some((labels, h?, n)))
                .map(|(labels, h, n)| HistogramSample {
                    labels,
                    histogram: if op == "avg" {
                        h.scale(1.0 / n).compact()
                    } else {
                        h.compact()
                    },
                })
                .collect(),
        ),
        _ => Aggregated::Floats(
            groups
                .into_iter()
                .map(|(labels, _, n)| Sample {
                    labels,
                    value: if op == "count" { n } else { 1.0 },
                })
                .collect(),
        ),
    })
}

/// `h * s`, `s * h` and `h / s`: every count and the sum scaled; the
/// metric name dropped.
pub fn with_scalar(
    op: &str,
    v: Vec<HistogramSample>,
    s: f64,
    scalar_left: bool,
) -> Result<Vec<HistogramSample>, EvalError> {
    let factor = match (op, scalar_left) {
        ("*", _) => s,
        ("/", false) => 1.0 / s,
        _ => {
            return Err(EvalError::Unsupported(format!(
                "operator {op} between a native histogram and a number (Prometheus allows h * n, n * h and h / n)"
            )));
        }
    };
    Ok(v.into_iter()
        .map(|h| HistogramSample {
            labels: h.labels.without_name(),
            histogram: h.histogram.scale(factor),
        })
        .collect())
}

/// `h * f`, `f * h` and `h / f` between a histogram vector and a float
/// vector, matched one-to-one as [`between`] matches.
pub fn with_floats(
    op: &str,
    hs: Vec<HistogramSample>,
    fs: Vec<Sample>,
    floats_left: bool,
    on: Option<(bool, &[String])>,
) -> Result<Vec<HistogramSample>, EvalError> {
    if !(op == "*" || op == "/" && !floats_left) {
        return Err(EvalError::Unsupported(format!(
            "operator {op} between native histograms and numbers (Prometheus allows h * n, n * h and h / n)"
        )));
    }
    let sig = signature(on);
    let mut by: keel_series::FastMap<Labels, f64> = keel_series::FastMap::default();
    for f in fs {
        let k = sig(&f.labels);
        if by.insert(k.clone(), f.value).is_some() {
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {k} on the {} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side",
                if floats_left { "left" } else { "right" }
            )));
        }
    }
    let mut out = Vec::new();
    for h in hs {
        let k = sig(&h.labels);
        if let Some(f) = by.get(&k) {
            let factor = if op == "/" { 1.0 / f } else { *f };
            let labels = match on {
                Some((true, _)) => k,
                _ => h.labels.without_name(),
            };
            out.push(HistogramSample {
                labels,
                histogram: h.histogram.scale(factor),
            });
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// The labels two sides match on: all but the name, only `on` ones, or
/// all but the name and `ignoring` ones.
fn signature(on: Option<(bool, &[String])>) -> impl Fn(&Labels) -> Labels + '_ {
    move |l: &Labels| match on {
        Some((true, names)) => l.project(names, true),
        Some((false, names)) => l.without_name().project(names, false),
        None => l.without_name(),
    }
}

/// `a + b` or `a - b` between histogram vectors, matched one-to-one on
/// their labels (without the name, or only `on` / all but `ignoring`
/// those given). A pair mixing exponential and custom buckets gives
/// nothing, with a warning in `notes`.
pub fn between(
    op: &str,
    l: Vec<HistogramSample>,
    r: Vec<HistogramSample>,
    on: Option<(bool, &[String])>,
    notes: &mut Annotations,
) -> Result<Vec<HistogramSample>, EvalError> {
    if !matches!(op, "+" | "-") {
        return Err(EvalError::Unsupported(format!(
            "operator {op} between native histograms (Prometheus allows + and -)"
        )));
    }
    let sig = signature(on);
    let mut right: keel_series::FastMap<Labels, Histogram> = keel_series::FastMap::default();
    for s in r {
        let k = sig(&s.labels);
        if right.insert(k.clone(), s.histogram).is_some() {
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {k} on the right hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let mut out = Vec::new();
    for s in l {
        let k = sig(&s.labels);
        if let Some(rh) = right.get(&k) {
            let how = if op == "+" { Op::Add } else { Op::Sub };
            let name = s.labels.get(keel_series::labels::NAME);
            let Some(h) = combine_noted(&s.histogram, rh, how, name, notes) else {
                continue;
            };
            let labels = match on {
                Some((true, _)) => k,
                _ => s.labels.without_name(),
            };
            out.push(HistogramSample {
                labels,
                histogram: h.compact(),
            });
        }
    }
    check_unique(&out)?;
    Ok(out)
}

/// Two histogram samples with one label set is an error, as for floats.
pub fn check_unique(v: &[HistogramSample]) -> Result<(), EvalError> {
    super::binary::unique_by(v, |s| &s.labels)
}

/// The error for native histograms where an operation takes numbers.
pub fn not_numbers(what: &str) -> EvalError {
    EvalError::Unsupported(format!(
        "native histogram samples in {what}: it takes numbers (use histogram_count(), histogram_sum(), histogram_avg() or histogram_quantile() to read numbers from them)"
    ))
}

#[cfg(test)]
mod tests;
