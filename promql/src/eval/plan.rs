//! Planning a query's reads and slicing them: the expression is walked
//! once to fetch each selector's series for the whole span it can need
//! (`plan`, `fetch`), then every evaluation step slices what was fetched
//! (`latest`, `instant_vector`, `range_vector`), after `@` and `offset`.

use keel_core::clock::unix_ms as ms;
use keel_core::stale::is_stale;
use keel_series::labels::Labels;
use promql_parser::parser::{AtModifier, Expr, VectorSelector};

use super::{Ctx, deeper, dur_ms, matchers, offset_ms};
use crate::EvalError;
use crate::limits::EXECUTION;
use crate::value::{HistogramSample, RangeSeries, Sample};

impl Ctx<'_> {
    /// Fetch every selector's data for the span it can need. `before` is
    /// how far before an evaluation time the enclosing expressions reach
    /// (subqueries, offsets); `after` how far after (negative offsets).
    pub(super) fn plan(&mut self, e: &Expr, before: i64, after: i64) -> Result<(), EvalError> {
        deeper(|| self.plan_node(e, before, after))
    }

    fn plan_node(&mut self, e: &Expr, before: i64, after: i64) -> Result<(), EvalError> {
        match e {
            Expr::VectorSelector(vs) => {
                check_at(&vs.at)?;
                self.fetch(vs, before.saturating_add(self.lookback), after)
            }
            Expr::MatrixSelector(m) => {
                check_at(&m.vs.at)?;
                self.fetch(&m.vs, before.saturating_add(dur_ms(m.range)), after)
            }
            Expr::Aggregate(a) => {
                self.allow(&a.op.to_string())?;
                if let Some(p) = &a.param {
                    self.plan(p, before, after)?;
                }
                self.plan(&a.expr, before, after)
            }
            Expr::Unary(u) => self.plan(&u.expr, before, after),
            Expr::Binary(b) => {
                self.plan(&b.lhs, before, after)?;
                self.plan(&b.rhs, before, after)
            }
            Expr::Paren(p) => self.plan(&p.expr, before, after),
            Expr::Subquery(s) => {
                let off = offset_ms(&s.offset);
                let step = s.step.map(dur_ms).unwrap_or(self.range.step).max(1);
                let reach = dur_ms(s.range).saturating_add(step);
                if s.at.is_some() {
                    // Pinned by `@`: the inner steps are in one window,
                    // whatever the query's range or the enclosing
                    // expressions' reach; its selectors read around it.
                    check_at(&s.at)?;
                    let end = self.at_time(&s.at, self.range.start).saturating_sub(off);
                    let outer = self.pin.replace((end.saturating_sub(reach), end));
                    let planned = self.plan(&s.expr, 0, 0);
                    self.pin = outer;
                    return planned;
                }
                self.plan(
                    &s.expr,
                    before.saturating_add(reach).saturating_add(off.max(0)),
                    after.saturating_add(off.saturating_neg().max(0)),
                )
            }
            Expr::Call(c) => {
                self.allow(c.func.name)?;
                c.args
                    .args
                    .iter()
                    .try_for_each(|a| self.plan(a, before, after))
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    /// Refuse an experimental function unless the query's settings
    /// allow it (Prometheus refuses it when parsing, with these words).
    fn allow(&self, name: &str) -> Result<(), EvalError> {
        if !crate::functions::is_experimental(name) || self.budget.experimental() {
            return Ok(());
        }
        Err(EvalError::Parse(match name {
            "limitk" | "limit_ratio" => format!(
                "{name}() is experimental and must be enabled with query.experimental_functions \
                 (Prometheus: --enable-feature=promql-experimental-functions)"
            ),
            _ => format!(
                "function {name:?} is not enabled: set query.experimental_functions \
                 (Prometheus: --enable-feature=promql-experimental-functions)"
            ),
        }))
    }

    fn fetch(&mut self, vs: &VectorSelector, before: i64, after: i64) -> Result<(), EvalError> {
        let off = offset_ms(&vs.offset);
        let (lo, hi) = match &vs.at {
            Some(AtModifier::At(t)) => (ms(*t), ms(*t)),
            Some(AtModifier::Start) => (self.range.start, self.range.start),
            Some(AtModifier::End) => (self.range.end, self.range.end),
            None => self.pin.unwrap_or((self.range.start, self.range.end)),
        };
        let key = vs as *const VectorSelector as usize;
        let m = matchers(vs)?;
        self.budget.check(self.place())?;
        // Loading stops at what the sample limit still allows.
        let room = self
            .budget
            .max_samples()
            .saturating_sub(self.held.saturating_add(self.step_samples));
        let data = self
            .store
            .select_bounded(
                &m,
                lo.saturating_sub(off).saturating_sub(before),
                hi.saturating_sub(off).saturating_add(after),
                room,
            )
            .ok_or(EvalError::TooManySamples(EXECUTION))?;
        let samples = data.iter().map(|(_, p)| p.len()).sum();
        self.fetched.insert(key, data);
        self.keep(samples)?;
        let histograms = self.store.select_histograms(
            &m,
            lo.saturating_sub(off).saturating_sub(before),
            hi.saturating_sub(off).saturating_add(after),
        );
        if !histograms.is_empty() {
            // A histogram is held as one sample (as Prometheus counts it
            // for its sample limit since 3.x, by its size in buckets, Keel
            // does not yet).
            let n = histograms.iter().map(|(_, p)| p.len()).sum();
            self.fetched_h.insert(key, histograms);
            self.keep(n)?;
        }
        Ok(())
    }

    /// A selector's native histogram series as fetched.
    pub(super) fn histogram_series(&self, vs: &VectorSelector) -> &[keel_series::SeriesHistograms] {
        self.fetched_h
            .get(&(vs as *const VectorSelector as usize))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Each histogram series' latest sample within the lookback at `t`,
    /// skipping series that went stale.
    pub(super) fn instant_histograms(&self, vs: &VectorSelector, t: i64) -> Vec<HistogramSample> {
        let at = self.read_time(vs, t);
        let mut out = Vec::new();
        for (labels, points) in self.histogram_series(vs) {
            if let Some((_, h)) = newest_within(points, at, self.lookback, |h| h.is_stale()) {
                out.push(HistogramSample {
                    labels: labels.clone(),
                    histogram: h.clone(),
                });
            }
        }
        out
    }

    /// Each histogram series' samples in `(at - range, at]`, stale
    /// markers left out.
    pub(super) fn histogram_windows(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Vec<(&Labels, Vec<(i64, keel_series::histogram::Histogram)>)> {
        let at = self.read_time(vs, t);
        let mut out = Vec::new();
        for (labels, points) in self.histogram_series(vs) {
            let pts = window(points, at, range, |h| h.is_stale());
            if !pts.is_empty() {
                out.push((labels, pts));
            }
        }
        out
    }

    /// The time an `@` modifier pins evaluation to (`t` without one).
    pub(super) fn at_time(&self, at: &Option<AtModifier>, t: i64) -> i64 {
        match at {
            Some(AtModifier::At(at)) => ms(*at),
            Some(AtModifier::Start) => self.range.start,
            Some(AtModifier::End) => self.range.end,
            None => t,
        }
    }

    /// The evaluation time a selector reads at, with `@` and `offset`.
    pub(super) fn read_time(&self, vs: &VectorSelector, t: i64) -> i64 {
        self.at_time(&vs.at, t)
            .saturating_sub(offset_ms(&vs.offset))
    }

    pub(super) fn series(&self, vs: &VectorSelector) -> &[(Labels, Vec<(i64, f64)>)] {
        self.fetched
            .get(&(vs as *const VectorSelector as usize))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Each series' latest sample within the lookback at `t` (after `@`
    /// and `offset`), skipping series that went stale: `(labels, time, value)`.
    pub(super) fn latest(&self, vs: &VectorSelector, t: i64) -> Vec<(&Labels, i64, f64)> {
        let at = self.read_time(vs, t);
        let mut out = Vec::new();
        for (labels, points) in self.series(vs) {
            if let Some((pt, v)) = newest_within(points, at, self.lookback, |v| is_stale(*v)) {
                out.push((labels, *pt, *v));
            }
        }
        out
    }

    pub(super) fn instant_vector(&self, vs: &VectorSelector, t: i64) -> Vec<Sample> {
        self.latest(vs, t)
            .into_iter()
            .map(|(labels, _, value)| Sample {
                labels: labels.clone(),
                value,
            })
            .collect()
    }

    pub(super) fn range_vector(&self, vs: &VectorSelector, range: i64, t: i64) -> Vec<RangeSeries> {
        let at = self.read_time(vs, t);
        let mut out = Vec::new();
        for (labels, points) in self.series(vs) {
            let pts = window(points, at, range, |v| is_stale(*v));
            if !pts.is_empty() {
                out.push(RangeSeries::floats(labels.clone(), pts));
            }
        }
        for (labels, pts) in self.histogram_windows(vs, range, t) {
            out.push(RangeSeries {
                labels: labels.clone(),
                points: Vec::new(),
                histograms: pts,
            });
        }
        out
    }
}

/// The newest of `points` (time-ordered) at or before `at`, unless it is
/// `lookback` or more older, or `stale`: what an instant selector reads
/// of one series, float or histogram.
fn newest_within<T>(
    points: &[(i64, T)],
    at: i64,
    lookback: i64,
    stale: impl Fn(&T) -> bool,
) -> Option<&(i64, T)> {
    let idx = points.partition_point(|(pt, _)| *pt <= at);
    let p = points.get(idx.checked_sub(1)?)?;
    (p.0 > at.saturating_sub(lookback) && !stale(&p.1)).then_some(p)
}

/// `points` (time-ordered) in `(at - range, at]` but the `stale` ones:
/// what a range selector reads of one series, float or histogram.
fn window<T: Clone>(
    points: &[(i64, T)],
    at: i64,
    range: i64,
    stale: impl Fn(&T) -> bool,
) -> Vec<(i64, T)> {
    let lo = points.partition_point(|(pt, _)| *pt <= at.saturating_sub(range));
    let hi = points.partition_point(|(pt, _)| *pt <= at);
    points[lo..hi.max(lo)]
        .iter()
        .filter(|(_, v)| !stale(v))
        .cloned()
        .collect()
}

/// Refuse an `@` time whose milliseconds do not fit an i64, as Prometheus
/// refuses it.
fn check_at(at: &Option<AtModifier>) -> Result<(), EvalError> {
    match at {
        Some(AtModifier::At(t)) if keel_core::clock::checked_unix_ms(*t).is_none() => Err(
            EvalError::Parse("timestamp out of bounds for @ modifier".into()),
        ),
        _ => Ok(()),
    }
}
