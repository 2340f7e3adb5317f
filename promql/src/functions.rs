//! PromQL functions: over range vectors (`rate`, `*_over_time`, …) and over
//! instant vectors (math, time, labels, `histogram_quantile`).

use super::EvalError;
use super::value::Sample;
use keel_series::labels::Labels;

/// Prometheus' extrapolated rate/increase/delta over a window `(start, end]` (ms).
pub fn extrapolated(
    points: &[(i64, f64)],
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &points[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    Some(extrapolate(
        (first, last, points.len()),
        result,
        (start, end),
        counter,
        per_second,
    ))
}

/// A window's `result` (last − first, plus a counter's resets)
/// extrapolated over `(start, end]`, from its first and last samples and
/// how many it holds (at least 2).
pub fn extrapolate(
    (first, last, n): ((i64, f64), (i64, f64), usize),
    result: f64,
    window: (i64, i64),
    counter: bool,
    per_second: bool,
) -> f64 {
    let zero = (counter && result > 0.0 && first.1 >= 0.0).then_some((first.1, result));
    result * extrapolation((first.0, last.0, n), window, zero, per_second)
}

/// What Prometheus multiplies an increase over a window `(start, end]`
/// by (`sampled`: the first and last sample times and how many samples;
/// `zero`: a counter's first value and increase, to cut the start at its
/// extrapolated zero), for floats and native histograms alike. Prometheus
/// 3: a sample close enough to a boundary (10 % over the average
/// spacing) extrapolates to it, else by half a spacing; only then is the
/// start cut at the zero (2.x cut first and compared the cut with the
/// threshold). Per second, the window's length divides it.
pub fn extrapolation(
    sampled: (i64, i64, usize),
    (start, end): (i64, i64),
    zero: Option<(f64, f64)>,
    per_second: bool,
) -> f64 {
    let (first, last, n) = sampled;
    let mut to_start = (first as f64 - start as f64) / 1000.0;
    let mut to_end = (end as f64 - last as f64) / 1000.0;
    let sampled = (last as f64 - first as f64) / 1000.0;
    let avg_between = sampled / n.saturating_sub(1).max(1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if let Some((first_value, increase)) = zero {
        to_start = to_start.min(sampled * (first_value / increase));
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= (end as f64 - start as f64) / 1000.0;
    }
    factor
}

fn instant_rate(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev, last) = (points[points.len() - 2], points[points.len() - 1]);
    let mut d = last.1 - prev.1;
    if is_rate && last.1 < prev.1 {
        d = last.1; // counter reset
    }
    if !is_rate {
        return Some(d);
    }
    let dt = (last.0 - prev.0) as f64 / 1000.0;
    (dt > 0.0).then(|| d / dt)
}

/// Least-squares slope and intercept at `at` (ms), x in seconds relative
/// to `at`, with compensated sums as Prometheus' `linearRegression`; a
/// constant series has slope 0 (NaN both when the constant is infinite).
fn linear_regression(points: &[(i64, f64)], at: i64) -> (f64, f64) {
    use crate::float::kahan_inc;
    let n = points.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sxx, mut cxx) = (0.0, 0.0, 0.0, 0.0);
    let first = points[0].1;
    let const_y = points.iter().all(|p| p.1 == first);
    for &(t, v) in points {
        let x = (t - at) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sxx, cxx) = kahan_inc(x * x, sxx, cxx);
    }
    if const_y {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (sx, sy, sxy, sxx) = (sx + cx, sy + cy, sxy + cxy, sxx + cxx);
    let cov = sxy - sx * sy / n;
    let var = sxx - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// Holt's linear smoothing of a window with smoothing factor `sf` and
/// trend factor `tf` (`double_exponential_smoothing`, 2.x's `holt_winters`).
fn double_exponential_smoothing(
    p: &[(i64, f64)],
    sf: f64,
    tf: f64,
) -> Result<Option<f64>, EvalError> {
    // As Prometheus: a NaN factor passes the check and gives NaN.
    if sf <= 0.0 || sf >= 1.0 {
        return Err(EvalError::Execution(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
        )));
    }
    if tf <= 0.0 || tf >= 1.0 {
        return Err(EvalError::Execution(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
        )));
    }
    if p.len() < 2 {
        return Ok(None);
    }
    let (mut s0, mut s1, mut b) = (0.0, p[0].1, p[1].1 - p[0].1);
    for (i, &(_, v)) in p.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let next = sf * v + (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, next);
    }
    Ok(Some(s1))
}

