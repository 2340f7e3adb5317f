//! Native histograms as Prometheus 3 models them: one sample holds a
//! whole distribution in exponential buckets.
//!
//! At schema `s` the buckets' boundaries are the powers of
//! `2^(2^-s)`; positive bucket `i` holds observations in
//! `(base^(i-1), base^i]`, negative bucket `i` those in
//! `[-base^i, -base^(i-1))`, and the zero bucket those in
//! `[-zero_threshold, zero_threshold]`. Counts are held as floats (a
//! rate or an average of histograms is not a whole number), buckets
//! sparsely as `(index, count)` in ascending index.
//!
//! With custom buckets ([`CUSTOM_SCHEMA`], Prometheus' NHCB, what a
//! classic histogram becomes when converted) the bounds are listed
//! instead: bucket `i` holds `(custom_values[i-1], custom_values[i]]`,
//! bucket 0 everything up to the first bound, the bucket past the last
//! bound everything above it; there is no zero bucket and no negative
//! side, and estimates interpolate linearly.
//!
//! The arithmetic (adding histograms of different schemas, the zero
//! bucket widening, counter resets) and the estimates read from a
//! histogram (`histogram_quantile`, `histogram_fraction`,
//! `histogram_stddev`) follow Prometheus 3, exponential interpolation
//! within a bucket included.

use std::sync::Arc;

/// The finest and coarsest standard schemas Prometheus accepts.
pub const MAX_SCHEMA: i32 = 8;
/// Most buckets one histogram may hold (both sides; Prometheus'
/// OpenTelemetry SDKs send at most 160 a side).
pub const MAX_BUCKETS: usize = 4096;
/// Largest bucket index magnitude accepted: at schema 8 it bounds values
/// at 2^(2^21 / 256) = 2^8192, past any float.
pub const MAX_INDEX: i32 = 1 << 21;
/// See [`MAX_SCHEMA`].
pub const MIN_SCHEMA: i32 = -4;
/// The schema of a histogram with custom bucket bounds (Prometheus'
/// `CustomBucketsSchema`).
pub const CUSTOM_SCHEMA: i32 = -53;

/// Is `c` a count an integer histogram can carry: whole, not negative,
/// below 2^53 (where floats stop holding every whole number)?
pub fn is_whole_count(c: f64) -> bool {
    c.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&c)
}

/// Why two histograms cannot be added or subtracted: one has
/// exponential buckets, the other custom ones (Prometheus'
/// `ErrHistogramsIncompatibleSchema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixedSchemas;

impl std::fmt::Display for MixedSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mix of histograms with exponential and custom buckets")
    }
}

/// What a histogram says about counter resets (remote write's
/// `ResetHint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterReset {
    /// Not known: detected by comparing with the previous sample.
    #[default]
    Unknown,
    /// A counter reset happened right before this sample.
    Reset,
    /// No counter reset since the previous sample.
    NotReset,
    /// A gauge histogram: it goes up and down; never a reset.
    Gauge,
}

impl CounterReset {
    /// Remote write's number for it.
    pub fn code(self) -> u8 {
        match self {
            CounterReset::Unknown => 0,
            CounterReset::Reset => 1,
            CounterReset::NotReset => 2,
            CounterReset::Gauge => 3,
        }
    }

    /// From remote write's number (an unknown one is `Unknown`).
    pub fn from_code(c: u64) -> Self {
        match c {
            1 => CounterReset::Reset,
            2 => CounterReset::NotReset,
            3 => CounterReset::Gauge,
            _ => CounterReset::Unknown,
        }
    }
}

/// One native histogram sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Bucket resolution, [`MIN_SCHEMA`]..=[`MAX_SCHEMA`], or
    /// [`CUSTOM_SCHEMA`].
    pub schema: i32,
    /// Width of the zero bucket on either side of zero.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Observations in all (NaN observations included).
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// Positive buckets, `(index, count)`, ascending index.
    pub positive: Vec<(i32, f64)>,
    /// Negative buckets, `(index, count)`, ascending index.
    pub negative: Vec<(i32, f64)>,
    /// What it says about counter resets.
    pub reset: CounterReset,
    /// Custom buckets' upper bounds, ascending, +Inf implied past the
    /// last ([`CUSTOM_SCHEMA`] only; empty otherwise). Shared by the
    /// samples of a series.
    pub custom_values: Arc<[f64]>,
}

