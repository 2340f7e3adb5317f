//! A series' identity: label pairs sorted by name, `__name__` included.
//!
//! A label set is one shared allocation: the pair count, then each name
//! and value length-prefixed, back to back. A series costs one allocation
//! of its text rather than two strings a label, which matters when the
//! head holds millions of series (and for the churn of decoding every
//! incoming batch).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The metric-name label.
pub const NAME: &str = "__name__";

/// Sorted, unique label pairs. Shared: a clone is a reference-count bump,
/// so the series index, query results and aggregations do not copy strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels(Arc<[u8]>);

/// The pairs of a [`Labels`], in name order.
#[derive(Clone)]
pub struct Pairs<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Pairs<'a> {
    fn varint(&mut self) -> Option<usize> {
        crate::varint::take(&mut self.rest).and_then(|v| usize::try_from(v).ok())
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.varint()?;
        let rest: &'a [u8] = self.rest;
        let (s, rest) = rest.split_at_checked(n)?;
        self.rest = rest;
        Some(s)
    }

    fn text(&mut self) -> Option<&'a str> {
        // Built only from &str, so this never fails.
        std::str::from_utf8(self.bytes()?).ok()
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some((self.text()?, self.text()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Pairs<'_> {}

impl Labels {
    /// Build from pairs: sorted by name, later duplicates win, empty values
    /// dropped (an empty label value means "no such label" in Prometheus).
    pub fn new<K: AsRef<str>, V: AsRef<str>>(mut pairs: Vec<(K, V)>) -> Self {
        // Senders usually send labels sorted already (remote write must).
        if !pairs.is_sorted_by(|a, b| a.0.as_ref() <= b.0.as_ref()) {
            pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        }
        let mut kept: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            match kept.last_mut() {
                Some(last) if last.0 == k.as_ref() => last.1 = v.as_ref(),
                _ => kept.push((k.as_ref(), v.as_ref())),
            }
        }
        kept.retain(|(_, v)| !v.is_empty());
        Self::from_sorted(kept.into_iter())
    }

    /// Encode pairs already sorted, unique and non-empty.
    fn from_sorted<'a>(pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let text: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut buf = Vec::with_capacity(text + 2);
        encode_sorted(pairs, &mut buf);
        Self(buf.into())
    }

    /// The set whose encoding (by [`encode_sorted`]) is `bytes`.
    pub fn from_encoded(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    /// Identity of this shared label set (its allocation), for memo tables
    /// that also keep the set alive, so the address cannot be reused.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    /// All pairs, sorted by name.
    pub fn pairs(&self) -> Pairs<'_> {
        let mut p = Pairs {
            rest: &self.0,
            left: 1,
        };
        let left = p.varint().unwrap_or(0);
        Pairs { left, ..p }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// True for the empty label set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `name`, or "". Names before it are compared as bytes,
    /// not read as text: on an encoding that is not text (only
    /// [`Self::from_encoded`] of corrupt bytes makes one) it may find a
    /// value past a bad pair, where [`Self::pairs`] stops at it.
    pub fn get(&self, name: &str) -> &str {
        // Names compare as bytes (the order they are sorted in), so only
        // the value found is read as text.
        let mut p = self.pairs();
        while p.left > 0 {
            p.left -= 1;
            let (Some(k), Some(v)) = (p.bytes(), p.bytes()) else {
                break;
            };
            match k.cmp(name.as_bytes()) {
                Ordering::Less => continue,
                Ordering::Equal => return std::str::from_utf8(v).unwrap_or_default(),
                Ordering::Greater => break,
            }
        }
        ""
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        self.get(NAME)
    }

    /// A copy with `name` set to `value` (removed if empty).
    pub fn with(&self, name: &str, value: &str) -> Self {
        let mut p: Vec<(&str, &str)> = self.pairs().filter(|(k, _)| *k != name).collect();
        p.push((name, value));
        Self::new(p)
    }

    /// A copy without the metric name.
    pub fn without_name(&self) -> Self {
        if self.pairs().all(|(k, _)| k != NAME) {
            return self.clone();
        }
        let p: Vec<(&str, &str)> = self.pairs().filter(|(k, _)| *k != NAME).collect();
        Self::from_sorted(p.into_iter())
    }

    /// Only the labels in `names` (`include`), or all but those.
    pub fn project(&self, names: &[String], include: bool) -> Self {
        if !include && self.pairs().all(|(k, _)| !names.iter().any(|n| n == k)) {
            return self.clone();
        }
        let p: Vec<(&str, &str)> = self
            .pairs()
            .filter(|(k, _)| names.iter().any(|n| n == k) == include)
            .collect();
        Self::from_sorted(p.into_iter())
    }
}

/// Append the encoding of pairs already sorted by name, unique and with
/// non-empty values: what a [`Labels`] holds, and what it hashes and
/// compares equal as (see its `Borrow<[u8]>`), so a series can be looked
/// up by pairs borrowed from a request without allocating.
pub fn encode_sorted<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) {
    if pairs.len() == 0 {
        // One encoding per set: the empty set is the empty slice.
        return;
    }
    crate::varint::put(out, pairs.len() as u64);
    for (k, v) in pairs {
        crate::varint::put(out, k.len() as u64);
        out.extend_from_slice(k.as_bytes());
        crate::varint::put(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
}

impl Borrow<[u8]> for Labels {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Ord for Labels {
    /// Pair by pair, as Prometheus orders label sets.
    fn cmp(&self, other: &Self) -> Ordering {
        self.pairs().cmp(other.pairs())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{", self.name())?;
        let mut first = true;
        for (k, v) in self.pairs() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_finds_what_a_walk_of_the_pairs_finds() {
        let l = Labels::new(vec![
            ("A", "upper"),
            ("__name__", "up"),
            ("a", "é"),
            ("job", "api"),
            ("zz", "last"),
        ]);
        for name in [
            "A", "__name__", "a", "job", "zz", "", "0", "B", "b", "zzz", "é",
        ] {
            let walked = l.pairs().find(|(k, _)| *k == name).map_or("", |(_, v)| v);
            assert_eq!(l.get(name), walked, "{name:?}");
        }
        assert_eq!(l.get("a"), "é");
        assert_eq!(Labels::default().get("a"), "");
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.to_vec())
    }

    #[test]
    fn pairs_come_back_sorted_deduplicated_and_without_empty_values() {
        let x = l(&[
            ("b", "2"),
            ("a", "1"),
            ("b", "3"),
            ("c", ""),
            ("z", "\0é\u{10ffff}"),
        ]);
        let got: Vec<(&str, &str)> = x.pairs().collect();
        assert_eq!(got, [("a", "1"), ("b", "3"), ("z", "\0é\u{10ffff}")]);
        assert_eq!(x.len(), 3);
        assert_eq!(x.get("b"), "3");
        assert_eq!(x.get("c"), "");
        assert_eq!(x.get("zz"), "");
        assert!(Labels::default().is_empty());
        assert_eq!(Labels::new(Vec::<(&str, &str)>::new()), Labels::default());
        assert_eq!(
            l(&[("a", "1")]).without_name().project(&[], true),
            Labels::default()
        );
        assert_eq!(Labels::default().get(NAME), "");
    }

    #[test]
    fn long_values_and_many_labels_roundtrip() {
        let long = "v".repeat(70_000);
        let names: Vec<String> = (0..300).map(|i| format!("l{i:03}")).collect();
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
        pairs.push(("big", &long));
        let x = Labels::new(pairs);
        assert_eq!(x.len(), 301);
        assert_eq!(x.get("big").len(), 70_000);
        assert_eq!(x.get("l299"), "x");
    }

    #[test]
    fn order_is_pairwise_not_by_encoding() {
        // Encoded lengths would put "b" (shorter) before "aa"; pairs must not.
        let a = l(&[("x", "aa")]);
        let b = l(&[("x", "b")]);
        assert!(a < b);
        let fewer = l(&[("x", "a")]);
        let more = l(&[("x", "a"), ("y", "a")]);
        assert!(fewer < more);
    }

    #[test]
    fn with_without_name_and_project() {
        let x = l(&[(NAME, "up"), ("job", "node"), ("instance", "h:1")]);
        assert_eq!(x.with("job", "api").get("job"), "api");
        assert_eq!(x.with("job", "").get("job"), "");
        assert_eq!(x.without_name().name(), "");
        assert_eq!(x.without_name().len(), 2);
        let by = x.project(&["job".to_owned()], true);
        assert_eq!(by.pairs().collect::<Vec<_>>(), [("job", "node")]);
        assert_eq!(x.to_string(), "up{instance=\"h:1\", job=\"node\"}");
    }
}