/// φ-quantile of values, interpolated as Prometheus does.
pub fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - lower;
    values[lower as usize] * (1.0 - w) + values[upper as usize] * w
}

/// One evaluation of a range-vector function: the window `(start, end]`
/// (ms), the evaluation time `at` (ms, which `@` does not move), and the
/// function's scalar parameters in argument order.
#[derive(Debug, Clone, Copy)]
pub struct RangeCall<'a> {
    /// The window's open start.
    pub start: i64,
    /// The window's closed end.
    pub end: i64,
    /// The evaluation time.
    pub at: i64,
    /// The scalar parameters.
    pub params: &'a [f64],
}

/// Apply a range-vector function to one series' window.
pub fn over_range(
    name: &str,
    p: &[(i64, f64)],
    call: RangeCall<'_>,
) -> Result<Option<f64>, EvalError> {
    use crate::float;
    let RangeCall {
        start,
        end,
        at,
        params,
    } = call;
    let param = |i: usize| params.get(i).copied().unwrap_or(f64::NAN);
    let vals = || p.iter().map(|x| x.1);
    Ok(match name {
        "rate" => extrapolated(p, start, end, true, true),
        "increase" => extrapolated(p, start, end, true, false),
        "delta" => extrapolated(p, start, end, false, false),
        "irate" => instant_rate(p, true),
        "idelta" => instant_rate(p, false),
        "deriv" => (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
        // Prometheus 3 predicts from the evaluation time, also under `@`.
        "predict_linear" => (p.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(p, at);
            slope * param(0) + intercept
        }),
        "double_exponential_smoothing" => {
            return double_exponential_smoothing(p, param(0), param(1));
        }
        "changes" => (!p.is_empty()).then(|| {
            p.windows(2)
                .filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan()))
                .count() as f64
        }),
        "resets" => {
            (!p.is_empty()).then(|| p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
        }
        "avg_over_time" => (!p.is_empty()).then(|| float::mean(vals())),
        "sum_over_time" => (!p.is_empty()).then(|| float::kahan_sum(vals())),
        "count_over_time" => (!p.is_empty()).then_some(p.len() as f64),
        "min_over_time" => (!p.is_empty())
            .then(|| vals().fold(f64::NAN, |a, b| if a.is_nan() || b < a { b } else { a })),
        "max_over_time" => (!p.is_empty())
            .then(|| vals().fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a })),
        "last_over_time" => p.last().map(|x| x.1),
        "present_over_time" => (!p.is_empty()).then_some(1.0),
        "stddev_over_time" => (!p.is_empty()).then(|| float::variance(vals()).sqrt()),
        "stdvar_over_time" => (!p.is_empty()).then(|| float::variance(vals())),
        "quantile_over_time" => (!p.is_empty()).then(|| quantile(param(0), vals().collect())),
        "mad_over_time" => (!p.is_empty()).then(|| {
            let median = quantile(0.5, vals().collect());
            quantile(0.5, vals().map(|v| (v - median).abs()).collect())
        }),
        other => return Err(EvalError::Unsupported(other.to_owned())),
    })
}

/// Range-vector functions that keep the metric name (all others drop it).
pub fn keeps_name(name: &str) -> bool {
    matches!(name, "last_over_time")
}

/// Is `name` a function over a range vector?
pub fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "changes"
            | "resets"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "last_over_time"
            | "present_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "mad_over_time"
            | "double_exponential_smoothing"
    )
}

/// Element-wise math on a value.
pub fn math(name: &str, v: f64) -> Option<f64> {
    Some(match name {
        "abs" => v.abs(),
        "ceil" => v.ceil(),
        "floor" => v.floor(),
        "exp" => v.exp(),
        "ln" => v.ln(),
        "log2" => v.log2(),
        "log10" => v.log10(),
        "sqrt" => v.sqrt(),
        "sgn" => {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }
        "sin" => v.sin(),
        "cos" => v.cos(),
        "tan" => v.tan(),
        "asin" => v.asin(),
        "acos" => v.acos(),
        "atan" => v.atan(),
        "sinh" => v.sinh(),
        "cosh" => v.cosh(),
        "tanh" => v.tanh(),
        "asinh" => v.asinh(),
        "acosh" => v.acosh(),
        "atanh" => v.atanh(),
        "deg" => v.to_degrees(),
        "rad" => v.to_radians(),
        _ => return None,
    })
}

