//! Prometheus' name rules, shared by every place that checks a name.

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
