//! A chunk of one series' native histogram samples, columnar.
//!
//! Samples in a chunk share a schema and zero threshold; their buckets
//! are laid out once for the chunk (the union of indices any sample
//! uses, a missing bucket counting 0). The timestamps, counts, sums and
//! zero counts are each encoded by [`crate::packed`] (decimal
//! frame-of-reference packing, or Gorilla where that is smaller). The
//! buckets' counts over time, when all are whole numbers (as scraped and
//! sent histograms are), are Rice-coded deltas in one bit stream, each
//! bucket with its own parameter ([`put_rice`]): a bucket that gains a
//! few observations a scrape costs two or three bits a sample, one that
//! gains none one bit — or, when that is shorter, sample by sample only
//! the buckets that changed ([`put_sparse`]): with a few observations a
//! scrape spread over a hundred buckets, most gain nothing, and a sample
//! costs a few bits a changed bucket instead of one bit a bucket.
//! Otherwise (rates, averages) each bucket is a packed column.
//!
//! Layout: sample count (varint), schema (zigzag varint), zero threshold
//! (8 bytes LE), for custom buckets (schema -53) their bounds (count,
//! varint, then each as 8 bytes LE: written once, as Prometheus writes
//! them in a chunk's header), positive then negative bucket indices (count, first as
//! zigzag varint, then gaps as varints), reset hints (count, then sample
//! position and code), the four columns (each its byte length, varint,
//! and its packed bytes), then a tag byte (0 packed bucket columns, 1
//! Rice-coded columns, 2 Rice-coded changed buckets) and the buckets.

use std::sync::Arc;

use keel_series::histogram::{CounterReset, Histogram};
use keel_series::varint::{put, take, unzigzag, zigzag};

/// Most samples a chunk holds (as Prometheus' chunks).
pub const MAX_SAMPLES: usize = 120;

fn put_indices(out: &mut Vec<u8>, idx: &[i32]) {
    put(out, idx.len() as u64);
    let mut prev = 0i64;
    for (k, i) in idx.iter().enumerate() {
        let i = i64::from(*i);
        if k == 0 {
            put(out, zigzag(i));
        } else {
            put(out, (i - prev) as u64);
        }
        prev = i;
    }
}

fn take_indices(b: &mut &[u8]) -> Option<Vec<i32>> {
    let n = usize::try_from(take(b)?).ok()?;
    if n > b.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut prev = 0i64;
    for k in 0..n {
        let i = if k == 0 {
            unzigzag(take(b)?)
        } else {
            prev.checked_add(i64::try_from(take(b)?).ok()?)?
        };
        out.push(i32::try_from(i).ok()?);
        prev = i;
    }
    Some(out)
}

