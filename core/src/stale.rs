//! Prometheus' staleness marker: the NaN a scraper writes when a series
//! stops (its target died, or it left a scrape), so queries stop seeing
//! the series at once instead of for the 5-minute lookback. It travels in
//! OTLP as a point flagged `FLAG_NO_RECORDED_VALUE`.

/// The marker's exact bit pattern (any other NaN is an ordinary value).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The marker as a value.
pub fn marker() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// True for the staleness marker.
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marker_bits_are_stale() {
        assert!(is_stale(marker()));
        assert!(!is_stale(f64::NAN));
        assert!(!is_stale(0.0));
    }
}