/// Calendar functions of a Unix time in seconds (UTC).
pub fn calendar(name: &str, secs: f64) -> Option<f64> {
    let days = (secs / 86_400.0).floor() as i64;
    let sod = secs - days as f64 * 86_400.0;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let doy = month_days[..(month - 1) as usize].iter().sum::<i64>() + day;
    Some(match name {
        "minute" => ((sod / 60.0).floor() as i64 % 60) as f64,
        "hour" => (sod / 3600.0).floor(),
        "day_of_month" => day as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => doy as f64,
        "days_in_month" => month_days[(month - 1) as usize] as f64,
        "month" => month as f64,
        "year" => year as f64,
        _ => return None,
    })
}

/// `histogram_quantile(q, buckets)` for one group of classic buckets
/// (`upper bound`, cumulative count), as Prometheus' `bucketQuantile`;
/// also whether a count had to be raised to keep the buckets monotonic.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets[buckets.len() - 1].0 != f64::INFINITY {
        return (f64::NAN, false);
    }
    // Coalesce equal bounds (`+Inf` and `inf` too).
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    let forced = ensure_monotonic(&mut merged);
    let n = merged.len();
    if n < 2 {
        return (f64::NAN, forced);
    }
    let observations = merged[n - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let b = merged[..n - 1]
        .iter()
        .position(|x| x.1 >= rank)
        .unwrap_or(n - 1);
    if b == n - 1 {
        return (merged[n - 2].0, forced);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Counts that differ from the previous by a float rounding error (1e-12
/// relative) are set equal to it silently; counts that fall are raised
/// to it, which is reported (Prometheus' `ensureMonotonicAndIgnoreSmallDeltas`).
fn ensure_monotonic(buckets: &mut [(f64, f64)]) -> bool {
    const TOLERANCE: f64 = 1e-12;
    let mut forced = false;
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, TOLERANCE) {
            b.1 = prev;
            continue;
        }
        if curr < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    forced
}

/// Relative float equality within `epsilon` (Prometheus' `almost.Equal`).
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() || a == b {
        return true;
    }
    let min_normal = f64::MIN_POSITIVE;
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < epsilon * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Does `name` read a counter (so a series whose name does not say so
/// earns Prometheus' "might not be a counter" info)?
pub fn wants_counter(name: &str) -> bool {
    matches!(name, "rate" | "increase")
}

/// Is `name` one of Prometheus' experimental functions or aggregations?
pub fn is_experimental(name: &str) -> bool {
    matches!(
        name,
        "limitk"
            | "limit_ratio"
            | "sort_by_label"
            | "sort_by_label_desc"
            | "mad_over_time"
            | "double_exponential_smoothing"
            | "info"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_last_over_time"
    )
}

/// `sort_by_label`'s order: by each named label's value in natural order
/// (digit runs compared as numbers), then by the whole label set.
pub fn by_labels(names: &[String], a: &Labels, b: &Labels) -> std::cmp::Ordering {
    for n in names {
        let o = natural_cmp(a.get(n), b.get(n));
        if o.is_ne() {
            return o;
        }
    }
    a.cmp(b)
}

/// Natural order, as Prometheus' `natsort` for the values it orders
/// consistently: the strings as runs of digits and of non-digits
/// compared run by run, two digit runs by their numbers (`9` before
/// `10`; equal numbers such as `1` and `01` then by their text), other
/// runs as text; a string that runs out first is less. Unlike natsort
/// it is a total order (natsort calls an absent value neither less nor
/// greater than any other, and `1` and `01` each less than the other),
/// which a sort needs.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
        let o = if digits(x) && digits(y) {
            let (tx, ty) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            tx.len()
                .cmp(&ty.len())
                .then_with(|| tx.cmp(ty))
                .then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// `s` split into maximal runs of ASCII digits and of everything else.
fn chunks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut digits = None;
    for (i, c) in s.char_indices() {
        let d = c.is_ascii_digit();
        if digits.is_some_and(|was| was != d) {
            out.push(&s[start..i]);
            start = i;
        }
        digits = Some(d);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// `label_replace(v, dst, replacement, src, regex)` on one sample.
pub fn label_replace(
    s: &Sample,
    dst: &str,
    replacement: &str,
    src: &str,
    re: &regex::Regex,
) -> Labels {
    let value = s.labels.get(src);
    match re.captures(value) {
        Some(caps) => {
            let mut out = String::new();
            // The regex crate expands `$1`, `${1}` and `$name` as Go does
            // (`$1x` is the group named `1x` in both).
            caps.expand(replacement, &mut out);
            s.labels.with(dst, &out)
        }
        None => s.labels.clone(),
    }
}
