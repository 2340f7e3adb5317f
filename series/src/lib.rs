//! keel-series: the series model every store and engine of Keel shares.
//!
//! It owns what a series is ([`labels::Labels`], sorted name/value pairs),
//! how a selector picks series ([`Matcher`]), and the one narrow trait a
//! query engine reads samples through ([`Queryable`]). The metric store
//! implements it; the PromQL engine consumes it, so the engine can be
//! tested over a vector of series and could later read a remote store.
//!
//! It must never depend on a store, an engine, HTTP or any other Keel
//! crate: everything else depends on it.

pub mod float_text;
pub mod histogram;
pub mod labels;
pub mod varint;

pub use labels::{Labels, NAME};

/// Hash maps on the hot paths: foldhash is several times faster than
/// SipHash on label strings and integer keys, and seeds each map randomly,
/// so label sets sent from outside cannot be crafted to collide.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Add `inc` to the compensated sum `(sum, c)` (Kahan–Neumaier, as
/// Prometheus' `kahanSumInc`): once the sum is infinite the
/// compensation is dropped.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A series with its samples in a time range.
pub type SeriesSamples = (Labels, Vec<(i64, f64)>);

/// A series with its native histogram samples in a time range.
pub type SeriesHistograms = (Labels, Vec<(i64, histogram::Histogram)>);

/// A label matcher as the store understands it.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `name="value"`
    Equal(String, String),
    /// `name!="value"`
    NotEqual(String, String),
    /// `name=~"re"` (anchored)
    Regex(String, regex::Regex),
    /// `name!~"re"` (anchored)
    NotRegex(String, regex::Regex),
}

impl Matcher {
    /// The label it tests.
    pub fn name(&self) -> &str {
        match self {
            Matcher::Equal(n, _)
            | Matcher::NotEqual(n, _)
            | Matcher::Regex(n, _)
            | Matcher::NotRegex(n, _) => n,
        }
    }

    /// Does a label value (empty if absent) match?
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equal(_, v) => value == v,
            Matcher::NotEqual(_, v) => value != v,
            Matcher::Regex(_, re) => re.is_match(value),
            Matcher::NotRegex(_, re) => !re.is_match(value),
        }
    }
}

/// What a query engine reads samples through: every series matching all
/// of `matchers`, with its samples in `[mint, maxt]` (milliseconds), in
/// time order. Stale markers are included; the engine interprets them.
pub trait Queryable: Send + Sync {
    /// The matching series and their samples in the range.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples>;

    /// As [`Self::select`], but `None` when more than `limit` samples
    /// match (an implementation stops loading there; this default loads
    /// all, then counts).
    fn select_bounded(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> Option<Vec<SeriesSamples>> {
        let all = self.select(matchers, mint, maxt);
        (all.iter().map(|(_, s)| s.len()).sum::<usize>() <= limit).then_some(all)
    }

    /// The matching series that hold native histograms, with their
    /// histogram samples in `[mint, maxt]` in time order (a store without
    /// native histograms has none).
    fn select_histograms(
        &self,
        _matchers: &[Matcher],
        _mint: i64,
        _maxt: i64,
    ) -> Vec<SeriesHistograms> {
        Vec::new()
    }
}

/// A fixed set of series, for tests of an engine without a store.
impl Queryable for Vec<SeriesSamples> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        in_range(self, matchers, mint, maxt)
    }
}

/// The series of `all` that match `matchers`, with their samples in
/// `[mint, maxt]` (series left with none left out): a fixed set of series
/// read as a store reads.
fn in_range<T: Clone>(
    all: &[(Labels, Vec<(i64, T)>)],
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Vec<(Labels, Vec<(i64, T)>)> {
    all.iter()
        .filter(|(l, _)| matchers.iter().all(|m| m.matches(l.get(m.name()))))
        .map(|(l, s)| {
            let s: Vec<(i64, T)> = s
                .iter()
                .filter(|(t, _)| (mint..=maxt).contains(t))
                .cloned()
                .collect();
            (l.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// A shared store reads as the store.
impl<T: Queryable + ?Sized> Queryable for std::sync::Arc<T> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        (**self).select(matchers, mint, maxt)
    }

    fn select_bounded(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> Option<Vec<SeriesSamples>> {
        (**self).select_bounded(matchers, mint, maxt, limit)
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<SeriesHistograms> {
        (**self).select_histograms(matchers, mint, maxt)
    }
}

/// Float series and native histogram series together, for tests of an
/// engine without a store.
impl Queryable for (Vec<SeriesSamples>, Vec<SeriesHistograms>) {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.0.select(matchers, mint, maxt)
    }

    fn select_histograms(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<SeriesHistograms> {
        in_range(&self.1, matchers, mint, maxt)
    }
}
