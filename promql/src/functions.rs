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
    let mut to_start = (first.0 as f64 - start as f64) / 1000.0;
    let to_end = (end as f64 - last.0 as f64) / 1000.0;
    let sampled = (last.0 as f64 - first.0 as f64) / 1000.0;
    let avg_between = sampled / (points.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg_between / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg_between / 2.0
    };
    result *= interval / sampled;
    if per_second {
        result /= (end as f64 - start as f64) / 1000.0;
    }
    Some(result)
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

/// Least-squares slope and intercept at `at` (ms), x in seconds relative to `at`.
fn linear_regression(points: &[(i64, f64)], at: i64) -> (f64, f64) {
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    let const_y = points.iter().all(|p| p.1 == points[0].1);
    for &(t, v) in points {
        let x = (t - at) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sxx += x * x;
    }
    if const_y {
        return (0.0, points[0].1);
    }
    let cov = sxy - sx * sy / n;
    let var = sxx - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// Kahan-compensated mean and variance, as Prometheus computes them.
fn mean_var(values: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let (mut count, mut mean, mut m2) = (0usize, 0.0, 0.0);
    for v in values {
        count += 1;
        let delta = v - mean;
        mean += delta / count as f64;
        m2 += delta * (v - mean);
    }
    (
        mean,
        if count > 0 {
            m2 / count as f64
        } else {
            f64::NAN
        },
        count,
    )
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

/// Apply a range-vector function to one series' window `(start, end]`.
/// `arg` is the scalar parameter where the function takes one.
pub fn over_range(
    name: &str,
    p: &[(i64, f64)],
    start: i64,
    end: i64,
    arg: f64,
) -> Result<Option<f64>, EvalError> {
    let vals = || p.iter().map(|x| x.1);
    Ok(match name {
        "rate" => extrapolated(p, start, end, true, true),
        "increase" => extrapolated(p, start, end, true, false),
        "delta" => extrapolated(p, start, end, false, false),
        "irate" => instant_rate(p, true),
        "idelta" => instant_rate(p, false),
        "deriv" => (p.len() >= 2).then(|| linear_regression(p, end).0),
        "predict_linear" => (p.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(p, end);
            slope * arg + intercept
        }),
        "changes" => (!p.is_empty()).then(|| {
            p.windows(2)
                .filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan()))
                .count() as f64
        }),
        "resets" => {
            (!p.is_empty()).then(|| p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
        }
        "avg_over_time" => (!p.is_empty()).then(|| mean_var(vals()).0),
        "sum_over_time" => (!p.is_empty()).then(|| vals().sum()),
        "count_over_time" => (!p.is_empty()).then_some(p.len() as f64),
        "min_over_time" => (!p.is_empty())
            .then(|| vals().fold(f64::NAN, |a, b| if a.is_nan() || b < a { b } else { a })),
        "max_over_time" => (!p.is_empty())
            .then(|| vals().fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a })),
        "last_over_time" => p.last().map(|x| x.1),
        "present_over_time" => (!p.is_empty()).then_some(1.0),
        "stddev_over_time" => (!p.is_empty()).then(|| mean_var(vals()).1.sqrt()),
        "stdvar_over_time" => (!p.is_empty()).then(|| mean_var(vals()).1),
        "quantile_over_time" => (!p.is_empty()).then(|| quantile(arg, vals().collect())),
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
/// (`upper bound`, cumulative count), as Prometheus' `bucketQuantile`.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets[buckets.len() - 1].0 != f64::INFINITY {
        return f64::NAN;
    }
    // Coalesce equal bounds, then force monotonic counts.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    // Bounds spelt differently (`+Inf`, `inf`) may have merged into one.
    let n = merged.len();
    if n < 2 {
        return f64::NAN;
    }
    let observations = merged[n - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged.iter().position(|x| x.1 >= rank).unwrap_or(n - 1);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
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
