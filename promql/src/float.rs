//! Float arithmetic as Prometheus 3 does it: Kahan–Neumaier compensated
//! sums, a mean that switches to incremental form before it overflows,
//! and Go's `math.Max`/`math.Min` (which, unlike Rust's, keep a NaN).

pub use keel_series::kahan_inc;

/// The compensated sum of `values` (`sum`, `sum_over_time`).
pub fn kahan_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    sum + c
}

/// The mean of `values` (`avg`, `avg_over_time`): see [`Mean`]. NaN for
/// no values.
pub fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut m = Mean::default();
    for v in values {
        m.push(v);
    }
    m.value()
}

/// A running mean as Prometheus 3 takes it: a compensated sum while it
/// stays finite, then an incremental mean, so large values give their
/// mean rather than ±Inf.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mean {
    sum: f64,
    c: f64,
    count: f64,
    avg: f64,
    incremental: bool,
}

impl Mean {
    /// Take one more value.
    pub fn push(&mut self, v: f64) {
        self.count += 1.0;
        let count = self.count;
        if !self.incremental {
            let (s, k) = kahan_inc(v, self.sum, self.c);
            // The first value is taken as the sum even when infinite.
            if count == 1.0 || !s.is_infinite() {
                (self.sum, self.c) = (s, k);
                return;
            }
            self.incremental = true;
            self.avg = self.sum / (count - 1.0);
            self.c /= count - 1.0;
        }
        if self.avg.is_infinite() {
            // Inf plus an Inf of the same sign or a finite value stays
            // Inf (subtracting it below would make NaN).
            if v.is_infinite() && (self.avg > 0.0) == (v > 0.0) || v.is_finite() {
                return;
            }
        }
        let corrected = self.avg + self.c;
        (self.avg, self.c) = kahan_inc(v / count - corrected / count, self.avg, self.c);
    }

    /// The mean so far (NaN for none).
    pub fn value(&self) -> f64 {
        if self.count == 0.0 {
            f64::NAN
        } else if self.incremental {
            self.avg + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// Population variance of `values` with compensated running sums
/// (`stdvar_over_time`; `stddev_over_time` is its root).
pub fn variance(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut count, mut avg, mut c_avg, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (avg + c_avg);
        (avg, c_avg) = kahan_inc(delta / count, avg, c_avg);
        (aux, c_aux) = kahan_inc(delta * (v - (avg + c_avg)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Go's `math.Max`: NaN if either is NaN, +0 over -0.
pub fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN if either is NaN, -0 under +0.
pub fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sums_keep_what_naive_sums_lose() {
        assert_eq!(kahan_sum([1.0, 1e100, 1.0, -1e100]), 2.0);
        assert_eq!(kahan_sum([f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(kahan_sum([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }

    #[test]
    fn the_mean_of_huge_values_does_not_overflow() {
        assert_eq!(mean([f64::MAX, f64::MAX]), f64::MAX);
        let m = mean([f64::MAX, f64::MAX / 2.0, 0.0]);
        assert!((m - f64::MAX / 2.0).abs() / (f64::MAX / 2.0) < 1e-12, "{m}");
        assert_eq!(
            mean([1.0, 2.0, 3.0, f64::NEG_INFINITY, f64::NEG_INFINITY]),
            f64::NEG_INFINITY
        );
        assert!(mean([f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(mean(std::iter::empty()).is_nan());
        assert_eq!(mean([1.0, 2.0, 4.0]), 7.0 / 3.0);
    }

    #[test]
    fn go_min_and_max_keep_nan() {
        assert!(go_max(0.0, f64::NAN).is_nan());
        assert!(go_min(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(-0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(go_min(0.0, -0.0).to_bits(), (-0.0f64).to_bits());
        assert_eq!(go_max(1.0, 2.0), 2.0);
    }

    #[test]
    fn variance_is_population_variance() {
        assert_eq!(variance([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 4.0);
    }
}
