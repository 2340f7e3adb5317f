//! Gorilla compression (Pelkonen et al., VLDB 2015) for one chunk of a
//! series: delta-of-delta timestamps and XOR-ed float values, bit-packed.
//!
//! Timestamps: the first is stored whole; each next one as the difference
//! of its delta from the previous delta, in the smallest of five buckets
//! (`0`, `10`+14 bits, `110`+17, `1110`+20, `1111`+64). Values: the first
//! whole; then the XOR with the previous value: `0` if equal, else `1`
//! and either `0` + the meaningful bits within the previous window, or `1`
//! + 5 bits of leading zeros, 6 bits of length and the meaningful bits.

/// Appends bits to a byte vector, most significant first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = a new byte is needed).
    used: u8,
}

impl BitWriter {
    fn push_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 1 << (7 - self.used);
        }
        self.used = (self.used + 1) % 8;
    }

    fn push_bits(&mut self, value: u64, n: u8) {
        for i in (0..n).rev() {
            self.push_bit((value >> i) & 1 == 1);
        }
    }
}

/// Reads bits written by [`BitWriter`].
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

    fn bits(&mut self, n: u8) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v)
    }
}

/// One compressed chunk, open for appends.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    w: BitWriter,
    count: u16,
    first_t: i64,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
    /// Bytes to reserve at the first sample (0: grow as needed).
    expect: u16,
}

impl Chunk {
    /// An empty chunk that reserves `bytes` of compressed data when its
    /// first sample comes, so that it fills without reallocating when its
    /// size can be foreseen (a series' chunks are about the same size),
    /// and holds nothing if no sample comes.
    pub fn expecting(bytes: usize) -> Self {
        Self {
            expect: u16::try_from(bytes).unwrap_or(u16::MAX),
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

    /// First timestamp (ms).
    pub fn min_t(&self) -> i64 {
        self.first_t
    }

    /// Last timestamp (ms).
    pub fn max_t(&self) -> i64 {
        self.last_t
    }

    /// The newest sample, without decoding the chunk.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.count > 0).then(|| (self.last_t, f64::from_bits(self.last_v)))
    }

    /// Compressed size in bytes.
    pub fn bytes(&self) -> usize {
        self.w.bytes.len()
    }

    /// Append a sample; `t` must be greater than the last one.
    pub fn push(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        match self.count {
            0 => {
                self.w.bytes.reserve_exact(usize::from(self.expect));
                self.w.push_bits(t as u64, 64);
                self.w.push_bits(bits, 64);
                self.first_t = t;
                self.leading = u8::MAX;
            }
            _ => {
                let delta = t - self.last_t;
                let dod = delta - if self.count == 1 { 0 } else { self.last_delta };
                self.push_dod(dod);
                self.push_xor(bits);
                self.last_delta = delta;
            }
        }
        self.last_t = t;
        self.last_v = bits;
        self.count += 1;
    }

    fn push_dod(&mut self, dod: i64) {
        let fits = |bits: u8| {
            let lim = 1i64 << (bits - 1);
            (-lim..lim).contains(&dod)
        };
        if dod == 0 {
            self.w.push_bit(false);
        } else if fits(14) {
            self.w.push_bits(0b10, 2);
            self.w.push_bits(dod as u64, 14);
        } else if fits(17) {
            self.w.push_bits(0b110, 3);
            self.w.push_bits(dod as u64, 17);
        } else if fits(20) {
            self.w.push_bits(0b1110, 4);
            self.w.push_bits(dod as u64, 20);
        } else {
            self.w.push_bits(0b1111, 4);
            self.w.push_bits(dod as u64, 64);
        }
    }

    fn push_xor(&mut self, bits: u64) {
        let x = bits ^ self.last_v;
        if x == 0 {
            self.w.push_bit(false);
            return;
        }
        self.w.push_bit(true);
        let lead = (x.leading_zeros() as u8).min(31);
        let trail = x.trailing_zeros() as u8;
        if self.leading != u8::MAX && lead >= self.leading && trail >= self.trailing {
            self.w.push_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.push_bits(x >> self.trailing, sig);
        } else {
            self.leading = lead;
            self.trailing = trail;
            self.w.push_bit(true);
            self.w.push_bits(u64::from(lead), 5);
            let sig = 64 - lead - trail;
            // 64 significant bits are written as 0 (6 bits hold 0..=63).
            self.w.push_bits(u64::from(sig % 64), 6);
            self.w.push_bits(x >> trail, sig);
        }
    }

    /// The compressed bytes and the sample count (what a block stores).
    pub fn raw(&self) -> (&[u8], u16) {
        (&self.w.bytes, self.count)
    }

    /// Decode every sample, in order.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        decode(&self.w.bytes, self.count)
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
    if index == 0 {
        st.t = r.bits(64)? as i64;
        st.v = r.bits(64)?;
        return Some((st.t, f64::from_bits(st.v)));
    }
    let dod = read_dod(r)?;
    // Wrapping and checked arithmetic: corrupt bytes must not panic.
    st.delta = if index == 1 {
        dod
    } else {
        st.delta.wrapping_add(dod)
    };
    st.t = st.t.wrapping_add(st.delta);
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
mod tests {
    use super::*;

    fn roundtrip(samples: &[(i64, f64)]) -> Chunk {
        let mut c = Chunk::default();
        for (t, v) in samples {
            c.push(*t, *v);
        }
        let got = c.samples();
        assert_eq!(got.len(), samples.len());
        assert_eq!(
            c.last().map(|(t, v)| (t, v.to_bits())),
            samples.last().map(|(t, v)| (*t, v.to_bits()))
        );
        for (a, b) in got.iter().zip(samples) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "value at {}", a.0);
        }
        c
    }

    #[test]
    fn regular_scrapes_of_a_counter_compress_below_two_bytes_a_sample() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i * 7) as f64))
            .collect();
        let c = roundtrip(&samples);
        assert!(c.bytes() < 2 * 120, "{} bytes for 120 samples", c.bytes());
    }

    #[test]
    fn jitter_big_gaps_negative_deltas_and_special_floats_roundtrip() {
        let mut s = vec![
            (0, 0.0),
            (1, -0.0),
            (15_001, f64::NAN),
            (30_000, f64::INFINITY),
            (44_999, f64::NEG_INFINITY),
        ];
        s.push((44_999 + (1 << 40), 1e-300));
        s.push((
            44_999 + (1 << 40) + 3,
            f64::from_bits(0x7ff0_0000_0000_0002),
        ));
        s.push((44_999 + (1 << 41), 123_456.789));
        for i in 0..50 {
            let last = s.last().map(|x| x.0).unwrap_or(0);
            s.push((last + 1000 + (i % 7) * 13 - 40, (i as f64).sin() * 1e6));
        }
        roundtrip(&s);
    }
}
