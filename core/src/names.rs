//! Prometheus' name rules, shared by every place that checks a name,
//! and the names agent and collector agree on over OTLP.

/// The OTLP metric metadata (key, value) with which the agent marks an
/// explicit-bucket histogram it converted from a scraped classic one
/// (`convert_classic_histograms_to_nhcb`): the collector stores it as
/// one native histogram with custom buckets.
pub const OTLP_CUSTOM_BUCKETS: (&str, &str) = ("prometheus.histogram", "custom_buckets");

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus() {
        assert!(
            is_label_name("_a1")
                && !is_label_name("1a")
                && !is_label_name("a:b")
                && !is_label_name("")
        );
        assert!(is_metric_name("job:x:rate5m") && !is_metric_name("9x") && !is_metric_name("a-b"));
    }
}