/// One bucket with its bounds, for estimates and for the API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Observations in it.
    pub count: f64,
    /// Prometheus' boundary rule: 0 (lower, upper], 1 [lower, upper),
    /// 3 [lower, upper] (the zero bucket).
    pub rule: u8,
}

/// The upper boundary of bucket `index` at `schema` (Prometheus'
/// `getBound`): `2^(index * 2^-schema)`.
pub fn bound(index: i32, schema: i32) -> f64 {
    let schema = schema.clamp(MIN_SCHEMA, MAX_SCHEMA);
    if schema <= 0 {
        let exp = i64::from(index) << (-schema).clamp(0, 62);
        return ldexp(1.0, exp);
    }
    let per = 1i64 << schema;
    let (whole, frac) = (
        i64::from(index).div_euclid(per),
        i64::from(index).rem_euclid(per),
    );
    ldexp(2f64.powf(frac as f64 / per as f64), whole)
}

/// `x * 2^exp`, saturating to 0 or infinity.
fn ldexp(x: f64, exp: i64) -> f64 {
    let mut x = x;
    let mut e = exp.clamp(-2200, 2200);
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    x * 2f64.powi(e as i32)
}

/// The upper bound of custom bucket `index`: -Inf below the first,
/// +Inf past the last bound.
fn custom_bound(bounds: &[f64], index: i64) -> f64 {
    if index < 0 {
        return f64::NEG_INFINITY;
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| bounds.get(i))
        .copied()
        .unwrap_or(f64::INFINITY)
}

/// The bounds two custom-bucket histograms share (Prometheus'
/// `intersectCustomBucketBounds`).
fn common_bounds(a: &[f64], b: &[f64]) -> Arc<[f64]> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].total_cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    out.into()
}

/// The index a bucket at `from` schema falls in at the coarser `to`.
pub fn coarser_index(index: i32, from: i32, to: i32) -> i32 {
    let shift = from.saturating_sub(to).clamp(0, 31);
    (index.saturating_sub(1) >> shift).saturating_add(1)
}

/// Add `(index, count)` pairs into a sorted sparse list.
fn merge_into(into: &mut Vec<(i32, f64)>, add: impl IntoIterator<Item = (i32, f64)>, sign: f64) {
    let mut add: Vec<(i32, f64)> = add.into_iter().collect();
    add.sort_by_key(|(i, _)| *i);
    let mut out = Vec::with_capacity(into.len() + add.len());
    let (mut a, mut b) = (into.iter().peekable(), add.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, x.1 + sign * y.1));
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(**x);
                a.next();
            }
            (_, Some(y)) => {
                out.push((y.0, sign * y.1));
                b.next();
            }
            (Some(x), None) => {
                out.push(**x);
                a.next();
            }
            (None, None) => break,
        }
    }
    // Several source buckets may have landed on one index.
    out.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    *into = out;
}

impl Histogram {
    /// The same observations at the coarser `schema` (buckets merged).
    pub fn to_schema(&self, schema: i32) -> Histogram {
        if schema >= self.schema || self.is_custom() {
            return self.clone();
        }
        let mut out = Histogram {
            schema,
            positive: Vec::new(),
            negative: Vec::new(),
            ..self.clone()
        };
        let map = |b: &[(i32, f64)]| {
            b.iter()
                .map(|(i, c)| (coarser_index(*i, self.schema, schema), *c))
                .collect::<Vec<_>>()
        };
        merge_into(&mut out.positive, map(&self.positive), 1.0);
        merge_into(&mut out.negative, map(&self.negative), 1.0);
        out
    }

