//! Gorilla compression (Pelkonen et al., VLDB 2015) for one chunk of a
//! series: delta-of-delta timestamps and XOR-ed float values, bit-packed.
//!
//! Timestamps: the first is stored whole; each next one as the difference
//! of its delta from the previous delta, in the smallest of five buckets
//! (`0`, `10`+14 bits, `110`+17, `1110`+20, `1111`+64). Values: the first
//! whole; then the XOR with the previous value: `0` if equal, else `1`
//! and either `0` + the meaningful bits within the previous window, or `1`
//! + 5 bits of leading zeros, 6 bits of length and the meaningful bits.
//!
//! An open chunk of the head first tries a decimal mode instead, since
//! most exporters send decimals (`12.34`, CPU seconds in hundredths), whose
//! floats XOR badly (~2.7 bytes a sample on node_exporter data): values
//! are kept as integer mantissas `m` with `v == m / 10^e` exactly, and
//! each is written as its difference from the previous one in the
//! smallest of six buckets (`0`, `10`+7 bits, `110`+14, `1110`+21,
//! `11110`+32, `11111`+64; ~1.4 bytes a sample on the same data). A value
//! that needs a larger exponent re-encodes the chunk at it; one that is no
//! such decimal (NaN, staleness markers, ±Inf, -0.0) turns it into Gorilla.
//! The mode lives in the chunk, not its bytes: sealing re-encodes every
//! open chunk ([`super::packed`]), and the bytes of a Gorilla-mode chunk are
//! what [`decode`] reads.

use super::packed::{MAX_EXP, POW10, mantissa};
use keel_series::varint::{unzigzag, zigzag};

/// Reads bits written by [`Chunk::push_bits`].
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Some(b)
    }

    /// The next `n` (≤ 64) bits, most significant first; none (and the
    /// position kept) when fewer are left. A byte at a time, not a bit:
    /// decoding is most of what a query costs.
    fn bits(&mut self, n: u8) -> Option<u64> {
        let mut left = usize::from(n.min(64));
        if self.pos + left > self.bytes.len() * 8 {
            return None;
        }
        let mut v = 0u64;
        let mut pos = self.pos;
        while left > 0 {
            let byte = *self.bytes.get(pos / 8)?;
            let avail = 8 - pos % 8;
            let take = avail.min(left);
            let chunk = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            v = (v << take) | u64::from(chunk);
            left -= take;
            pos += take;
        }
        self.pos = pos;
        Some(v)
    }
}

/// Most bytes one sample can add: a 4-bit tag and 64 bits of timestamp,
/// then 13 bits of XOR header and 64 meaningful bits.
const MAX_SAMPLE_BYTES: usize = 19;

/// [`Chunk::exp`]: values are Gorilla-XORed floats.
const XOR: u8 = u8::MAX;
/// [`Chunk::exp`]: decimal mode, exponent chosen by the first value.
const UNDECIDED: u8 = u8::MAX - 1;

/// One compressed chunk, open for appends.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The encoded samples, bits most significant first.
    buf: Vec<u8>,
    /// Bits used in the last byte of `buf` (0 = a new byte is needed).
    /// A field of the chunk, not of a bit-writer struct of its own, so
    /// it packs with the other small fields (8 bytes a series).
    used: u8,
    count: u16,
    last_t: i64,
    last_delta: i64,
    /// The last value's bits ([`XOR`] mode) or its mantissa (decimal).
    last_v: u64,
    leading: u8,
    trailing: u8,
    /// Decimal exponent of the values, or [`XOR`] or [`UNDECIDED`].
    exp: u8,
    /// Bytes the full chunk is expected to take, reserved a quarter at a
    /// time (0: grow as a `Vec` does).
    expect: u16,
}

impl Default for Chunk {
    /// An empty chunk that stores decimals compactly when it can.
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            used: 0,
            count: 0,
            last_t: 0,
            last_delta: 0,
            last_v: 0,
            leading: u8::MAX,
            trailing: 0,
            exp: UNDECIDED,
            expect: 0,
        }
    }
}

impl Chunk {
    /// An empty chunk expected to take `bytes` when full (a series' chunks
    /// are about the same size): it reserves that in quarters as samples
    /// come, and holds nothing if none comes.
    pub fn expecting(bytes: usize) -> Self {
        Self {
            expect: u16::try_from(bytes).unwrap_or(u16::MAX),
            ..Self::default()
        }
    }

    /// An empty chunk of plain Gorilla (its bytes are what [`decode`] reads).
    pub fn xor() -> Self {
        Self {
            exp: XOR,
            ..Self::default()
        }
    }
}

fn sign_extend(v: u64, bits: u8) -> i64 {
    let shift = 64 - u32::from(bits);
    ((v << shift) as i64) >> shift
}

impl Chunk {
    /// Samples held.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// First timestamp (ms): the stream's first 64 bits, so that an open
    /// chunk (one per series) does not hold it twice. 0 when empty.
    pub fn min_t(&self) -> i64 {
        first_timestamp(&self.buf).unwrap_or(0)
    }

