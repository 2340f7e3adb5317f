//! Metric metadata — each metric family's type, help and unit — as
//! senders state it: OTLP's metric kind, description and unit, remote
//! write's `MetricMetadata`, and the `# TYPE` / `# HELP` / `# UNIT` lines
//! the agent scrapes. Served by `/api/v1/metadata` (Grafana's query
//! editor shows it). Held in memory, as Prometheus holds what it
//! scrapes: senders state it again (the agent every minute), so a
//! restart forgets it only until then.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

/// One statement of a family's metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Meta {
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`,
    /// `info`, `stateset` or `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The help text.
    pub help: String,
    /// The unit (`seconds`), or empty.
    pub unit: String,
}

/// Different statements kept of one family (senders may disagree, as
/// two targets' versions may): Prometheus lists each.
const PER_FAMILY: usize = 10;

/// Families kept: a sender inventing names cannot grow this without end.
const FAMILIES: usize = 200_000;

/// Longest help text and unit kept (bytes; longer ones are cut).
const HELP_BYTES: usize = 1024;
const UNIT_BYTES: usize = 64;

/// `s` cut to at most `n` bytes, on a character boundary.
fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The metadata of every family stated so far.
#[derive(Debug, Default)]
pub struct Metadata {
    families: RwLock<BTreeMap<String, Vec<Meta>>>,
}

impl Metadata {
    /// Record statements `(family, meta)`; what is known already costs a
    /// read lock only.
    pub fn record(&self, stated: &[(String, Meta)]) {
        let known = |m: &BTreeMap<String, Vec<Meta>>, (name, meta): &(String, Meta)| {
            m.get(name).is_some_and(|v| v.contains(meta))
        };
        {
            let m = self.families.read().unwrap_or_else(|e| e.into_inner());
            if stated.iter().all(|s| known(&m, s)) {
                return;
            }
        }
        let mut m = self.families.write().unwrap_or_else(|e| e.into_inner());
        for (name, meta) in stated {
            let meta = &Meta {
                kind: cut(&meta.kind, UNIT_BYTES).to_owned(),
                help: cut(&meta.help, HELP_BYTES).to_owned(),
                unit: cut(&meta.unit, UNIT_BYTES).to_owned(),
            };
            if name.len() > HELP_BYTES {
                continue;
            }
            if name.is_empty() || known(&m, &(name.clone(), meta.clone())) {
                continue;
            }
            if !m.contains_key(name) && m.len() >= FAMILIES {
                continue;
            }
            let v = m.entry(name.clone()).or_default();
            // The newest statements are kept.
            if v.len() >= PER_FAMILY {
                v.remove(0);
            }
            v.push(meta.clone());
        }
    }

    /// Families (only `metric` if given), at most `limit` of them and
    /// `per_metric` statements each (0: no limit), by name.
    pub fn query(
        &self,
        metric: Option<&str>,
        limit: usize,
        per_metric: usize,
    ) -> BTreeMap<String, Vec<Meta>> {
        let m = self.families.read().unwrap_or_else(|e| e.into_inner());
        let cut = |v: &Vec<Meta>| {
            let mut v = v.clone();
            if per_metric > 0 {
                v.truncate(per_metric);
            }
            v
        };
        let picked: Box<dyn Iterator<Item = (&String, &Vec<Meta>)>> = match metric {
            Some(name) => Box::new(m.get_key_value(name).into_iter()),
            None => Box::new(m.iter()),
        };
        picked
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|(k, v)| (k.clone(), cut(v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, help: &str) -> Meta {
        Meta {
            kind: kind.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn statements_are_kept_once_each_and_limits_cut_them() {
        let md = Metadata::default();
        md.record(&[
            ("a_total".into(), meta("counter", "A.")),
            ("b".into(), meta("gauge", "B.")),
        ]);
        md.record(&[("a_total".into(), meta("counter", "A."))]);
        md.record(&[("a_total".into(), meta("counter", "A, v2."))]);
        let all = md.query(None, 0, 0);
        assert_eq!(all.len(), 2);
        assert_eq!(all["a_total"].len(), 2, "two statements, once each");
        assert_eq!(md.query(None, 1, 0).len(), 1);
        assert_eq!(md.query(None, 0, 1)["a_total"], [meta("counter", "A.")]);
        assert_eq!(md.query(Some("b"), 0, 0)["b"], [meta("gauge", "B.")]);
        assert!(md.query(Some("c"), 0, 0).is_empty());
    }

    #[test]
    fn a_family_keeps_its_newest_statements_only() {
        let md = Metadata::default();
        for i in 0..(PER_FAMILY + 3) {
            md.record(&[("x".into(), meta("gauge", &format!("v{i}")))]);
        }
        let v = &md.query(Some("x"), 0, 0)["x"];
        assert_eq!(v.len(), PER_FAMILY);
        assert_eq!(v.last().map(|m| m.help.as_str()), Some("v12"));
    }
}
