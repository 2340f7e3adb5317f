//! A chunk of one series' native histogram samples, columnar.
//!
//! Samples in a chunk share a schema and zero threshold; their buckets
//! are laid out once for the chunk (the union of indices any sample
//! uses, a missing bucket counting 0). Each column — timestamps,
//! counts, sums, zero counts, then every bucket's counts over time — is
//! encoded by [`crate::packed`] (decimal frame-of-reference packing, or
//! Gorilla where that is smaller), so a bucket that moves by a few
//! observations a scrape costs a few bits a sample, as one classic `le`
//! series would, but only for buckets that hold observations.
//!
//! Layout: sample count (varint), schema (zigzag varint), zero threshold
//! (8 bytes LE), positive then negative bucket indices (count, first as
//! zigzag varint, then gaps as varints), reset hints (count, then sample
//! position and code), then the columns, each its byte length (varint)
//! and its packed bytes.

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
fn layout<'a>(samples: &'a [(i64, Histogram)], side: fn(&Histogram) -> &[(i32, f64)]) -> Vec<i32> {
    let mut idx: Vec<i32> = samples
        .iter()
        .flat_map(|(_, h)| side(h).iter().map(|(i, _)| *i))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    idx
}

/// Can `h` join a chunk whose first sample is `first`?
pub fn fits(first: &Histogram, h: &Histogram) -> bool {
    first.schema == h.schema && first.zero_threshold.to_bits() == h.zero_threshold.to_bits()
}

/// Encode samples (time-ordered, sharing a schema and zero threshold).
pub fn encode(samples: &[(i64, Histogram)]) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, samples.len() as u64);
    let Some((_, first)) = samples.first() else {
        return out;
    };
    put(&mut out, zigzag(i64::from(first.schema)));
    out.extend_from_slice(&first.zero_threshold.to_le_bytes());
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
    for (idx, side) in [
        (
            &pos,
            (|h: &Histogram| h.positive.clone()) as fn(&Histogram) -> Vec<(i32, f64)>,
        ),
        (&neg, |h: &Histogram| h.negative.clone()),
    ] {
        // Each sample's counts spread over the chunk's layout.
        let rows: Vec<Vec<f64>> = samples
            .iter()
            .map(|(_, h)| {
                let mut row = vec![0.0; idx.len()];
                for (i, c) in side(h) {
                    if let Ok(k) = idx.binary_search(&i) {
                        row[k] = c;
                    }
                }
                row
            })
            .collect();
        for k in 0..idx.len() {
            put_column(&mut out, rows.iter().map(|r| r[k]));
        }
    }
    out
}

/// Decode a chunk; `None` if it is malformed.
pub fn decode(mut b: &[u8]) -> Option<Vec<(i64, Histogram)>> {
    let b = &mut b;
    let n = usize::try_from(take(b)?).ok()?;
    if n == 0 {
        return Some(Vec::new());
    }
    if n > MAX_SAMPLES * 1000 {
        return None;
    }
    let schema = i32::try_from(unzigzag(take(b)?)).ok()?;
    let (zt, rest) = b.split_at_checked(8)?;
    *b = rest;
    let zero_threshold = f64::from_le_bytes(zt.try_into().ok()?);
    let pos = take_indices(b)?;
    let neg = take_indices(b)?;
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
                    ..Histogram::default()
                },
            )
        })
        .collect();
    for i in &pos {
        for (k, c) in take_column(b, n)?.into_iter().enumerate() {
            if c != 0.0 {
                out[k].1.positive.push((*i, c));
            }
        }
    }
    for i in &neg {
        for (k, c) in take_column(b, n)?.into_iter().enumerate() {
            if c != 0.0 {
                out[k].1.negative.push((*i, c));
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
            },
        )
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
    fn malformed_chunks_are_refused_not_a_panic() {
        let bytes = encode(&(1..=5).map(sample).collect::<Vec<_>>());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none() || cut == 0, "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_none());
        assert!(decode(&[0xff; 12]).is_none());
    }
}