    /// Last timestamp (ms).
    pub fn max_t(&self) -> i64 {
        self.last_t
    }

    /// The newest sample, without decoding the chunk.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.count > 0).then(|| (self.last_t, self.value(self.last_v)))
    }

    /// The value that `last_v` stands for in this chunk's mode.
    fn value(&self, last_v: u64) -> f64 {
        match self.exp {
            XOR => f64::from_bits(last_v),
            _ => last_v as i64 as f64 / self.scale(),
        }
    }

    /// `10^e` of a decimal-mode chunk (1 while the exponent is undecided).
    fn scale(&self) -> f64 {
        POW10.get(usize::from(self.exp)).copied().unwrap_or(1.0)
    }

    /// Compressed size in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    fn push_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.buf.push(0);
        }
        if bit && let Some(last) = self.buf.last_mut() {
            *last |= 1 << (7 - self.used);
        }
        self.used = (self.used + 1) % 8;
    }

    fn push_bits(&mut self, value: u64, n: u8) {
        for i in (0..n).rev() {
            self.push_bit((value >> i) & 1 == 1);
        }
    }

    /// Append a sample; `t` must be greater than the last one.
    pub fn push(&mut self, t: i64, v: f64) {
        if self.exp == UNDECIDED {
            self.exp = (0..=MAX_EXP)
                .find(|e| mantissa(v, *e).is_some())
                .map_or(XOR, |e| e as u8);
        }
        if self.exp != XOR {
            match mantissa(v, usize::from(self.exp)) {
                Some(m) => self.push_decimal(t, m),
                None => self.reencode_with(t, v),
            }
            return;
        }
        let bits = v.to_bits();
        self.grow();
        let first = self.count == 0;
        self.push_time(t);
        if first {
            self.push_bits(bits, 64);
        } else {
            self.push_xor(bits);
        }
        self.last_v = bits;
        self.count += 1;
    }

    /// Reserve ahead as [`Chunk::expecting`] promises.
    fn grow(&mut self) {
        let step = usize::from(self.expect) / 4;
        if step > 0 && self.buf.capacity() - self.buf.len() < MAX_SAMPLE_BYTES {
            self.buf.reserve_exact(step.max(MAX_SAMPLE_BYTES));
        }
    }

    fn push_time(&mut self, t: i64) {
        if self.count == 0 {
            self.push_bits(t as u64, 64);
        } else {
            // Wrapping, as the reader adds: any two i64 times round-trip
            // (the 64-bit bucket holds every delta-of-delta).
            let delta = t.wrapping_sub(self.last_t);
            let dod = delta.wrapping_sub(if self.count == 1 { 0 } else { self.last_delta });
            self.push_dod(dod);
            self.last_delta = delta;
        }
        self.last_t = t;
    }

    fn push_decimal(&mut self, t: i64, m: i64) {
        self.grow();
        let first = self.count == 0;
        self.push_time(t);
        if first {
            self.push_bits(m as u64, 64);
        } else {
            let d = zigzag(m.wrapping_sub(self.last_v as i64));
            let bucket = DECIMAL_WIDTHS.iter().position(|bits| d < 1u64 << bits);
            let ones = bucket.unwrap_or(DECIMAL_WIDTHS.len());
            for _ in 0..ones {
                self.push_bit(true);
            }
            if let Some(i) = bucket {
                self.push_bit(false);
                self.push_bits(d, DECIMAL_WIDTHS[i]);
            } else {
                self.push_bits(d, 64);
            }
        }
        self.last_v = m as u64;
        self.count += 1;
    }

    /// `v` does not fit the decimal exponent so far: encode the chunk
    /// again at the smallest exponent that holds every value, or as
    /// Gorilla if there is none, and append `(t, v)`.
    fn reencode_with(&mut self, t: i64, v: f64) {
        let mut samples = self.samples();
        samples.push((t, v));
        let e = (usize::from(self.exp) + 1..=MAX_EXP)
            .find(|e| samples.iter().all(|(_, v)| mantissa(*v, *e).is_some()));
        let mut again = Self {
            exp: e.map_or(XOR, |e| e as u8),
            expect: self.expect,
            ..Self::default()
        };
        again.buf.reserve_exact(self.buf.capacity());
        for (t, v) in samples {
            again.push(t, v);
        }
        *self = again;
    }

    fn push_dod(&mut self, dod: i64) {
        let fits = |bits: u8| {
            let lim = 1i64 << (bits - 1);
            (-lim..lim).contains(&dod)
        };
        if dod == 0 {
            self.push_bit(false);
        } else if fits(14) {
            self.push_bits(0b10, 2);
            self.push_bits(dod as u64, 14);
        } else if fits(17) {
            self.push_bits(0b110, 3);
            self.push_bits(dod as u64, 17);
        } else if fits(20) {
            self.push_bits(0b1110, 4);
            self.push_bits(dod as u64, 20);
        } else {
            self.push_bits(0b1111, 4);
            self.push_bits(dod as u64, 64);
        }
    }

    fn push_xor(&mut self, bits: u64) {
        let x = bits ^ self.last_v;
        if x == 0 {
            self.push_bit(false);
            return;
        }
        self.push_bit(true);
        let lead = (x.leading_zeros() as u8).min(31);
        let trail = x.trailing_zeros() as u8;
        if self.leading != u8::MAX && lead >= self.leading && trail >= self.trailing {
            self.push_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.push_bits(x >> self.trailing, sig);
        } else {
            self.leading = lead;
            self.trailing = trail;
            self.push_bit(true);
            self.push_bits(u64::from(lead), 5);
            let sig = 64 - lead - trail;
            // 64 significant bits are written as 0 (6 bits hold 0..=63).
            self.push_bits(u64::from(sig % 64), 6);
            self.push_bits(x >> trail, sig);
        }
    }

    /// The Gorilla bytes and the sample count of a chunk made by
    /// [`Chunk::xor`] (what [`decode`] reads); None for a decimal one.
    pub fn raw(&self) -> Option<(&[u8], u16)> {
        (self.exp == XOR).then_some((&self.buf, self.count))
    }

    /// Decode every sample, in order.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        match self.exp {
            XOR => decode(&self.buf, self.count),
            _ => decode_decimal(&self.buf, self.count, self.scale()),
        }
    }
}

