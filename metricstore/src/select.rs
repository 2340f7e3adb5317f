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
        crate::head::matching(&head.postings, head.series.len(), matchers, |r| {
            &head.series[r as usize].labels
        })
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

    /// Whether the head holds a sample of each of `series`, in one pass
    /// under one lock (ingest asks this of every exemplar's series).
    pub fn holds(&self, series: &[&Labels]) -> Vec<bool> {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        series
            .iter()
            .map(|l| {
                head.by_labels
                    .get(&head.series, (*l).borrow())
                    .and_then(|r| head.series[r as usize].last(&head.arena))
                    .is_some()
            })
            .collect()
    }

    /// Every label name in use, head and blocks.
    pub fn label_names(&self) -> Vec<String> {
        self.label_names_in(&[], i64::MIN, i64::MAX)
    }

    /// Every value of label `name`, head and blocks.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.label_values_in(name, &[], i64::MIN, i64::MAX)
    }

    /// Call `f` with the labels of every series, in the head and in the
    /// blocks, that matches one of `sets` (no sets: every series) and has
    /// a chunk in `[mint, maxt]`. A series both hold is visited twice.
    /// Chunk times only: no sample is decoded.
    pub fn visit_series(
        &self,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(&Labels),
    ) {
        let every: [Vec<Matcher>; 1] = [Vec::new()];
        let sets = if sets.is_empty() { &every[..] } else { sets };
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            for ms in sets {
                b.visit_series(ms, mint, maxt, &mut f);
            }
        }
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let all_time = mint == i64::MIN && maxt == i64::MAX;
        for ms in sets {
            for r in Self::matching(&head, ms) {
                let s = &head.series[r as usize];
                if all_time || s.overlaps(&head.arena, mint, maxt) {
                    f(&s.labels);
                }
            }
        }
        drop(head);
        self.histograms.visit(sets, mint, maxt, f);
    }

    /// The label sets of the series matching one of `sets` with a chunk
    /// in `[mint, maxt]`, sorted, each once.
    pub fn series_labels(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out = std::collections::BTreeSet::new();
        self.visit_series(sets, mint, maxt, |l| {
            if !out.contains(l) {
                out.insert(l.clone());
            }
        });
        out.into_iter().collect()
    }

    /// The label names of the series matching one of `sets` (none: every
    /// series) with a chunk in `[mint, maxt]`, sorted.
    pub fn label_names_in(&self, sets: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        if sets.is_empty() {
            // From the postings: a name is in range if one series with it is.
            // From the postings: a name is in range if one series with it is.
            self.visit_postings(mint, maxt, |name, _, in_range| {
                if !out.contains(name) && in_range() {
                    out.insert(name.to_owned());
                }
                if out.contains(name) {
                    Visit::NextName
                } else {
                    Visit::Next
                }
            });
            // Native histogram series are not in the postings.
            self.histograms.visit(sets, mint, maxt, |l| {
                for (k, _) in l.pairs() {
                    if !out.contains(k) {
                        out.insert(k.to_owned());
                    }
                }
            });
        } else {
            self.visit_series(sets, mint, maxt, |l| {
                for (k, _) in l.pairs() {
                    if !out.contains(k) {
                        out.insert(k.to_owned());
                    }
                }
            });
        }
        out.into_iter().collect()
    }

    /// The values of label `name` on the series matching one of `sets`
    /// (none: every series) with a chunk in `[mint, maxt]`, sorted.
    pub fn label_values_in(
        &self,
        name: &str,
        sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        if sets.is_empty() {
            self.visit_postings(mint, maxt, |n, value, in_range| {
                if n != name {
                    return Visit::NextName;
                }
                if !out.contains(value) && in_range() {
                    out.insert(value.to_owned());
                }
                Visit::Next
            });
        } else {
            // As Prometheus does: the matched series marked, then each
            // value of `name` taken if one of its series is marked (and
            // in range), rather than each matched series' labels read.
            for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
                if b.max_t < mint || b.min_t > maxt {
                    continue;
                }
                let whole = mint <= b.min_t && b.max_t <= maxt;
                let len = b.series_count();
                let marked = marked(b.postings(), len, sets, |r| b.labels(r));
                values_of(
                    b.postings(),
                    name,
                    &marked,
                    |r| whole || b.has_chunk_in(r, mint, maxt),
                    &mut out,
                );
            }
            let head = self.head.read().unwrap_or_else(|e| e.into_inner());
            let all_time = mint == i64::MIN && maxt == i64::MAX;
            let marked = marked(&head.postings, head.series.len(), sets, |r| {
                &head.series[r as usize].labels
            });
            values_of(
                &head.postings,
                name,
                &marked,
                |r| all_time || head.series[r as usize].overlaps(&head.arena, mint, maxt),
                &mut out,
            );
        }
        // Native histogram series are not in the postings.
        self.histograms.visit(sets, mint, maxt, |l| {
            let v = l.get(name);
            if !v.is_empty() && !out.contains(v) {
                out.insert(v.to_owned());
            }
        });
        out.into_iter().collect()
    }

    /// Walk every label pair of the head's and the blocks' postings:
    /// `f(name, value, in_range)` where `in_range()` says whether one of
    /// the pair's series has a chunk in `[mint, maxt]`.
    fn visit_postings(
        &self,
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(&str, &str, &dyn Fn() -> bool) -> Visit,
    ) {
        let mut walk = |postings: &crate::head::Postings, in_range: &dyn Fn(u32) -> bool| {
            for (name, values) in postings {
                for (value, refs) in values {
                    let any = || refs.iter().any(|r| in_range(*r));
                    if let Visit::NextName = f(name, value, &any) {
                        break;
                    }
                }
            }
        };
        for b in self.blocks.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if b.max_t < mint || b.min_t > maxt {
                continue;
            }
            let whole = mint <= b.min_t && b.max_t <= maxt;
            walk(b.postings(), &|r| whole || b.has_chunk_in(r, mint, maxt));
        }
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let all_time = mint == i64::MIN && maxt == i64::MAX;
        walk(&head.postings, &|r| {
            all_time || head.series[r as usize].overlaps(&head.arena, mint, maxt)
        });
    }
}