fn put_column(out: &mut Vec<u8>, values: impl Iterator<Item = f64>) {
    let col: Vec<(i64, f64)> = values.enumerate().map(|(k, v)| (k as i64, v)).collect();
    let bytes = crate::packed::encode(&col);
    put(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
}

fn take_column(b: &mut &[u8], n: usize) -> Option<Vec<f64>> {
    let len = usize::try_from(take(b)?).ok()?;
    let (col, rest) = b.split_at_checked(len)?;
    *b = rest;
    let col = crate::packed::decode(col)?;
    (col.len() == n).then(|| col.into_iter().map(|(_, v)| v).collect())
}

/// The union of bucket indices `side` picks out of `samples`.
fn layout(samples: &[(i64, Histogram)], side: fn(&Histogram) -> &[(i32, f64)]) -> Vec<i32> {
    let mut idx: Vec<i32> = samples
        .iter()
        .flat_map(|(_, h)| side(h).iter().map(|(i, _)| *i))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    idx
}

/// Widest range of bucket indices a side of a chunk of two or more
/// samples spans, so its layout (and what decoding allocates) stays
/// bounded: a sample that would widen it past this starts a new chunk.
pub const MAX_SPAN: i64 = 8192;

/// What a chunk being filled holds, to tell whether a sample may join
/// it: at most [`MAX_SAMPLES`], one schema and zero threshold (and
/// custom bounds), each side's indices within [`MAX_SPAN`].
#[derive(Debug, Default, Clone)]
pub struct Filling {
    n: usize,
    key: (i32, u64),
    bounds: Arc<[f64]>,
    span: [(i64, i64); 2],
}

impl Filling {
    /// Whether `h` may join.
    pub fn admits(&self, h: &Histogram) -> bool {
        if self.n == 0 {
            return true;
        }
        if self.n >= MAX_SAMPLES
            || self.key != (h.schema, h.zero_threshold.to_bits())
            || !(Arc::ptr_eq(&self.bounds, &h.custom_values) || self.bounds == h.custom_values)
        {
            return false;
        }
        [&h.positive, &h.negative]
            .iter()
            .zip(self.span)
            .all(|(b, (lo, hi))| match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    let (lo, hi) = (lo.min(i64::from(f.0)), hi.max(i64::from(l.0)));
                    lo > hi || hi - lo < MAX_SPAN
                }
                _ => true,
            })
    }

    /// Count `h` in (after [`Self::admits`], or to start anew).
    pub fn add(&mut self, h: &Histogram) {
        if self.n == 0 {
            *self = Filling {
                n: 0,
                key: (h.schema, h.zero_threshold.to_bits()),
                bounds: h.custom_values.clone(),
                span: [(i64::MAX, i64::MIN); 2],
            };
        }
        self.n += 1;
        for (b, span) in [&h.positive, &h.negative].iter().zip(self.span.iter_mut()) {
            if let (Some(f), Some(l)) = (b.first(), b.last()) {
                span.0 = span.0.min(i64::from(f.0));
                span.1 = span.1.max(i64::from(l.0));
            }
        }
    }
}

/// `samples` cut into the runs that make chunks (see [`Filling`]).
pub fn runs(samples: &[(i64, Histogram)]) -> Vec<&[(i64, Histogram)]> {
    let mut out = Vec::new();
    let (mut start, mut filling) = (0, Filling::default());
    for (k, (_, h)) in samples.iter().enumerate() {
        if !filling.admits(h) {
            out.push(&samples[start..k]);
            start = k;
            filling = Filling::default();
        }
        filling.add(h);
    }
    if start < samples.len() {
        out.push(&samples[start..]);
    }
    out
}

/// Encode samples (time-ordered, sharing a schema and zero threshold,
/// and custom bounds: one [`runs`] run).
pub fn encode(samples: &[(i64, Histogram)]) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, samples.len() as u64);
    let Some((_, first)) = samples.first() else {
        return out;
    };
    put(&mut out, zigzag(i64::from(first.schema)));
    out.extend_from_slice(&first.zero_threshold.to_le_bytes());
    if first.is_custom() {
        put(&mut out, first.custom_values.len() as u64);
        for b in first.custom_values.iter() {
            out.extend_from_slice(&b.to_le_bytes());
        }
    }
    let pos = layout(samples, |h| &h.positive);
    let neg = layout(samples, |h| &h.negative);
    put_indices(&mut out, &pos);
    put_indices(&mut out, &neg);
    let hints: Vec<(usize, u8)> = samples
        .iter()
        .enumerate()
        .filter(|(_, (_, h))| h.reset != CounterReset::Unknown)
        .map(|(k, (_, h))| (k, h.reset.code()))
        .collect();
    put(&mut out, hints.len() as u64);
    for (k, c) in hints {
        put(&mut out, k as u64);
        out.push(c);
    }
    put_column(&mut out, samples.iter().map(|(t, _)| *t as f64));
    put_column(&mut out, samples.iter().map(|(_, h)| h.count));
    put_column(&mut out, samples.iter().map(|(_, h)| h.sum));
    put_column(&mut out, samples.iter().map(|(_, h)| h.zero_count));
    // Every bucket's counts over time, positive buckets then negative.
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(pos.len() + neg.len());
    for (idx, positive) in [(&pos, true), (&neg, false)] {
        let mut cols = vec![vec![0.0; samples.len()]; idx.len()];
        for (k, (_, h)) in samples.iter().enumerate() {
            let side = if positive { &h.positive } else { &h.negative };
            for (i, c) in side {
                if let Ok(j) = idx.binary_search(i) {
                    cols[j][k] = *c;
                }
            }
        }
        columns.extend(cols);
    }
    let whole = |c: &f64| c.fract() == 0.0 && c.abs() < MAX_WHOLE;
    if columns.iter().all(|col| col.iter().all(whole)) {
        let (mut by_column, mut by_sample) = (Vec::new(), Vec::new());
        put_rice(&mut by_column, &columns);
        put_sparse(&mut by_sample, &columns);
        if by_sample.len() < by_column.len() {
            out.push(BUCKETS_SPARSE);
            out.extend(by_sample);
        } else {
            out.push(BUCKETS_RICE);
            out.extend(by_column);
        }
    } else {
        out.push(BUCKETS_PACKED);
        for col in columns {
            put_column(&mut out, col.into_iter());
        }
    }
    out
}