    /// Widen the zero bucket to at least `threshold`: buckets inside it
    /// move into it; one straddling it widens it to its own bound.
    fn widen_zero(&mut self, threshold: f64) {
        if threshold <= self.zero_threshold {
            return;
        }
        let mut t = threshold;
        // A bucket straddling the new threshold is taken in whole.
        for b in self.positive.iter().chain(self.negative.iter()) {
            let (lo, hi) = (
                bound(b.0.saturating_sub(1), self.schema),
                bound(b.0, self.schema),
            );
            if lo < t && hi > t {
                t = t.max(hi);
            }
        }
        let schema = self.schema;
        let mut moved = 0.0;
        for side in [&mut self.positive, &mut self.negative] {
            side.retain(|(i, c)| {
                if bound(*i, schema) <= t {
                    moved += c;
                    false
                } else {
                    true
                }
            });
        }
        self.zero_count += moved;
        self.zero_threshold = t;
    }

    /// Bring `self` and `other` to a common schema and zero bucket.
    fn reconcile(&self, other: &Histogram) -> (Histogram, Histogram) {
        let schema = self.schema.min(other.schema);
        let (mut a, mut b) = (self.to_schema(schema), other.to_schema(schema));
        let t = a.zero_threshold.max(b.zero_threshold);
        a.widen_zero(t);
        b.widen_zero(t);
        // Widening one may have widened it past the other.
        let t = a.zero_threshold.max(b.zero_threshold);
        a.widen_zero(t);
        b.widen_zero(t);
        (a, b)
    }

    /// A histogram with custom buckets at `bounds` holding `counts` from
    /// bucket 0 on (the last, past the bounds, may be left out), its
    /// count their total; buckets that hold nothing are left out.
    pub fn with_custom_buckets(bounds: &[f64], counts: &[f64], sum: f64) -> Histogram {
        Histogram {
            schema: CUSTOM_SCHEMA,
            count: counts.iter().sum(),
            sum,
            positive: (0..)
                .zip(counts.iter().copied())
                .filter(|(_, c)| *c != 0.0)
                .collect(),
            custom_values: bounds.into(),
            ..Histogram::default()
        }
    }

    /// A custom-bucket histogram as the classic histogram it holds: each
    /// bound, then +Inf, with the observations at or below it.
    pub fn cumulative(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(self.custom_values.len() + 1);
        let mut below = 0.0;
        let mut at = self.positive.iter().peekable();
        for (i, bound) in self
            .custom_values
            .iter()
            .chain([&f64::INFINITY])
            .enumerate()
        {
            while let Some((_, c)) = at.next_if(|(j, _)| usize::try_from(*j).is_ok_and(|j| j <= i))
            {
                below += c;
            }
            out.push((*bound, below));
        }
        out
    }

    /// Does it have custom buckets ([`CUSTOM_SCHEMA`])?
    pub fn is_custom(&self) -> bool {
        self.schema == CUSTOM_SCHEMA
    }

    /// Both have custom buckets, with different bounds: adding them
    /// reconciles both onto the bounds they share (Prometheus' info
    /// "mismatched custom buckets were reconciled").
    pub fn bounds_differ(&self, other: &Histogram) -> bool {
        self.is_custom() && other.is_custom() && self.custom_values != other.custom_values
    }

    /// The same observations in fewer custom buckets: each bucket into
    /// the first of `bounds` at or above its own upper bound (Prometheus'
    /// `addCustomBucketsWithMismatches`). `bounds` must be a subset of
    /// the histogram's own.
    fn onto_bounds(&self, bounds: &Arc<[f64]>) -> Histogram {
        let mut out = Histogram {
            positive: Vec::new(),
            custom_values: bounds.clone(),
            ..self.clone()
        };
        let moved: Vec<(i32, f64)> = self
            .positive
            .iter()
            .map(|(i, c)| {
                let upper = custom_bound(&self.custom_values, i64::from(*i));
                let j = bounds.partition_point(|b| *b < upper);
                (i32::try_from(j).unwrap_or(i32::MAX), *c)
            })
            .collect();
        merge_into(&mut out.positive, moved, 1.0);
        out
    }

