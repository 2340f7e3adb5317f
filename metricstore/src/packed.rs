//! The encoding of a sealed chunk: whichever is smallest of Gorilla and a
//! decimal frame-of-reference packing.
//!
//! Most metric values are decimals written by an exporter (`12.34`,
//! `8004509696`): as IEEE floats their XOR differs in many mantissa bits,
//! which is why Gorilla stays near 2–3 bytes a sample on counters that
//! move by random amounts. Here such values become integers `m` with
//! `v == m / 10^e` exactly, for one exponent `e` per chunk. Their
//! differences are then packed at a fixed bit width after subtracting the
//! smallest and dividing by the common divisor (frame of reference), as
//! plain deltas, deltas of deltas, or sparse deltas (a bitmap of which
//! changed) — whichever is smallest. Timestamps are packed the same way.
//! A chunk with any value that is not such a decimal (NaN, staleness
//! markers, ±Inf, -0.0, |m| ≥ 2^53) falls back to Gorilla, as does one
//! where Gorilla is smaller. Decoding gives back every value bit for bit.
//!
//! Layout: tag byte (`0` Gorilla, `1` packed), sample count (varint), then
//! for Gorilla its bit stream; for packed: first timestamp (zigzag
//! varint), an int block of the timestamp deltas, the exponent byte, the
//! value variant byte, the first mantissa (zigzag varint) and the
//! variant's int blocks. An int block is its minimum (zigzag varint), the
//! common divisor of the offsets from it (varint, 0 when all equal), the
//! bit width (byte) and the offsets over the divisor, bit-packed.

use super::gorilla::{self, Chunk};
use keel_series::varint::{put as put_varint, unzigzag, zigzag};

const TAG_GORILLA: u8 = 0;
const TAG_PACKED: u8 = 1;

const DELTA: u8 = 0;
const DOUBLE_DELTA: u8 = 1;
const SPARSE: u8 = 2;

/// Largest decimal exponent tried; 10^15 keeps `m / 10^e` exact in f64.
pub(super) const MAX_EXP: usize = 15;
pub(super) const POW10: [f64; MAX_EXP + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Packs values of a fixed width, least significant bit first.
pub(crate) struct BitPacker<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitPacker<'a> {
    /// A packer appending to `out`.
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }
}

