//! LEB128 variable-length integers, as label sets and packed chunks
//! encode their lengths and numbers.

/// Append `v`, seven bits a byte, least significant first.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read one from the front of `buf`, advancing it; None if `buf` ends
/// first or the number runs past 64 bits.
pub fn take(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if *b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Map a signed number to an unsigned one, small magnitudes to small
/// numbers (0, -1, 1, -2 … → 0, 1, 2, 3 …), so that it packs short.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrips_and_refuses_truncated_input() {
        let mut out = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            super::put(&mut out, v);
        }
        let mut buf = out.as_slice();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(super::take(&mut buf), Some(v));
        }
        assert!(buf.is_empty());
        assert_eq!(super::take(&mut [0x80u8, 0x80].as_slice()), None);
        for v in [0, -1, 1, i64::MIN, i64::MAX, 1_800_000_000_000] {
            assert_eq!(super::unzigzag(super::zigzag(v)), v);
        }
        assert_eq!(super::zigzag(-1), 1);
    }
}