    /// Bring two histograms to one bucket layout: a common schema and
    /// zero bucket, or common custom bounds.
    fn layout_with(&self, other: &Histogram) -> Result<(Histogram, Histogram), MixedSchemas> {
        match (self.is_custom(), other.is_custom()) {
            (false, false) => Ok(self.reconcile(other)),
            (true, true) if self.custom_values == other.custom_values => {
                Ok((self.clone(), other.clone()))
            }
            (true, true) => {
                let common = common_bounds(&self.custom_values, &other.custom_values);
                Ok((self.onto_bounds(&common), other.onto_bounds(&common)))
            }
            _ => Err(MixedSchemas),
        }
    }

    /// `self + other` (`sign` 1) or `self - other` (`sign` -1).
    fn combine(&self, other: &Histogram, sign: f64) -> Result<Histogram, MixedSchemas> {
        let (mut a, b) = self.layout_with(other)?;
        a.count += sign * b.count;
        a.sum += sign * b.sum;
        a.zero_count += sign * b.zero_count;
        merge_into(&mut a.positive, b.positive, sign);
        merge_into(&mut a.negative, b.negative, sign);
        Ok(a)
    }

    /// `self + other`; custom bounds that differ are reconciled onto
    /// those both have.
    pub fn add(&self, other: &Histogram) -> Result<Histogram, MixedSchemas> {
        let mut h = self.combine(other, 1.0)?;
        if self.reset == CounterReset::Gauge || other.reset == CounterReset::Gauge {
            h.reset = CounterReset::Gauge;
        }
        Ok(h)
    }

    /// `self - other` (a gauge histogram), as [`Self::add`].
    pub fn sub(&self, other: &Histogram) -> Result<Histogram, MixedSchemas> {
        let mut h = self.combine(other, -1.0)?;
        h.reset = CounterReset::Gauge;
        Ok(h)
    }

    /// Every count and the sum times `f`.
    pub fn scale(&self, f: f64) -> Histogram {
        let mut h = self.clone();
        h.count *= f;
        h.sum *= f;
        h.zero_count *= f;
        for (_, c) in h.positive.iter_mut().chain(h.negative.iter_mut()) {
            *c *= f;
        }
        h
    }