impl BitPacker<'_> {
    /// Append the low `w` bits of `v`.
    pub(crate) fn put(&mut self, v: u64, w: u32) {
        if w > 32 {
            self.put(v & 0xffff_ffff, 32);
            self.put(v >> 32, w - 32);
            return;
        }
        if w == 0 {
            return;
        }
        let v = if w == 64 { v } else { v & ((1u64 << w) - 1) };
        self.acc |= v << self.n;
        self.n += w;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Flush the last partial byte.
    pub(crate) fn finish(self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads what [`BitPacker`] and the varint writers wrote.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut rest = self.b.get(self.at..)?;
        let v = keel_series::varint::take(&mut rest)?;
        self.at = self.b.len() - rest.len();
        Some(v)
    }

    /// `count` values of `w` bits each.
    fn unpack(&mut self, count: usize, w: u32) -> Option<Vec<u64>> {
        let mut out = Vec::with_capacity(count);
        if w == 0 {
            out.resize(count, 0);
            return Some(out);
        }
        let bytes = (count * w as usize).div_ceil(8);
        let data = self.b.get(self.at..self.at + bytes)?;
        self.at += bytes;
        let (mut acc, mut n, mut next) = (0u128, 0u32, 0usize);
        let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        for _ in 0..count {
            while n < w {
                acc |= u128::from(*data.get(next)?) << n;
                next += 1;
                n += 8;
            }
            out.push((acc as u64) & mask);
            acc >>= w;
            n -= w;
        }
        Some(out)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Minimum, common divisor of the offsets from it, and those offsets packed.
fn put_ints(out: &mut Vec<u8>, xs: &[i64]) {
    let min = xs.iter().copied().min().unwrap_or(0);
    let offsets: Vec<u64> = xs.iter().map(|x| x.wrapping_sub(min) as u64).collect();
    let g = offsets.iter().fold(0, |g, o| gcd(g, *o));
    put_varint(out, zigzag(min));
    put_varint(out, g);
    // Offsets over the divisor; none when all are equal (width 0).
    let scaled: Vec<u64> = offsets.iter().filter_map(|o| o.checked_div(g)).collect();
    let w = 64 - scaled.iter().max().copied().unwrap_or(0).leading_zeros();
    out.push(w as u8);
    let mut p = BitPacker { out, acc: 0, n: 0 };
    for o in &scaled {
        p.put(*o, w);
    }
    p.finish();
}

fn get_ints(r: &mut Reader<'_>, count: usize) -> Option<Vec<i64>> {
    let min = unzigzag(r.varint()?);
    let g = r.varint()?;
    let w = u32::from(r.byte()?);
    if w > 64 {
        return None;
    }
    let raw = r.unpack(count, w)?;
    Some(
        raw.into_iter()
            .map(|o| min.wrapping_add(o.wrapping_mul(g) as i64))
            .collect(),
    )
}

/// The exact decimal form of `v` at exponent `e`, if it has one.
pub(super) fn mantissa(v: f64, e: usize) -> Option<i64> {
    let m = (v * POW10[e]).round();
    if !m.is_finite() || m.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    let m = m as i64;
    ((m as f64 / POW10[e]).to_bits() == v.to_bits()).then_some(m)
}

/// All values as mantissas at the smallest exponent that holds them all.
fn decimals(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    let mut e = 0;
    for v in values {
        while mantissa(*v, e).is_none() {
            e += 1;
            if e > MAX_EXP {
                return None;
            }
        }
    }
    let ms = values
        .iter()
        .map(|v| mantissa(*v, e))
        .collect::<Option<Vec<i64>>>()?;
    Some((e as u8, ms))
}

fn put_packed(samples: &[(i64, f64)], e: u8, ms: &[i64]) -> Vec<u8> {
    let mut out = vec![TAG_PACKED];
    put_varint(&mut out, samples.len() as u64);
    put_varint(&mut out, zigzag(samples[0].0));
    let deltas: Vec<i64> = samples.windows(2).map(|w| w[1].0 - w[0].0).collect();
    put_ints(&mut out, &deltas);
    out.push(e);
    let d: Vec<i64> = ms.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let mut best: Option<Vec<u8>> = None;
    let mut consider = |variant: u8, body: &dyn Fn(&mut Vec<u8>)| {
        let mut v = vec![variant];
        put_varint(&mut v, zigzag(ms[0]));
        body(&mut v);
        if best.as_ref().is_none_or(|b| v.len() < b.len()) {
            best = Some(v);
        }
    };
    consider(DELTA, &|v| put_ints(v, &d));
    if d.len() >= 2 {
        consider(DOUBLE_DELTA, &|v| {
            put_varint(v, zigzag(d[0]));
            let dd: Vec<i64> = d.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
            put_ints(v, &dd);
        });
    }
    consider(SPARSE, &|v| {
        let mut p = BitPacker {
            out: v,
            acc: 0,
            n: 0,
        };
        for x in &d {
            p.put(u64::from(*x != 0), 1);
        }
        p.finish();
        let changed: Vec<i64> = d.iter().copied().filter(|x| *x != 0).collect();
        put_ints(v, &changed);
    });
    out.extend(best.unwrap_or_default());
    out
}

fn put_gorilla(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut c = Chunk::xor();
    for (t, v) in samples {
        c.push(*t, *v);
    }
    let mut out = vec![TAG_GORILLA];
    put_varint(&mut out, samples.len() as u64);
    out.extend_from_slice(c.raw().map_or(&[][..], |(bytes, _)| bytes));
    out
}

/// Encode samples (in time order, at most 65,535) the smallest way.
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let gorilla = put_gorilla(samples);
    if samples.is_empty() {
        return gorilla;
    }
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    match decimals(&values) {
        Some((e, ms)) => {
            let packed = put_packed(samples, e, &ms);
            if packed.len() < gorilla.len() {
                packed
            } else {
                gorilla
            }
        }
        None => gorilla,
    }
}

/// The first timestamp of a chunk written by [`encode`], read from its
/// head without decoding the rest; None if it is empty or malformed.
pub fn first_timestamp(bytes: &[u8]) -> Option<i64> {
    let mut r = Reader { b: bytes, at: 1 };
    let tag = *bytes.first()?;
    if r.varint()? == 0 {
        return None;
    }
    match tag {
        TAG_GORILLA => gorilla::first_timestamp(bytes.get(r.at..)?),
        TAG_PACKED => Some(unzigzag(r.varint()?)),
        _ => None,
    }
}

/// Decode a chunk written by [`encode`]; None if it is malformed.
pub fn decode(bytes: &[u8]) -> Option<Vec<(i64, f64)>> {
    let mut r = Reader { b: bytes, at: 1 };
    let tag = *bytes.first()?;
    let n = usize::try_from(r.varint()?).ok()?;
    if tag == TAG_GORILLA {
        let count = u16::try_from(n).ok()?;
        let out = gorilla::decode(bytes.get(r.at..)?, count);
        return (out.len() == n).then_some(out);
    }
    if tag != TAG_PACKED || n == 0 || n > usize::from(u16::MAX) {
        return None;
    }
    let mut ts = Vec::with_capacity(n);
    let mut t = unzigzag(r.varint()?);
    ts.push(t);
    for d in get_ints(&mut r, n - 1)? {
        t = t.wrapping_add(d);
        ts.push(t);
    }
    let e = usize::from(r.byte()?);
    let variant = r.byte()?;
    if e > MAX_EXP {
        return None;
    }
    let m0 = unzigzag(r.varint()?);
    let d: Vec<i64> = match variant {
        DELTA => get_ints(&mut r, n - 1)?,
        DOUBLE_DELTA if n >= 3 => {
            let mut d = unzigzag(r.varint()?);
            let mut out = vec![d];
            for dd in get_ints(&mut r, n - 2)? {
                d = d.wrapping_add(dd);
                out.push(d);
            }
            out
        }
        SPARSE => {
            let changed_bits = r.unpack(n - 1, 1)?;
            let changed = changed_bits.iter().filter(|b| **b == 1).count();
            let mut values = get_ints(&mut r, changed)?.into_iter();
            changed_bits
                .iter()
                .map(|b| if *b == 1 { values.next() } else { Some(0) })
                .collect::<Option<Vec<i64>>>()?
        }
        _ => return None,
    };
    let mut m = m0;
    let mut out = Vec::with_capacity(n);
    out.push((ts[0], m as f64 / POW10[e]));
    for (t, d) in ts[1..].iter().zip(d) {
        m = m.wrapping_add(d);
        out.push((*t, m as f64 / POW10[e]));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(samples: &[(i64, f64)]) -> usize {
        let bytes = encode(samples);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in back.iter().zip(samples) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "value at {}", a.0);
        }
        bytes.len()
    }

    fn scrape_times(n: usize) -> impl Iterator<Item = i64> {
        (0..n as i64).map(|i| 1_700_000_000_000 + i * 15_000)
    }

    #[test]
    fn cpu_seconds_at_ten_ms_resolution_pack_below_a_byte_a_sample() {
        // node_exporter: ticks / 100, rising by 0..0.8 s a scrape.
        let mut ticks = 123_456u64;
        let samples: Vec<(i64, f64)> = scrape_times(120)
            .enumerate()
            .map(|(i, t)| {
                ticks += (i as u64 * 37) % 80;
                (t, ticks as f64 / 100.0)
            })
            .collect();
        let size = roundtrip(&samples);
        assert!(size < 120, "{size} bytes for 120 samples");
        assert!(size < encode_gorilla_len(&samples) / 2);
    }

    fn encode_gorilla_len(samples: &[(i64, f64)]) -> usize {
        put_gorilla(samples).len()
    }

    #[test]
    fn constant_and_rarely_changing_series_cost_almost_nothing() {
        let constant: Vec<(i64, f64)> = scrape_times(120).map(|t| (t, 8e9)).collect();
        assert!(roundtrip(&constant) < 24);
        let rare: Vec<(i64, f64)> = scrape_times(120)
            .enumerate()
            .map(|(i, t)| (t, 8e9 - 4096.0 * (i / 40) as f64))
            .collect();
        assert!(roundtrip(&rare) < 40);
    }

    #[test]
    fn non_decimal_values_fall_back_to_gorilla_bit_for_bit() {
        let mut s: Vec<(i64, f64)> = scrape_times(50)
            .enumerate()
            .map(|(i, t)| (t, (i as f64).sin()))
            .collect();
        s.push((s[49].0 + 15_000, f64::from_bits(super::super::STALE_NAN)));
        s.push((s[50].0 + 1, -0.0));
        s.push((s[51].0 + 1, f64::INFINITY));
        assert_eq!(encode(&s)[0], TAG_GORILLA);
        roundtrip(&s);
    }

    #[test]
    fn jittered_timestamps_and_negative_values_roundtrip() {
        let s: Vec<(i64, f64)> = (0..120)
            .map(|i| (i * 15_000 + (i * 7919) % 23 - 11, -(i as f64) * 0.25 + 3.5))
            .collect();
        assert_eq!(encode(&s)[0], TAG_PACKED);
        roundtrip(&s);
    }

    #[test]
    fn malformed_bytes_are_refused_not_a_panic() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[7, 1]).is_none());
        let good = encode(&[(0, 1.5), (15_000, 2.5), (30_000, 4.0)]);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_decimal_or_float_series_roundtrips(
            start in any::<i32>(),
            steps in proptest::collection::vec((1i64..100_000, -1_000_000i64..1_000_000, 0usize..6), 1..200),
            raw in any::<bool>(),
        ) {
            let mut t = i64::from(start);
            let s: Vec<(i64, f64)> = steps.iter().map(|(dt, m, e)| {
                t += dt;
                let v = if raw { f64::from_bits(*m as u64 ^ 0x4000_0000_0000_0000) } else { *m as f64 / POW10[*e] };
                (t, v)
            }).collect();
            roundtrip(&s);
            prop_assert_eq!(first_timestamp(&encode(&s)), Some(s[0].0));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = first_timestamp(&bytes);
        }
    }
}
