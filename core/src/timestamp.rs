//! Timestamps as log lines write them: RFC 3339 strings, or epoch numbers
//! in seconds, milliseconds, microseconds or nanoseconds (told apart by
//! magnitude, as Loki does). Shared by the collector's JSON-lines ingest
//! and the agent's log tailing, so a line means the same time to both.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Nanoseconds since the epoch from an epoch number of any of the four
/// units.
pub fn epoch_ns(x: f64) -> Option<i64> {
    let a = x.abs();
    let ns = if a < 1e11 {
        x * 1e9
    } else if a < 1e14 {
        x * 1e6
    } else if a < 1e17 {
        x * 1e3
    } else {
        x
    };
    (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
}

/// As [`epoch_ns`], exactly, for an integer.
pub fn epoch_ns_int(x: i64) -> Option<i64> {
    let a = x.unsigned_abs();
    let scale = if a < 100_000_000_000 {
        1_000_000_000
    } else if a < 100_000_000_000_000 {
        1_000_000
    } else if a < 100_000_000_000_000_000 {
        1_000
    } else {
        1
    };
    x.checked_mul(scale)
}

/// Nanoseconds since the epoch of an RFC 3339 time.
pub fn rfc3339_ns(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as i64)
        .map_err(|e| format!("timestamp {s:?} is not RFC 3339: {e}"))
}

/// Nanoseconds since the epoch of a JSON timestamp field.
pub fn json_ns(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => rfc3339_ns(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(epoch_ns_int)
            .or_else(|| n.as_f64().and_then(epoch_ns))
            .ok_or_else(|| format!("timestamp {n} is out of range")),
        other => Err(format!(
            "timestamp must be an RFC 3339 string or an epoch number, not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_rfc3339_give_the_same_nanoseconds() {
        let want = 1_700_000_000_123_000_000;
        assert_eq!(json_ns(&Value::from(1_700_000_000_123i64)), Ok(want));
        assert_eq!(json_ns(&Value::from(1_700_000_000_123_000i64)), Ok(want));
        assert_eq!(
            json_ns(&Value::from(1_700_000_000.123)).map(|n| (n - want).abs() < 1_000),
            Ok(true)
        );
        assert_eq!(json_ns(&Value::from("2023-11-14T22:13:20.123Z")), Ok(want));
        assert!(json_ns(&Value::from("yesterday")).is_err());
        assert!(json_ns(&Value::Bool(true)).is_err());
    }
}