    /// Why Keel cannot take this histogram as sent, if it cannot: a
    /// schema outside -4..=8, more than [`MAX_BUCKETS`] buckets, an index
    /// past [`MAX_INDEX`], a negative or NaN count, or buckets out of
    /// order. (A count below its buckets' total is refused only for
    /// integer histograms, where remote write decodes them, as
    /// Prometheus does: float ones may be off by rounding.)
    pub fn validate(&self) -> Result<(), String> {
        if self.is_custom() {
            self.validate_custom()?;
        } else if !self.custom_values.is_empty() {
            return Err(format!(
                "native histogram with exponential schema {} has custom bucket bounds",
                self.schema
            ));
        } else if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&self.schema) {
            return Err(format!(
                "native histogram schema {} is outside {MIN_SCHEMA}..={MAX_SCHEMA}",
                self.schema
            ));
        }
        let n = self.positive.len() + self.negative.len();
        if n > MAX_BUCKETS {
            return Err(format!(
                "native histogram with {n} buckets, more than {MAX_BUCKETS}"
            ));
        }
        for (side, b) in [("positive", &self.positive), ("negative", &self.negative)] {
            if b.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(format!("native histogram {side} buckets out of order"));
            }
            for (i, c) in b.iter() {
                if i.unsigned_abs() > MAX_INDEX as u32 {
                    return Err(format!(
                        "native histogram bucket index {i} is past ±{MAX_INDEX}"
                    ));
                }
                if c.is_nan() || *c < 0.0 {
                    return Err(format!("native histogram {side} bucket {i} has count {c}"));
                }
            }
        }
        if [self.count, self.zero_count]
            .iter()
            .any(|c| c.is_nan() || *c < 0.0)
        {
            return Err(format!(
                "native histogram count {} or zero count {} is negative or NaN",
                self.count, self.zero_count
            ));
        }
        Ok(())
    }

    /// Custom buckets as Prometheus' `checkHistogramCustomBounds` takes
    /// them: bounds strictly ascending, none NaN, the last not +Inf (it
    /// is implied); bucket indices within the bounds; no zero bucket and
    /// no negative buckets.
    fn validate_custom(&self) -> Result<(), String> {
        let cv = &self.custom_values;
        if cv.len() >= MAX_BUCKETS {
            return Err(format!(
                "custom buckets: {} bounds, more than {}",
                cv.len(),
                MAX_BUCKETS - 1
            ));
        }
        if cv.iter().any(|b| b.is_nan()) {
            return Err("custom buckets: a bound is NaN".into());
        }
        if let Some(w) = cv.windows(2).find(|w| w[1] <= w[0]) {
            return Err(format!(
                "custom buckets: bounds must be strictly ascending ({} then {})",
                w[0], w[1]
            ));
        }
        if cv.last() == Some(&f64::INFINITY) {
            return Err(
                "custom buckets: the last +Inf bound must not be given (it is implied)".into(),
            );
        }
        if let Some((i, _)) = self
            .positive
            .iter()
            .find(|(i, _)| *i < 0 || usize::try_from(*i).is_ok_and(|i| i > cv.len()))
        {
            return Err(format!(
                "custom buckets: bucket {i} is past the {} bounds given",
                cv.len()
            ));
        }
        if self.zero_count != 0.0 || self.zero_threshold != 0.0 || !self.negative.is_empty() {
            return Err(
                "custom buckets: a histogram with custom buckets has no zero bucket and no negative buckets"
                    .into(),
            );
        }
        Ok(())
    }

    /// The observations its buckets hold (the zero bucket's included).
    pub fn bucket_total(&self) -> f64 {
        self.zero_count
            + self
                .positive
                .iter()
                .chain(&self.negative)
                .map(|(_, c)| c)
                .sum::<f64>()
    }

    /// Drop buckets that hold nothing.
    pub fn compact(mut self) -> Histogram {
        self.positive.retain(|(_, c)| *c != 0.0);
        self.negative.retain(|(_, c)| *c != 0.0);
        self
    }

    /// Did the counter reset between `prev` and `self`? As Prometheus'
    /// `DetectReset`: said so by the hint, a coarser-to-finer schema
    /// change, a narrower zero bucket, or any count going down.
    pub fn is_reset_after(&self, prev: &Histogram) -> bool {
        match self.reset {
            CounterReset::Reset => return true,
            CounterReset::NotReset => return false,
            CounterReset::Unknown | CounterReset::Gauge => {}
        }
        if self.is_custom() != prev.is_custom() || self.count < prev.count {
            return true;
        }
        if !self.is_custom()
            && (self.schema > prev.schema || self.zero_threshold < prev.zero_threshold)
        {
            return true;
        }
        let Ok((cur, old)) = self.layout_with(prev) else {
            return true;
        };
        if cur.zero_count < old.zero_count {
            return true;
        }
        let down = |now: &[(i32, f64)], then: &[(i32, f64)]| {
            then.iter().any(|(i, c)| {
                let n = now
                    .binary_search_by_key(i, |(j, _)| *j)
                    .map(|k| now[k].1)
                    .unwrap_or(0.0);
                n < *c
            })
        };
        down(&cur.positive, &old.positive) || down(&cur.negative, &old.negative)
    }

    /// Every bucket with observations, lowest first: negative buckets,
    /// the zero bucket, positive buckets.
    pub fn buckets(&self) -> Vec<Bucket> {
        if self.is_custom() {
            // Bucket 0 is closed below ([-Inf, first bound]), as
            // Prometheus writes it.
            return self
                .positive
                .iter()
                .filter(|(_, c)| *c != 0.0)
                .map(|(i, c)| Bucket {
                    lower: custom_bound(&self.custom_values, i64::from(*i) - 1),
                    upper: custom_bound(&self.custom_values, i64::from(*i)),
                    count: *c,
                    rule: if *i == 0 { 3 } else { 0 },
                })
                .collect();
        }
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        for (i, c) in self.negative.iter().rev() {
            out.push(Bucket {
                lower: -bound(*i, self.schema),
                upper: -bound(i.saturating_sub(1), self.schema),
                count: *c,
                rule: 1,
            });
        }
        if self.zero_count != 0.0 {
            out.push(Bucket {
                lower: -self.zero_threshold,
                upper: self.zero_threshold,
                count: self.zero_count,
                rule: 3,
            });
        }
        for (i, c) in &self.positive {
            out.push(Bucket {
                lower: bound(i.saturating_sub(1), self.schema),
                upper: bound(*i, self.schema),
                count: *c,
                rule: 0,
            });
        }
        out.retain(|b| b.count != 0.0);
        out
    }

    /// The zero bucket's bounds as estimates see them: 0 is the lower
    /// bound when only positive buckets exist, the upper when only
    /// negative ones do.
    fn estimate_bounds(&self, b: &Bucket) -> (f64, f64) {
        let (mut lo, mut hi) = (b.lower, b.upper);
        if lo < 0.0 && hi > 0.0 {
            if self.negative.is_empty() && !self.positive.is_empty() {
                lo = 0.0;
            } else if self.positive.is_empty() && !self.negative.is_empty() {
                hi = 0.0;
            }
        }
        (lo, hi)
    }

    /// `histogram_quantile(q, h)`: linear within the zero bucket,
    /// exponential within the others.
    pub fn quantile(&self, q: f64) -> f64 {
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        if self.count == 0.0 || q.is_nan() {
            return f64::NAN;
        }
        let mut buckets = self.buckets();
        let forward = self.sum.is_nan() || q < 0.5;
        let mut rank = if forward {
            q * self.count
        } else {
            buckets.reverse();
            (1.0 - q) * self.count
        };
        let mut count = 0.0;
        let mut at = None;
        for b in &buckets {
            count += b.count;
            at = Some(*b);
            if count >= rank {
                break;
            }
        }
        let Some(b) = at else {
            return f64::NAN;
        };
        // Custom buckets keep their bounds (no zero-bucket rule, as in
        // Prometheus); the open-ended ones: the first from 0 when its
        // bound is above 0, the last at its lower bound.
        let (mut lo, hi) = if self.is_custom() {
            (b.lower, b.upper)
        } else {
            self.estimate_bounds(&b)
        };
        if self.is_custom() {
            if lo == f64::NEG_INFINITY {
                if hi <= 0.0 {
                    return hi;
                }
                lo = 0.0;
            } else if hi == f64::INFINITY {
                return lo;
            }
        }
        count = count.min(self.count);
        if count < rank {
            return hi;
        }
        if forward {
            rank -= count - b.count;
        } else {
            rank = count - rank;
        }
        interpolate(lo, hi, rank / b.count, self.is_custom())
    }

    /// `histogram_fraction(lower, upper, h)`: the share of observations
    /// between the bounds, interpolated as [`Self::quantile`] does.
    pub fn fraction(&self, lower: f64, upper: f64) -> f64 {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return f64::NAN;
        }
        if lower >= upper {
            return 0.0;
        }
        let (mut rank, mut lower_rank, mut upper_rank) = (0.0, None, None);
        for b in self.buckets() {
            let (lo, hi) = self.estimate_bounds(&b);
            if lower_rank.is_none() && lo >= lower {
                lower_rank = Some(rank);
            }
            if upper_rank.is_none() && lo >= upper {
                upper_rank = Some(rank);
            }
            let linear = self.is_custom();
            if lower_rank.is_none() && lo < lower && hi > lower {
                lower_rank = Some(rank + b.count * position(lo, hi, lower, linear));
            }
            if upper_rank.is_none() && lo < upper && hi > upper {
                upper_rank = Some(rank + b.count * position(lo, hi, upper, linear));
            }
            if lower_rank.is_some() && upper_rank.is_some() {
                break;
            }
            rank += b.count;
        }
        let cap = |r: Option<f64>| r.filter(|r| *r <= self.count).unwrap_or(self.count);
        (cap(upper_rank) - cap(lower_rank)) / self.count
    }

    /// `histogram_stdvar(h)`: the variance of the observations, each
    /// bucket's taken at its geometric middle (0 for the zero bucket).
    pub fn variance(&self) -> f64 {
        let mean = self.sum / self.count;
        let (mut v, mut c) = (0.0, 0.0);
        for b in self.buckets() {
            let mid = if self.is_custom() {
                (b.lower + b.upper) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let m = (b.lower * b.upper).sqrt();
                if b.upper < 0.0 { -m } else { m }
            };
            let d = mid - mean;
            (v, c) = crate::kahan_inc(b.count * d * d, v, c);
        }
        (v + c) / self.count
    }

    /// Bit for bit the same (NaN sums included), buckets that hold
    /// nothing aside.
    pub fn identical(&self, other: &Histogram) -> bool {
        let bits = |b: &[(i32, f64)]| -> Vec<(i32, u64)> {
            b.iter()
                .filter(|(_, c)| *c != 0.0)
                .map(|(i, c)| (*i, c.to_bits()))
                .collect()
        };
        self.schema == other.schema
            && self.custom_values == other.custom_values
            && self.reset == other.reset
            && [self.zero_threshold, self.zero_count, self.count, self.sum].map(f64::to_bits)
                == [
                    other.zero_threshold,
                    other.zero_count,
                    other.count,
                    other.sum,
                ]
                .map(f64::to_bits)
            && bits(&self.positive) == bits(&other.positive)
            && bits(&self.negative) == bits(&other.negative)
    }

    /// Is it a staleness marker (its sum the stale NaN)?
    pub fn is_stale(&self) -> bool {
        self.sum.to_bits() == STALE_NAN_BITS
    }
}

