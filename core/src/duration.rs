//! Durations written the human way in config files: `250ms`, `5s`, `1m30s`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serde adapter: `#[serde(with = "keel_core::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// Serde adapter: writes the duration back in the same human form.
pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*v).to_string())
}

/// Parse `250ms`, `5s`, `1m30s`, `2h`.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 250ms, 5s, 1m30s)"))
}

/// A duration the way config files write it (`5s`, `1m 30s`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