/// Bucket columns each packed as a float series.
const BUCKETS_PACKED: u8 = 0;
/// Bucket columns of whole numbers as Rice-coded deltas.
const BUCKETS_RICE: u8 = 1;
/// Whole-number buckets, sample by sample, only those that changed.
const BUCKETS_SPARSE: u8 = 2;
/// Whole numbers below this are exact as floats (2^53).
const MAX_WHOLE: f64 = 9_007_199_254_740_992.0;
/// A quotient this long is written as 64 raw bits instead.
const RICE_ESCAPE: u64 = 32;

/// Whole-number bucket columns: each column's first count (zigzag
/// varint), then one bit stream: per column whether it holds deltas (0)
/// or deltas of deltas (1), whichever is shorter, its Rice parameter `k`
/// (4 bits), and each following sample's delta (or delta of delta),
/// zigzagged, as `q = d >> k` one-bits, a zero bit and `d`'s low `k`
/// bits (`q` of 32 or more: 32 one-bits and the 64 raw bits).
fn put_rice(out: &mut Vec<u8>, columns: &[Vec<f64>]) {
    let deltas: Vec<Vec<u64>> = columns
        .iter()
        .map(|col| {
            col.windows(2)
                .map(|w| zigzag((w[1] as i64).wrapping_sub(w[0] as i64)))
                .collect()
        })
        .collect();
    for col in columns {
        put(out, zigzag(col.first().copied().unwrap_or(0.0) as i64));
    }
    let mut bits = crate::packed::BitPacker::new(out);
    for d in &deltas {
        // Deltas of deltas for a bucket that grows steadily (each then
        // near zero), plain deltas for one that grows by chance.
        let dod: Vec<u64> = std::iter::once(0)
            .chain(d.iter().map(|u| unzigzag(*u)))
            .collect::<Vec<i64>>()
            .windows(2)
            .map(|w| zigzag(w[1].wrapping_sub(w[0])))
            .collect();
        let ((plain, kp), (second, kd)) = (best_rice(d), best_rice(&dod));
        let (mode, k, d) = if second < plain {
            (1, kd, &dod)
        } else {
            (0, kp, d)
        };
        bits.put(mode, 1);
        bits.put(u64::from(k), 4);
        for u in d {
            put_rice_value(&mut bits, *u, k);
        }
    }
    bits.finish();
}

/// Bits `u` takes Rice-coded with parameter `k`.
fn rice_cost(u: u64, k: u32) -> u64 {
    match u >> k {
        q if q >= RICE_ESCAPE => RICE_ESCAPE + 64,
        q => q + 1 + u64::from(k),
    }
}

/// The parameter that codes `xs` shortest, and their length with it.
fn best_rice(xs: &[u64]) -> (u64, u32) {
    (0..16u32)
        .map(|k| (xs.iter().map(|u| rice_cost(*u, k)).sum(), k))
        .min()
        .unwrap_or((0, 0))
}

