//! A series' identity: label pairs sorted by name, `__name__` included.

use std::fmt;
use std::sync::Arc;

/// The metric-name label.
pub const NAME: &str = "__name__";

/// Sorted, unique label pairs. Shared: a clone is a reference-count bump,
/// so the series index, query results and aggregations do not copy strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[(String, String)]>);

impl Labels {
    /// Build from pairs: sorted by name, later duplicates win, empty values
    /// dropped (an empty label value means "no such label" in Prometheus).
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        // Senders usually send labels sorted already (remote write must).
        if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Self(out.into())
    }

    /// Identity of this shared label set (its allocation), for memo tables
    /// that also keep the set alive, so the address cannot be reused.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    /// The value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .map(|i| self.0[i].1.as_str())
            .unwrap_or("")
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        self.get(NAME)
    }

    /// All pairs, sorted.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// A copy with `name` set to `value` (removed if empty).
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut p = self.0.to_vec();
        p.retain(|(k, _)| k != name);
        p.push((name.to_owned(), value.to_owned()));
        Self::new(p)
    }

    /// A copy without the metric name.
    pub fn without_name(&self) -> Self {
        if self.0.iter().all(|(k, _)| k != NAME) {
            return self.clone();
        }
        Self(self.0.iter().filter(|(k, _)| k != NAME).cloned().collect())
    }

    /// Only the labels in `names` (`include`), or all but those.
    pub fn project(&self, names: &[String], include: bool) -> Self {
        if !include && self.0.iter().all(|(k, _)| !names.iter().any(|n| n == k)) {
            return self.clone();
        }
        Self(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == k) == include)
                .cloned()
                .collect(),
        )
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name())?;
        let mut first = true;
        for (k, v) in self.0.iter() {
            if k == NAME {
                continue;
            }
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        write!(f, "}}")
    }
}