const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The value a share `f` of the way through `(lo, hi]`: linear across
/// zero and in custom buckets (`linear`), exponential within an
/// exponential bucket of one sign.
fn interpolate(lo: f64, hi: f64, f: f64, linear: bool) -> f64 {
    if linear || lo <= 0.0 && hi >= 0.0 || !lo.is_finite() || !hi.is_finite() {
        return lo + (hi - lo) * f;
    }
    let (ll, lh) = (lo.abs().log2(), hi.abs().log2());
    if lo > 0.0 {
        (ll + (lh - ll) * f).exp2()
    } else {
        -(lh + (ll - lh) * (1.0 - f)).exp2()
    }
}

/// How far through `(lo, hi)` the value `v` lies (the inverse of
/// [`interpolate`]).
fn position(lo: f64, hi: f64, v: f64, linear: bool) -> f64 {
    if lo == f64::NEG_INFINITY {
        // A custom first bucket below zero: all of it lies below `v`.
        return 1.0;
    }
    if linear || lo <= 0.0 && hi >= 0.0 || !lo.is_finite() || !hi.is_finite() {
        return (v - lo) / (hi - lo);
    }
    let (ll, lh, lv) = (lo.abs().log2(), hi.abs().log2(), v.abs().log2());
    if lo > 0.0 {
        (lv - ll) / (lh - ll)
    } else {
        (ll - lv) / (ll - lh)
    }
}

/// Buckets from remote write's spans and counts: each span's offset is
/// the gap after the previous span (the first's is its start index);
/// `counts` follow the spans in order. `None` when they disagree in
/// length.
pub fn from_spans(spans: &[(i32, u32)], counts: &[f64]) -> Option<Vec<(i32, f64)>> {
    let mut out = Vec::with_capacity(counts.len());
    let mut idx: i64 = 0;
    let mut k = 0usize;
    for (n, (offset, len)) in spans.iter().enumerate() {
        idx += i64::from(*offset);
        if n > 0 && *offset < 0 {
            return None;
        }
        for _ in 0..*len {
            let c = *counts.get(k)?;
            let i = i32::try_from(idx).ok()?;
            out.push((i, c));
            k += 1;
            idx += 1;
        }
    }
    (k == counts.len()).then_some(out)
}

/// Delta-encoded integer counts (remote write's `positive_deltas`) as
/// absolute counts.
pub fn undelta(deltas: &[i64]) -> Vec<f64> {
    let mut c: i64 = 0;
    deltas
        .iter()
        .map(|d| {
            c = c.wrapping_add(*d);
            c as f64
        })
        .collect()
}

mod notation;

#[cfg(test)]
mod tests;