/// `u` Rice-coded: `q = u >> k` one-bits, a zero bit, `u`'s low `k` bits
/// (`q` of 32 or more: 32 one-bits and the 64 raw bits).
fn put_rice_value(bits: &mut crate::packed::BitPacker<'_>, u: u64, k: u32) {
    let q = u >> k;
    if q >= RICE_ESCAPE {
        bits.put(u64::MAX, RICE_ESCAPE as u32);
        bits.put(u, 64);
    } else {
        // q one-bits (at most 31), then the terminating zero.
        bits.put((1u64 << q) - 1, q as u32 + 1);
        bits.put(u, k);
    }
}

/// Read one [`put_rice_value`].
fn take_rice_value(bits: &mut Bits<'_>, k: u32) -> Option<u64> {
    let mut q = 0u64;
    while q < RICE_ESCAPE && bits.bit()? == 1 {
        q += 1;
    }
    if q >= RICE_ESCAPE {
        bits.take(64)
    } else {
        Some((q << k) | bits.take(k)?)
    }
}

/// Whole-number bucket columns sample by sample: each column's first
/// count (zigzag varint), then one bit stream: three Rice parameters (4
/// bits each: changed-bucket counts, gaps, changes), and for each
/// following sample how many buckets changed, then for each of them the
/// buckets skipped since the previous one and its change (zigzagged,
/// less one: it is not zero).
fn put_sparse(out: &mut Vec<u8>, columns: &[Vec<f64>]) {
    for col in columns {
        put(out, zigzag(col.first().copied().unwrap_or(0.0) as i64));
    }
    let n = columns.first().map_or(0, Vec::len);
    let (mut changed, mut gaps, mut changes) = (Vec::new(), Vec::new(), Vec::new());
    for k in 1..n {
        let mut m = 0u64;
        let mut last = 0usize;
        for (j, col) in columns.iter().enumerate() {
            let d = (col[k] as i64).wrapping_sub(col[k - 1] as i64);
            if d != 0 {
                gaps.push((j - last) as u64);
                changes.push(zigzag(d) - 1);
                last = j + 1;
                m += 1;
            }
        }
        changed.push(m);
    }
    let (km, kg, kc) = (
        best_rice(&changed).1,
        best_rice(&gaps).1,
        best_rice(&changes).1,
    );
    let mut bits = crate::packed::BitPacker::new(out);
    for k in [km, kg, kc] {
        bits.put(u64::from(k), 4);
    }
    let (mut g, mut c) = (gaps.iter(), changes.iter());
    for m in changed {
        put_rice_value(&mut bits, m, km);
        for _ in 0..m {
            put_rice_value(&mut bits, g.next().copied().unwrap_or(0), kg);
            put_rice_value(&mut bits, c.next().copied().unwrap_or(0), kc);
        }
    }
    bits.finish();
}

/// Read [`put_sparse`]'s `columns` columns of `n` samples.
fn take_sparse(b: &mut &[u8], columns: usize, n: usize) -> Option<Vec<Vec<f64>>> {
    let mut now = Vec::with_capacity(columns.min(b.len()));
    for _ in 0..columns {
        now.push(unzigzag(take(b)?));
    }
    let mut out: Vec<Vec<f64>> = now
        .iter()
        .map(|v| {
            let mut col = Vec::with_capacity(n.min(MAX_SAMPLES));
            col.push(*v as f64);
            col
        })
        .collect();
    let mut bits = Bits { b, at: 0 };
    let (km, kg, kc) = (
        bits.take(4)? as u32,
        bits.take(4)? as u32,
        bits.take(4)? as u32,
    );
    for _ in 1..n {
        let m = take_rice_value(&mut bits, km)?;
        if m > columns as u64 {
            return None;
        }
        let mut at = 0usize;
        for _ in 0..m {
            let gap = usize::try_from(take_rice_value(&mut bits, kg)?).ok()?;
            at = at.checked_add(gap).filter(|a| *a < columns)?;
            let d = unzigzag(take_rice_value(&mut bits, kc)?.checked_add(1)?);
            now[at] = now[at].checked_add(d)?;
            at += 1;
        }
        for (col, v) in out.iter_mut().zip(&now) {
            col.push(*v as f64);
        }
    }
    let used = bits.bytes();
    *b = b.get(used..)?;
    Some(out)
}

