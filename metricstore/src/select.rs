//! Reading the store: the series matching a selector and their samples
//! in a range (blocks and head merged), bounded by a sample limit when a
//! query asks, and the label names and values.

use std::borrow::Borrow as _;

use keel_series::labels::Labels;
use keel_series::{Matcher, SeriesSamples};

use crate::Store;
use crate::head::Head;

impl Store {
    pub(crate) fn matching(head: &Head, matchers: &[Matcher]) -> Vec<u32> {
        // Start from the smallest posting list of an equality matcher on a
        // non-empty value, if any; else scan every series.
        let mut candidates: Option<&[u32]> = None;
        for m in matchers {
            if let Matcher::Equal(n, v) = m
                && !v.is_empty()
            {
                let list = head
                    .postings
                    .get(n)
                    .and_then(|vals| vals.get(v))
                    .map_or(&[][..], Vec::as_slice);
                if candidates.is_none_or(|c| list.len() < c.len()) {
                    candidates = Some(list);
                }
            }
        }
        let all: Vec<u32>;
        let cands: &[u32] = match candidates {
            Some(c) => c,
            None => {
                all = (0..head.series.len() as u32).collect();
                &all
            }
        };
        cands
            .iter()
            .copied()
            .filter(|r| {
                let l = &head.series[*r as usize].labels;
                matchers.iter().all(|m| m.matches(l.get(m.name())))
            })
            .collect()
    }

    /// Every series matching all `matchers`, with its samples in `[mint, maxt]`
    /// (series with no sample there are left out).
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.select_bounded(matchers, mint, maxt, usize::MAX)
            .unwrap_or_default()
    }

    /// As [`Self::select`], but `None` as soon as more than `limit`
    /// samples are loaded: a query past its sample limit stops before it
    /// holds them all. (Samples a block and the head both hold are counted
    /// twice before they are merged, so a query just under the limit with
    /// such overlap may be refused.)
    pub fn select_bounded(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> Option<Vec<SeriesSamples>> {
        let mut loaded = 0usize;
        let mut take = |n: usize| {
            loaded = loaded.saturating_add(n);
            loaded <= limit
        };
        let mut merged: keel_series::FastMap<Labels, Vec<(i64, f64)>> =
            keel_series::FastMap::default();
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            for (l, s) in b.select(matchers, mint, maxt) {
                if !take(s.len()) {
                    return None;
                }
                merged.entry(l).or_default().extend(s);
            }
        }
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        if merged.is_empty() {
            // Only the head has samples in range (the common case for
            // rules): nothing to merge, and a series' samples come out
            // of `range` in order (checked: sorting is the exception).
            let mut out = Vec::new();
            for r in Self::matching(&head, matchers) {
                let s = &head.series[r as usize];
                let mut samples = s.range(&head.arena, mint, maxt);
                if !take(samples.len()) {
                    return None;
                }
                if !samples.is_sorted_by(|a, b| a.0 < b.0) {
                    samples.sort_by_key(|(t, _)| *t);
                    samples.dedup_by_key(|(t, _)| *t);
                }
                if !samples.is_empty() {
                    out.push((s.labels.clone(), samples));
                }
            }
            return Some(out);
        }
        for r in Self::matching(&head, matchers) {
            let s = &head.series[r as usize];
            let samples = s.range(&head.arena, mint, maxt);
            if !take(samples.len()) {
                return None;
            }
            if !samples.is_empty() {
                merged.entry(s.labels.clone()).or_default().extend(samples);
            }
        }
        Some(
            merged
                .into_iter()
                .map(|(l, mut s)| {
                    s.sort_by_key(|(t, _)| *t);
                    s.dedup_by_key(|(t, _)| *t);
                    (l, s)
                })
                .collect(),
        )
    }

    /// Label sets of the series matching `matchers` that have samples in range.
    pub fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        self.select(matchers, mint, maxt)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    }

    /// A label set for each encoding (see `labels::encode_sorted`): the
    /// head's own when the series exists, so a batch of known series
    /// allocates no labels; a new one otherwise.
    pub fn resolve_labels<'a>(&self, encoded: impl Iterator<Item = &'a [u8]>) -> Vec<Labels> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        encoded
            .map(|bytes| match head.by_labels.get(&head.series, bytes) {
                Some(r) => head.series[r as usize].labels.clone(),
                None => Labels::from_encoded(bytes),
            })
            .collect()
    }

    /// The newest sample of the series with exactly these labels.
    pub fn last(&self, labels: &Labels) -> Option<(i64, f64)> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        head.by_labels
            .get(&head.series, labels.borrow())
            .and_then(|r| head.series[r as usize].last(&head.arena))
    }

    /// Every label name in use.
    pub fn label_names(&self) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = head.postings.keys().cloned().collect();
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            v.extend(b.label_values().map(|(k, _)| k.clone()));
        }
        v.sort();
        v.dedup();
        v
    }

    /// Every value of label `name`.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = head
            .postings
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}