/// A bit for each of `len` series: set when it matches one of `sets`.
fn marked<'a>(
    postings: &crate::head::Postings,
    len: usize,
    sets: &[Vec<Matcher>],
    labels: impl Fn(u32) -> &'a Labels,
) -> Vec<u64> {
    let mut bits = vec![0u64; len.div_ceil(64)];
    for ms in sets {
        for r in crate::head::matching(postings, len, ms, &labels) {
            if let Some(w) = bits.get_mut(r as usize / 64) {
                *w |= 1 << (r % 64);
            }
        }
    }
    bits
}

/// Into `out`, each value of label `name` one of whose series is
/// `marked` and `in_range`.
fn values_of(
    postings: &crate::head::Postings,
    name: &str,
    marked: &[u64],
    in_range: impl Fn(u32) -> bool,
    out: &mut std::collections::BTreeSet<String>,
) {
    let Some(values) = postings.get(name) else {
        return;
    };
    let is_marked = |r: u32| {
        marked
            .get(r as usize / 64)
            .is_some_and(|w| w >> (r % 64) & 1 == 1)
    };
    for (value, refs) in values {
        if !out.contains(value) && refs.iter().any(|&r| is_marked(r) && in_range(r)) {
            out.insert(value.clone());
        }
    }
}

/// Where [`Store::visit_postings`] goes after a label pair.
enum Visit {
    /// The next value.
    Next,
    /// The next name.
    NextName,
}

/// The head's cardinality, as Prometheus' `/api/v1/status/tsdb` reports
/// it: the top entries of each list, most first.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cardinality {
    /// Series, label pairs, chunks and the time span of the head.
    pub head_stats: HeadStats,
    /// Series of each metric name.
    pub series_count_by_metric_name: Vec<Count>,
    /// Distinct values of each label name.
    pub label_value_count_by_label_name: Vec<Count>,
    /// Bytes of label values of each label name, summed over its series.
    pub memory_in_bytes_by_label_name: Vec<Count>,
    /// Series of each `name=value` pair.
    pub series_count_by_label_value_pair: Vec<Count>,
}

/// The head's totals.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadStats {
    /// Series.
    pub num_series: u64,
    /// Distinct label pairs.
    pub num_label_pairs: u64,
    /// Chunks, sealed and open.
    pub chunk_count: u64,
    /// First and last sample time (ms; 0 when empty).
    pub min_time: i64,
    /// Last sample time.
    pub max_time: i64,
}

/// A name and how many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    /// The metric name, label name or `name=value` pair.
    pub name: String,
    /// How many.
    pub value: u64,
}

/// The `limit` largest of `items`, largest first (ties by name).
fn top(mut items: Vec<Count>, limit: usize) -> Vec<Count> {
    items.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
    items.truncate(limit);
    items
}

impl Store {
    /// The head's cardinality: the `limit` largest of each list.
    pub fn cardinality(&self, limit: usize) -> Cardinality {
        let head = self.head.read().unwrap_or_else(|e| e.into_inner());
        let (mut by_name, mut values, mut memory, mut pairs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut num_pairs = 0u64;
        for (name, vals) in &head.postings {
            num_pairs += vals.len() as u64;
            values.push(Count {
                name: name.clone(),
                value: vals.len() as u64,
            });
            memory.push(Count {
                name: name.clone(),
                value: vals.iter().map(|(v, r)| (v.len() * r.len()) as u64).sum(),
            });
            for (v, refs) in vals {
                let count = Count {
                    name: format!("{name}={v}"),
                    value: refs.len() as u64,
                };
                if name == keel_series::labels::NAME {
                    by_name.push(Count {
                        name: v.clone(),
                        value: count.value,
                    });
                }
                pairs.push(count);
            }
        }
        let chunks: u64 = head
            .series
            .iter()
            .map(|s| {
                let mut n = u64::from(!s.head.is_empty());
                let mut r = s.newest_sealed;
                while let Some(c) = head.arena.get(r) {
                    n += 1;
                    r = c.prev;
                }
                n
            })
            .sum();
        Cardinality {
            head_stats: HeadStats {
                num_series: head.series.len() as u64,
                num_label_pairs: num_pairs,
                chunk_count: chunks,
                min_time: head.min_t().unwrap_or(0),
                max_time: head.max_t().unwrap_or(0),
            },
            series_count_by_metric_name: top(by_name, limit),
            label_value_count_by_label_name: top(values, limit),
            memory_in_bytes_by_label_name: top(memory, limit),
            series_count_by_label_value_pair: top(pairs, limit),
        }
    }
}