/// Reads bits least significant first, as [`crate::packed::BitPacker`]
/// writes them.
struct Bits<'a> {
    b: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u64> {
        let byte = self.b.get(self.at / 8)?;
        let v = (byte >> (self.at % 8)) & 1;
        self.at += 1;
        Some(u64::from(v))
    }

    fn take(&mut self, w: u32) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..w {
            v |= self.bit()? << i;
        }
        Some(v)
    }

    /// Bytes read, the last partial one counted.
    fn bytes(&self) -> usize {
        self.at.div_ceil(8)
    }
}

/// Read [`put_rice`]'s `columns` columns of `n` samples.
fn take_rice(b: &mut &[u8], columns: usize, n: usize) -> Option<Vec<Vec<f64>>> {
    let mut firsts = Vec::with_capacity(columns.min(b.len()));
    for _ in 0..columns {
        firsts.push(unzigzag(take(b)?));
    }
    let mut bits = Bits { b, at: 0 };
    let mut out = Vec::with_capacity(columns.min(b.len()));
    for first in firsts {
        let second_order = bits.bit()? == 1;
        let k = bits.take(4)? as u32;
        let mut col = Vec::with_capacity(n.min(MAX_SAMPLES));
        let (mut v, mut delta) = (first, 0i64);
        col.push(v as f64);
        for _ in 1..n {
            let u = take_rice_value(&mut bits, k)?;
            delta = if second_order {
                delta.checked_add(unzigzag(u))?
            } else {
                unzigzag(u)
            };
            v = v.checked_add(delta)?;
            col.push(v as f64);
        }
        out.push(col);
    }
    let used = bits.bytes();
    *b = b.get(used..)?;
    Some(out)
}

