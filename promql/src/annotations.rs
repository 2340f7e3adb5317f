//! Warnings and infos a query's answer carries, as Prometheus 3 returns
//! them beside its data (`"warnings"`, `"infos"`) and Grafana shows them:
//! not errors, but reasons to doubt the answer ("metric might not be a
//! counter", a bad bucket label, a quantile outside [0, 1]).

use std::collections::BTreeSet;

/// Most annotations of each kind kept per query (Prometheus' API keeps
/// 10 and says how many it dropped; Keel keeps what it would show).
const MAX_EACH: usize = 10;

/// A query's annotations, each message once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    warnings: BTreeSet<String>,
    infos: BTreeSet<String>,
    dropped_warnings: BTreeSet<String>,
    dropped_infos: BTreeSet<String>,
}

impl Annotations {
    /// Add a warning (`msg` without its "PromQL warning: " prefix).
    pub fn warn(&mut self, msg: String) {
        Self::add(
            &mut self.warnings,
            &mut self.dropped_warnings,
            "PromQL warning: ",
            msg,
        );
    }

    /// Add an info (`msg` without its "PromQL info: " prefix).
    pub fn info(&mut self, msg: String) {
        Self::add(
            &mut self.infos,
            &mut self.dropped_infos,
            "PromQL info: ",
            msg,
        );
    }

    fn add(set: &mut BTreeSet<String>, dropped: &mut BTreeSet<String>, prefix: &str, msg: String) {
        let msg = format!("{prefix}{msg}");
        if set.contains(&msg) {
            return;
        }
        if set.len() >= MAX_EACH {
            dropped.insert(msg);
        } else {
            set.insert(msg);
        }
    }

    /// The warnings, and a last line saying how many more there were
    /// (in Prometheus' words).
    pub fn warnings(&self) -> Vec<String> {
        Self::listed(&self.warnings, &self.dropped_warnings, "warning")
    }

    /// The infos, and a last line saying how many more there were.
    pub fn infos(&self) -> Vec<String> {
        Self::listed(&self.infos, &self.dropped_infos, "info")
    }

    fn listed(set: &BTreeSet<String>, dropped: &BTreeSet<String>, what: &str) -> Vec<String> {
        let mut v: Vec<String> = set.iter().cloned().collect();
        if !dropped.is_empty() {
            v.push(format!("{} more {what} annotations omitted", dropped.len()));
        }
        v
    }

    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.warnings.is_empty() && self.infos.is_empty()
    }
}

/// Where `name` starts in `query` as `line:column` (1-based), as
/// Prometheus ends an annotation with the position of the expression it
/// is about; `None` when the name is not there exactly once as a whole
/// word (Keel's parser keeps no positions, so it will not guess).
pub fn position_of(query: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    // Part of a longer name, or inside a quoted string (`{__name__="x"}`,
    // where Prometheus would point at the brace, not the string).
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '"' | '\'' | '`');
    let mut found = query.match_indices(name).filter(|(i, _)| {
        let before = query[..*i].chars().next_back();
        let after = query[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    });
    let (at, _) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let line = query[..at].matches('\n').count() + 1;
    let col = at - query[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    Some(format!("{line}:{col}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_is_kept_once_and_the_excess_is_counted() {
        let mut a = Annotations::default();
        a.info("x".into());
        a.info("x".into());
        assert_eq!(a.infos(), ["PromQL info: x"]);
        for _ in 0..3 {
            for i in 0..12 {
                a.warn(format!("w{i:02}"));
            }
        }
        let w = a.warnings();
        assert_eq!(w.len(), 11);
        assert_eq!(
            w[10], "2 more warning annotations omitted",
            "each counted once"
        );
        assert!(!a.is_empty());
    }

    #[test]
    fn a_position_is_given_only_where_the_name_is_unambiguous() {
        assert_eq!(position_of("rate(foo[5m])", "foo").as_deref(), Some("1:6"));
        assert_eq!(
            position_of("sum(\n  rate(foo[5m]))", "foo").as_deref(),
            Some("2:8")
        );
        assert_eq!(position_of("rate(foo[5m]) / rate(foo[1m])", "foo"), None);
        assert_eq!(position_of("rate(foo_bar[5m])", "foo"), None);
        assert_eq!(position_of("rate({__name__=\"foo\"}[5m])", "bar"), None);
        assert_eq!(position_of("rate({__name__=\"foo\"}[5m])", "foo"), None);
    }
}