/// Decoder state between samples.
#[derive(Default)]
struct DecodeState {
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    if !r.bit()? {
        return Some(0);
    }
    if !r.bit()? {
        return r.bits(14).map(|b| sign_extend(b, 14));
    }
    if !r.bit()? {
        return r.bits(17).map(|b| sign_extend(b, 17));
    }
    if !r.bit()? {
        return r.bits(20).map(|b| sign_extend(b, 20));
    }
    r.bits(64).map(|b| b as i64)
}

fn read_next(r: &mut BitReader<'_>, st: &mut DecodeState, index: u16) -> Option<(i64, f64)> {
    read_time(r, st, index)?;
    if index == 0 {
        st.v = r.bits(64)?;
        return Some((st.t, f64::from_bits(st.v)));
    }
    if r.bit()? {
        if r.bit()? {
            st.leading = r.bits(5)? as u8;
            let sig = match r.bits(6)? as u8 {
                0 => 64,
                n => n,
            };
            st.trailing = 64u8.checked_sub(st.leading + sig)?;
        }
        let sig = 64 - st.leading - st.trailing;
        st.v ^= r.bits(sig)? << st.trailing;
    }
    Some((st.t, f64::from_bits(st.v)))
}

/// Payload width of each bucket of a decimal difference (zigzag). Bucket
/// `i`'s tag is `i` ones then a zero (`0` alone: no change); past the
/// last, all ones and 64 bits.
const DECIMAL_WIDTHS: [u8; 5] = [0, 7, 14, 21, 32];

fn read_time(r: &mut BitReader<'_>, st: &mut DecodeState, index: u16) -> Option<i64> {
    if index == 0 {
        st.t = r.bits(64)? as i64;
        return Some(st.t);
    }
    let dod = read_dod(r)?;
    // Wrapping arithmetic: corrupt bytes must not panic.
    st.delta = if index == 1 {
        dod
    } else {
        st.delta.wrapping_add(dod)
    };
    st.t = st.t.wrapping_add(st.delta);
    Some(st.t)
}

/// Decode a decimal-mode stream of `count` samples whose mantissas are
/// over `scale` (`10^e`).
fn decode_decimal(bytes: &[u8], count: u16, scale: f64) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(usize::from(count));
    let mut r = BitReader { bytes, pos: 0 };
    let mut st = DecodeState::default();
    let mut m = 0i64;
    let mut next = |r: &mut BitReader<'_>, i: u16| -> Option<(i64, f64)> {
        let t = read_time(r, &mut st, i)?;
        if i == 0 {
            m = r.bits(64)? as i64;
        } else {
            let mut ones = 0;
            while ones < DECIMAL_WIDTHS.len() && r.bit()? {
                ones += 1;
            }
            let d = r.bits(DECIMAL_WIDTHS.get(ones).copied().unwrap_or(64))?;
            m = m.wrapping_add(unzigzag(d));
        }
        Some((t, m as f64 / scale))
    };
    for i in 0..count {
        match next(&mut r, i) {
            Some(s) => out.push(s),
            None => break,
        }
    }
    out
}

/// The first timestamp of a chunk's stream (both modes start with its
/// 64 bits), without decoding it; None if there is none.
pub fn first_timestamp(stream: &[u8]) -> Option<i64> {
    stream.first_chunk::<8>().map(|b| i64::from_be_bytes(*b))
}

/// Decode `count` samples from chunk bytes (fewer if the bytes end early).
pub fn decode(bytes: &[u8], count: u16) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(usize::from(count));
    let mut r = BitReader { bytes, pos: 0 };
    let mut st = DecodeState::default();
    for i in 0..count {
        match read_next(&mut r, &mut st, i) {
            Some(s) => out.push(s),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