/// Decode a chunk; `None` if it is malformed.
pub fn decode(mut b: &[u8]) -> Option<Vec<(i64, Histogram)>> {
    let b = &mut b;
    let n = usize::try_from(take(b)?).ok()?;
    if n == 0 {
        return Some(Vec::new());
    }
    if n > MAX_SAMPLES {
        return None;
    }
    let schema = i32::try_from(unzigzag(take(b)?)).ok()?;
    let custom = schema == keel_series::histogram::CUSTOM_SCHEMA;
    if !custom
        && !(keel_series::histogram::MIN_SCHEMA..=keel_series::histogram::MAX_SCHEMA)
            .contains(&schema)
    {
        return None;
    }
    let (zt, rest) = b.split_at_checked(8)?;
    *b = rest;
    let zero_threshold = f64::from_le_bytes(zt.try_into().ok()?);
    let custom_values: Arc<[f64]> = if custom {
        let n = usize::try_from(take(b)?).ok()?;
        if n >= keel_series::histogram::MAX_BUCKETS {
            return None;
        }
        let (raw, rest) = b.split_at_checked(n.checked_mul(8)?)?;
        *b = rest;
        raw.chunks_exact(8)
            .map(|c| c.try_into().ok().map(f64::from_le_bytes))
            .collect::<Option<Vec<f64>>>()?
            .into()
    } else {
        Arc::from([])
    };
    let pos = take_indices(b)?;
    let neg = take_indices(b)?;
    // What a chunk's layout can be: two sides within the span, or one
    // sample's buckets.
    let most = (2 * MAX_SPAN as usize + 2).max(keel_series::histogram::MAX_BUCKETS);
    let limit = keel_series::histogram::MAX_INDEX;
    if pos.len() + neg.len() > most
        || pos
            .iter()
            .chain(&neg)
            .any(|i| i.unsigned_abs() > limit as u32)
    {
        return None;
    }
    let nh = usize::try_from(take(b)?).ok()?;
    let mut hints = Vec::with_capacity(nh.min(n));
    for _ in 0..nh {
        let k = usize::try_from(take(b)?).ok()?;
        let (c, rest) = b.split_first()?;
        *b = rest;
        hints.push((k, CounterReset::from_code(u64::from(*c))));
    }
    let ts = take_column(b, n)?;
    let count = take_column(b, n)?;
    let sum = take_column(b, n)?;
    let zero = take_column(b, n)?;
    let mut out: Vec<(i64, Histogram)> = (0..n)
        .map(|k| {
            (
                ts[k] as i64,
                Histogram {
                    schema,
                    zero_threshold,
                    zero_count: zero[k],
                    count: count[k],
                    sum: sum[k],
                    custom_values: custom_values.clone(),
                    ..Histogram::default()
                },
            )
        })
        .collect();
    let (tag, rest) = b.split_first()?;
    *b = rest;
    let ncols = pos.len() + neg.len();
    let columns = match *tag {
        BUCKETS_RICE => take_rice(b, ncols, n)?,
        BUCKETS_SPARSE => take_sparse(b, ncols, n)?,
        BUCKETS_PACKED => (0..ncols)
            .map(|_| take_column(b, n))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    for (j, col) in columns.into_iter().enumerate() {
        let (positive, i) = match pos.get(j) {
            Some(i) => (true, *i),
            None => (false, *neg.get(j - pos.len())?),
        };
        for (k, c) in col.into_iter().enumerate() {
            if c != 0.0 {
                let h = &mut out[k].1;
                if positive {
                    h.positive.push((i, c));
                } else {
                    h.negative.push((i, c));
                }
            }
        }
    }
    for (k, hint) in hints {
        out.get_mut(k)?.1.reset = hint;
    }
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(k: i64) -> (i64, Histogram) {
        (
            1_700_000_000_000 + k * 15_000,
            Histogram {
                schema: 3,
                zero_threshold: 1e-128,
                zero_count: k as f64,
                count: (10 * k) as f64,
                sum: k as f64 * 1.234_567,
                positive: vec![(-2, (3 * k) as f64), (5, (2 * k) as f64), (9, k as f64)],
                negative: if k % 2 == 0 {
                    vec![(1, (k / 2) as f64)]
                } else {
                    vec![]
                },
                reset: if k == 3 {
                    CounterReset::Reset
                } else {
                    CounterReset::Unknown
                },
                custom_values: Default::default(),
            },
        )
    }

    /// A custom-bucket sample at `k` with `bounds`.
    fn custom(k: i64, bounds: &Arc<[f64]>) -> (i64, Histogram) {
        (
            1_700_000_000_000 + k * 15_000,
            Histogram {
                schema: keel_series::histogram::CUSTOM_SCHEMA,
                count: (6 * k) as f64,
                sum: k as f64 * 0.75,
                positive: vec![(0, k as f64), (1, (2 * k) as f64), (3, (3 * k) as f64)],
                custom_values: bounds.clone(),
                ..Histogram::default()
            },
        )
    }

    #[test]
    fn custom_bounds_are_kept_once_a_chunk_and_a_change_of_bounds_cuts_a_new_one() {
        let a: Arc<[f64]> = Arc::from([0.005, 0.1, 0.25, 1.0]);
        let b: Arc<[f64]> = Arc::from([0.005, 0.1, 0.5, 1.0]);
        let mut samples: Vec<_> = (1..=10).map(|k| custom(k, &a)).collect();
        // The same bounds in another allocation join the chunk.
        samples.push(custom(11, &Arc::from(a.to_vec())));
        samples.extend((12..=15).map(|k| custom(k, &b)));
        let runs = runs(&samples);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [11, 4]);
        let mut back = Vec::new();
        for run in runs {
            let bytes = encode(run);
            back.extend(decode(&bytes).expect("decodes"));
        }
        assert_eq!(back, samples);
        assert!(back.iter().all(|(_, h)| h.validate().is_ok()));
        // A custom chunk whose bounds are cut short is refused.
        let bytes = encode(&samples[..3]);
        assert!(decode(&bytes[..12]).is_none());
    }

    #[test]
    fn a_chunk_gives_back_every_sample_bit_for_bit() {
        let samples: Vec<_> = (1..=120).map(sample).collect();
        let bytes = encode(&samples);
        let back = decode(&bytes).expect("decodes");
        // Buckets at zero are not kept: compare without them.
        let want: Vec<_> = samples.into_iter().map(|(t, h)| (t, h.compact())).collect();
        assert_eq!(back, want);
        // Steadily growing buckets pack far below their raw 80+ bytes.
        assert!(bytes.len() / 120 < 10, "{} bytes", bytes.len());
    }

    #[test]
    fn random_jumps_resets_and_fractional_counts_roundtrip() {
        // A tiny xorshift: deterministic, no dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut counts = [0i64; 6];
        let mut samples = Vec::new();
        for k in 0..120i64 {
            for c in counts.iter_mut() {
                *c += match next() % 10 {
                    0 => -(*c),                       // a reset
                    1 => (next() % 1_000_000) as i64, // a jump past the escape
                    n => n as i64 - 2,                // small, some negative
                };
            }
            let h = Histogram {
                schema: -2,
                count: counts.iter().sum::<i64>() as f64,
                positive: counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i as i32 - 3, *c as f64))
                    .collect(),
                ..Histogram::default()
            };
            samples.push((k * 1000, h));
        }
        let want: Vec<_> = samples
            .iter()
            .cloned()
            .map(|(t, h)| (t, h.compact()))
            .collect();
        assert_eq!(decode(&encode(&samples)), Some(want.clone()));
        // Fractional counts (a rate) take the packed columns.
        let halves: Vec<_> = samples
            .into_iter()
            .map(|(t, h)| (t, h.scale(0.5)))
            .collect();
        let want: Vec<_> = halves
            .iter()
            .cloned()
            .map(|(t, h)| (t, h.compact()))
            .collect();
        let bytes = encode(&halves);
        assert_eq!(decode(&bytes), Some(want));
    }

    /// 120 samples of 150 buckets, `per_scrape` observations a sample
    /// landing on buckets drawn by a xorshift.
    fn sparse_samples(per_scrape: usize) -> Vec<(i64, Histogram)> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut counts = [0u64; 150];
        (0..120i64)
            .map(|k| {
                for _ in 0..per_scrape {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    counts[(x % 150) as usize] += 1;
                }
                let h = Histogram {
                    schema: 4,
                    count: counts.iter().sum::<u64>() as f64,
                    positive: counts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i as i32 - 60, *c as f64))
                        .collect(),
                    ..Histogram::default()
                };
                (k * 15_000, h.compact())
            })
            .collect()
    }

    #[test]
    fn few_changed_buckets_a_sample_are_written_sample_by_sample() {
        let samples = sparse_samples(2);
        let bytes = encode(&samples);
        assert_eq!(decode(&bytes), Some(samples.clone()));
        let mut columns = Vec::new();
        let layout = layout(&samples, |h| &h.positive);
        let cols: Vec<Vec<f64>> = layout
            .iter()
            .map(|i| {
                samples
                    .iter()
                    .map(|(_, h)| h.positive.iter().find(|(j, _)| j == i).map_or(0.0, |b| b.1))
                    .collect()
            })
            .collect();
        put_rice(&mut columns, &cols);
        // Two observations a sample over ~150 buckets: one bit a bucket a
        // sample by column, a few bits a changed bucket by sample.
        assert!(
            bytes.len() * 3 < columns.len(),
            "{} bytes against {} by column",
            bytes.len(),
            columns.len()
        );
        // Many observations a sample: still exact, whichever is shorter.
        let busy = sparse_samples(400);
        assert_eq!(decode(&encode(&busy)), Some(busy));
    }

    #[test]
    fn malformed_chunks_are_refused_not_a_panic() {
        let sparse = encode(&sparse_samples(2)[..6]);
        for cut in 1..sparse.len() {
            assert!(decode(&sparse[..cut]).is_none(), "cut at {cut}");
        }
        for at in 0..sparse.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = sparse.clone();
                b[at] ^= flip;
                let _ = decode(&b);
            }
        }
        let bytes = encode(&(1..=5).map(sample).collect::<Vec<_>>());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none() || cut == 0, "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_none());
        assert!(decode(&[0xff; 12]).is_none());
        // Any byte flipped: an answer or a refusal, never a panic.
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let _ = decode(&b);
            }
        }
    }
}
