//! Evaluating a parsed expression against the store.
//!
//! Every selector's series are fetched once per query for the whole time
//! span it can need (planned by walking the expression first), then sliced
//! at each evaluation step.

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::{
    self, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};

use super::EvalError;
use super::aggregate::{Grouping, aggregate};
use super::annotations::{Annotations, position_of};
use super::binary::{self, Matching};
use super::functions;
use super::limits::{Budget, EXECUTION, SUBQUERY};
use super::value::{RangeSeries, Sample, Value};
use keel_core::stale::is_stale;
use keel_series::histogram::Histogram;
use keel_series::labels::{Labels, NAME};
use keel_series::{Matcher, Queryable};

/// Default lookback of instant selectors.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// A range query's span.
#[derive(Debug, Clone, Copy)]
pub struct QueryRange {
    /// First evaluation time (ms).
    pub start: i64,
    /// Last evaluation time (ms).
    pub end: i64,
    /// Step between evaluations (ms, > 0).
    pub step: i64,
}

/// A query's result and the warnings and infos it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// What Prometheus 3 would say about it.
    pub annotations: Annotations,
}

/// The engine: a store and settings.
pub struct Engine<'a> {
    store: &'a dyn Queryable,
    lookback: i64,
    budget: Budget,
    /// Whether a range query of the shape [`columns`] covers is
    /// evaluated series by series (tests turn it off to compare).
    by_series: bool,
    /// How many range queries went series by series (tests).
    #[cfg(test)]
    went_by_series: std::sync::atomic::AtomicUsize,
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => dur_ms(*d),
        Some(Offset::Neg(d)) => -dur_ms(*d),
        None => 0,
    }
}

/// Most entries a process-wide cache keeps before it starts over.
const CACHED: usize = 4096;

/// Stack left below which evaluating one more level first moves to a
/// new stack segment (a level of a debug build takes up to ~20 KiB).
const STACK_RED_ZONE: usize = 256 * 1024;
/// Size of each such segment, allocated on the heap.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

/// Run one level of a recursive walk of the tree, on a new stack
/// segment when this one runs low.
fn deeper<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, f)
}

/// A process-wide cache: rules and panels ask the same things again and
/// again (a rule group every second in replay), and building a regex's
/// automaton or parsing a query costs more than evaluating it.
struct Cache<V>(std::sync::OnceLock<std::sync::Mutex<keel_series::FastMap<String, V>>>);

impl<V: Clone> Cache<V> {
    const fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    fn get_or<E>(&self, key: &str, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        // Long keys (generated queries) are not kept: the cache is
        // bounded by count, and should stay small in bytes too.
        if key.len() > 2048 {
            return make();
        }
        let m = self.0.get_or_init(Default::default);
        if let Some(v) = m.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(v.clone());
        }
        let v = make()?;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= CACHED {
            g.clear();
        }
        g.insert(key.to_owned(), v.clone());
        Ok(v)
    }
}

static REGEXES: Cache<regex::Regex> = Cache::new();
static PARSED: Cache<std::sync::Arc<Expr>> = Cache::new();

/// PromQL's regex `re`, anchored at both ends and `.` matching newlines
/// (compiled once per process; clones share the compiled automaton).
pub fn anchored_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    REGEXES.get_or(re, || regex::Regex::new(&format!("^(?s:{re})$")))
}

/// Turn the parser's matchers into the store's (regexes anchored, as
/// PromQL's are). Shared with the series API's `match[]`.
pub fn matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, EvalError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(EvalError::Unsupported(
            "`or` inside a selector's braces".into(),
        ));
    }
    let mut out = Vec::new();
    if let Some(n) = &vs.name {
        out.push(Matcher::Equal(NAME.into(), n.clone()));
    }
    for m in &vs.matchers.matchers {
        let anchored = |re: &str| {
            anchored_regex(re).map_err(|e| EvalError::Parse(format!("bad regex {re:?}: {e}")))
        };
        out.push(match &m.op {
            MatchOp::Equal => Matcher::Equal(m.name.clone(), m.value.clone()),
            MatchOp::NotEqual => Matcher::NotEqual(m.name.clone(), m.value.clone()),
            MatchOp::Re(_) => Matcher::Regex(m.name.clone(), anchored(&m.value)?),
            MatchOp::NotRe(_) => Matcher::NotRegex(m.name.clone(), anchored(&m.value)?),
        });
    }
    Ok(out)
}

/// Where each selector's data comes from: keyed by the selector's address
/// in the AST, the fetched series.
type Fetched = keel_series::FastMap<usize, Vec<(Labels, Vec<(i64, f64)>)>>;

/// Each selector's native histogram series, keyed as [`Fetched`].
type FetchedHistograms = keel_series::FastMap<usize, Vec<keel_series::SeriesHistograms>>;

struct Ctx<'s> {
    store: &'s dyn Queryable,
    lookback: i64,
    range: QueryRange,
    /// The query's limits.
    budget: Budget,
    /// Samples held for the whole query: fetched series and the result
    /// so far.
    held: usize,
    /// Samples held for the current step only (intermediate values).
    step_samples: usize,
    /// How many subqueries deep the evaluation is.
    depth: usize,
    fetched: Fetched,
    fetched_h: FetchedHistograms,
    /// Per-query memo: labels id → (labels, labels without the name).
    stripped: keel_series::FastMap<usize, (Labels, Labels)>,
    /// Per-query memo of aggregation group keys.
    group_keys: super::aggregate::KeyMemo,
    /// Per matrix selector: each series' last window, so the next step's
    /// window is found by moving forward rather than by binary search.
    windows: keel_series::FastMap<usize, Vec<Window>>,
    /// While planning inside a subquery pinned by `@`: the window of
    /// evaluation times its inner expression is evaluated at.
    pin: Option<(i64, i64)>,
    /// A pinned subquery's result, the same at every step: by node.
    pinned: keel_series::FastMap<usize, (Vec<RangeSeries>, i64, i64)>,
    /// Metric names already said to be perhaps not counters.
    counters_noted: std::collections::HashSet<String>,
    /// The query's text (annotations name positions in it).
    query: String,
    /// Warnings and infos so far.
    notes: Annotations,
}

/// A series' window `points[lo..hi]` for `(start, end]`.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: i64,
    end: i64,
    lo: usize,
    hi: usize,
}

impl Window {
    /// Move to `(start, end]` over `points`: forward from the last window
    /// when both ends moved forward (a range query's steps), else by
    /// binary search.
    fn slide(&mut self, points: &[(i64, f64)], start: i64, end: i64) -> (usize, usize) {
        if self.hi == 0 && self.lo == 0 || start < self.start || end < self.end {
            self.lo = points.partition_point(|(pt, _)| *pt <= start);
            self.hi = points.partition_point(|(pt, _)| *pt <= end);
        } else {
            while self.lo < points.len() && points[self.lo].0 <= start {
                self.lo += 1;
            }
            self.hi = self.hi.max(self.lo);
            while self.hi < points.len() && points[self.hi].0 <= end {
                self.hi += 1;
            }
        }
        self.start = start;
        self.end = end;
        (self.lo, self.hi)
    }
}

impl<'a> Engine<'a> {
    /// An engine over `store` with the default 5 m lookback and
    /// Prometheus' default limits.
    pub fn new(store: &'a dyn Queryable) -> Self {
        Self::with_budget(store, Budget::default())
    }

    /// An engine whose queries stop at `budget`'s limits.
    pub fn with_budget(store: &'a dyn Queryable, budget: Budget) -> Self {
        Self {
            store,
            lookback: LOOKBACK_MS,
            budget,
            by_series: true,
            #[cfg(test)]
            went_by_series: Default::default(),
        }
    }

    /// Parse `query` (bounded in depth: [`crate::parse`]).
    pub fn parse(query: &str) -> Result<Expr, EvalError> {
        crate::parse(query).map_err(EvalError::Parse)
    }

    /// Parse `query`, once per process (a bad one is parsed again each
    /// time: its error is not kept).
    fn parsed(query: &str) -> Result<std::sync::Arc<Expr>, EvalError> {
        PARSED.get_or(query, || Self::parse(query).map(std::sync::Arc::new))
    }

    /// Evaluate at one time (ms).
    pub fn instant(&self, query: &str, t: i64) -> Result<Value, EvalError> {
        self.instant_annotated(query, t).map(|a| a.value)
    }

    /// Evaluate at one time (ms), with the answer's annotations.
    pub fn instant_annotated(&self, query: &str, t: i64) -> Result<Answer<Value>, EvalError> {
        let expr = Self::parsed(query)?;
        let mut ctx = self.ctx(
            query,
            QueryRange {
                start: t,
                end: t,
                step: 60_000,
            },
            &expr,
        )?;
        ctx.budget.check(EXECUTION)?;
        let v = ctx.eval(&expr, t)?;
        match &v {
            Value::Vector(v) => binary::check_unique(v)?,
            Value::Histograms(h) => crate::native::check_unique(h)?,
            _ => {}
        }
        Ok(Answer {
            value: v,
            annotations: ctx.notes,
        })
    }

    /// Evaluate at every step of `range`: one series per label set.
    pub fn range(&self, query: &str, range: QueryRange) -> Result<Vec<RangeSeries>, EvalError> {
        self.range_annotated(query, range).map(|a| a.value)
    }

    /// Evaluate at every step of `range`, with the answer's annotations.
    pub fn range_annotated(
        &self,
        query: &str,
        range: QueryRange,
    ) -> Result<Answer<Vec<RangeSeries>>, EvalError> {
        if range.step <= 0 {
            return Err(EvalError::Execution("step must be positive".into()));
        }
        if range.end < range.start {
            return Err(EvalError::Execution("end is before start".into()));
        }
        let expr = Self::parsed(query)?;
        match expr.value_type() {
            parser::value::ValueType::Vector | parser::value::ValueType::Scalar => {}
            other => {
                return Err(EvalError::Execution(format!(
                    "invalid expression type {other} for range query, must be scalar or instant vector"
                )));
            }
        }
        let mut ctx = self.ctx(query, range, &expr)?;
        if self.by_series
            && let Some(value) = ctx.by_series(&expr)?
        {
            #[cfg(test)]
            self.went_by_series
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Answer {
                value,
                annotations: ctx.notes,
            });
        }
        let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut histograms: HashMap<Labels, Vec<(i64, Histogram)>> = HashMap::new();
        let mut t = range.start;
        while t <= range.end {
            ctx.budget.check(EXECUTION)?;
            ctx.step_samples = 0;
            let v = ctx.eval(&expr, t)?;
            ctx.step_samples = 0;
            match v {
                Value::Scalar(v) => {
                    ctx.keep(1)?;
                    series.entry(Labels::default()).or_default().push((t, v));
                }
                Value::Vector(v) => {
                    binary::check_unique(&v)?;
                    ctx.keep(v.len())?;
                    for s in v {
                        series.entry(s.labels).or_default().push((t, s.value));
                    }
                }
                Value::Histograms(v) => {
                    crate::native::check_unique(&v)?;
                    ctx.keep(v.len())?;
                    for s in v {
                        histograms
                            .entry(s.labels)
                            .or_default()
                            .push((t, s.histogram));
                    }
                }
                other => {
                    return Err(EvalError::Execution(format!(
                        "range query got a {}",
                        other.type_name()
                    )));
                }
            }
            match t.checked_add(range.step) {
                Some(next) => t = next,
                None => break,
            }
        }
        let out = merge_series(series, histograms);
        Ok(Answer {
            value: out,
            annotations: ctx.notes,
        })
    }

    fn ctx(&self, query: &str, range: QueryRange, expr: &Expr) -> Result<Ctx<'a>, EvalError> {
        let mut ctx = Ctx {
            store: self.store,
            lookback: self.lookback,
            range,
            budget: self.budget.clone(),
            held: 0,
            step_samples: 0,
            depth: 0,
            fetched: keel_series::FastMap::default(),
            fetched_h: keel_series::FastMap::default(),
            stripped: keel_series::FastMap::default(),
            group_keys: super::aggregate::KeyMemo::default(),
            windows: keel_series::FastMap::default(),
            pin: None,
            pinned: keel_series::FastMap::default(),
            counters_noted: std::collections::HashSet::new(),
            query: query.to_owned(),
            notes: Annotations::default(),
        };
        ctx.plan(expr, 0, 0)?;
        Ok(ctx)
    }
}

impl Ctx<'_> {
    /// Where a limit met now is: inside a subquery or not.
    fn place(&self) -> &'static str {
        if self.depth > 0 { SUBQUERY } else { EXECUTION }
    }

    /// Hold `n` more samples for the rest of the query.
    fn keep(&mut self, n: usize) -> Result<(), EvalError> {
        self.held = self.held.saturating_add(n);
        self.budget
            .allow(self.held.saturating_add(self.step_samples), self.place())
    }

    /// Hold `n` more samples for the current step.
    fn charge(&mut self, n: usize) -> Result<(), EvalError> {
        self.step_samples = self.step_samples.saturating_add(n);
        self.budget
            .allow(self.held.saturating_add(self.step_samples), self.place())
    }

    /// Note a warning about the answer.
    fn warn(&mut self, msg: String) {
        self.notes.warn(msg);
    }

    /// Note an info about the answer.
    fn info(&mut self, msg: String) {
        self.notes.info(msg);
    }

    /// `rate`/`increase` over a series whose name does not say counter
    /// (`_total`, `_sum`, `_count`, `_bucket`): Prometheus 3's info.
    fn note_counter(&mut self, l: &Labels) {
        let name = l.get(NAME);
        if name.is_empty()
            || ["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|s| name.ends_with(s))
            || self.counters_noted.contains(name)
        {
            return;
        }
        self.counters_noted.insert(name.to_owned());
        let at = position_of(&self.query, name)
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        self.info(format!(
            "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}{at}"
        ));
    }

    /// Warnings about a range function's scalar parameters.
    fn check_params(&mut self, name: &str, params: &[f64]) {
        if name == "quantile_over_time"
            && let Some(&q) = params.first()
        {
            self.check_quantile(q);
        }
    }

    /// A φ outside [0, 1] (NaN included) earns a warning.
    fn check_quantile(&mut self, q: f64) {
        if !(0.0..=1.0).contains(&q) {
            self.warn(format!(
                "quantile value should be between 0 and 1, got {}",
                crate::value::format_go_g(q)
            ));
        }
    }

    /// `l` without the metric name, memoized for the query.
    fn strip(&mut self, l: &Labels) -> Labels {
        if let Some((_, s)) = self.stripped.get(&l.id()) {
            return s.clone();
        }
        let s = l.without_name();
        self.stripped.insert(l.id(), (l.clone(), s.clone()));
        s
    }

    fn scalar(&mut self, e: &Expr, t: i64) -> Result<f64, EvalError> {
        match self.eval(e, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(EvalError::Execution(format!(
                "expected a scalar, got a {}",
                other.type_name()
            ))),
        }
    }

    fn vector(&mut self, e: &Expr, t: i64) -> Result<Vec<Sample>, EvalError> {
        match self.instant(e, t, "")? {
            Instant::Floats(v) => Ok(v),
            Instant::Histograms(_) => Err(crate::native::not_numbers(&format!("{e}"))),
        }
    }

    /// An instant vector of floats or of native histograms; anything
    /// else is an error (`who` begins its message).
    fn instant(&mut self, e: &Expr, t: i64, who: &str) -> Result<Instant, EvalError> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(Instant::Floats(v)),
            Value::Histograms(h) => Ok(Instant::Histograms(h)),
            other => Err(EvalError::Execution(format!(
                "{who}expected an instant vector, got a {}",
                other.type_name()
            ))),
        }
    }

    fn string(&mut self, e: &Expr, t: i64) -> Result<String, EvalError> {
        match self.eval(e, t)? {
            Value::String(s) => Ok(s),
            other => Err(EvalError::Execution(format!(
                "expected a string, got a {}",
                other.type_name()
            ))),
        }
    }

    /// A range vector from a matrix selector or a subquery, with the
    /// window `(start, end]` it covers.
    fn matrix(&mut self, e: &Expr, t: i64) -> Result<(Vec<RangeSeries>, i64, i64), EvalError> {
        deeper(|| self.matrix_node(e, t))
    }

    fn matrix_node(&mut self, e: &Expr, t: i64) -> Result<(Vec<RangeSeries>, i64, i64), EvalError> {
        match e {
            Expr::MatrixSelector(m) => {
                let range = dur_ms(m.range);
                let at = self.read_time(&m.vs, t);
                let v = self.range_vector(&m.vs, range, t);
                self.charge(v.iter().map(|s| s.points.len()).sum())?;
                Ok((v, at.saturating_sub(range), at))
            }
            Expr::Subquery(s) => {
                let node = s as *const parser::SubqueryExpr as usize;
                if let Some((m, from, end)) = self.pinned.get(&node) {
                    let (m, from, end) = (m.clone(), *from, *end);
                    self.charge(m.iter().map(|s| s.points.len()).sum())?;
                    return Ok((m, from, end));
                }
                let range = dur_ms(s.range);
                let end = self.at_time(&s.at, t).saturating_sub(offset_ms(&s.offset));
                let step = s.step.map(dur_ms).unwrap_or(self.range.step).max(1);
                // Steps aligned to absolute multiples of the step, in (end - range, end].
                let from = end.saturating_sub(range);
                let mut at = from
                    .div_euclid(step)
                    .saturating_mul(step)
                    .saturating_add(step);
                let mut series: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
                let mut histograms: HashMap<Labels, Vec<(i64, Histogram)>> = HashMap::new();
                // (An error ends the query, so depth needs no unwinding.)
                self.depth += 1;
                while at <= end {
                    self.budget.check(SUBQUERY)?;
                    // What the inner step held is freed; its result stays.
                    let inner = self.step_samples;
                    let v = self.eval(&s.expr, at);
                    self.step_samples = inner;
                    match v? {
                        Value::Vector(v) => {
                            self.charge(v.len())?;
                            for smp in v {
                                series.entry(smp.labels).or_default().push((at, smp.value));
                            }
                        }
                        Value::Scalar(v) => {
                            self.charge(1)?;
                            series.entry(Labels::default()).or_default().push((at, v))
                        }
                        Value::Histograms(v) => {
                            self.charge(v.len())?;
                            for smp in v {
                                histograms
                                    .entry(smp.labels)
                                    .or_default()
                                    .push((at, smp.histogram));
                            }
                        }
                        other => {
                            return Err(EvalError::Execution(format!(
                                "subquery over a {}",
                                other.type_name()
                            )));
                        }
                    }
                    match at.checked_add(step) {
                        Some(next) => at = next,
                        None => break,
                    }
                }
                // The subquery's points stay held for the outer step.
                self.depth -= 1;
                let out = merge_series(series, histograms);
                if s.at.is_some() {
                    self.pinned.insert(node, (out.clone(), from, end));
                }
                Ok((out, from, end))
            }
            Expr::Paren(p) => self.matrix(&p.expr, t),
            other => Err(EvalError::Execution(format!(
                "expected a range vector, got {other}"
            ))),
        }
    }

    /// Evaluate `e` at `t`. Every level of the tree passes here (and
    /// through [`Ctx::matrix`]), so the stack grows on the heap when a
    /// deep query (up to [`crate::MAX_NESTING`]) runs low on it: a debug
    /// build takes ~10–20 KiB a level, past a 2 MiB thread's at ~100.
    fn eval(&mut self, e: &Expr, t: i64) -> Result<Value, EvalError> {
        deeper(|| self.eval_node(e, t))
    }

    fn eval_node(&mut self, e: &Expr, t: i64) -> Result<Value, EvalError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => {
                let v = self.instant_vector(vs, t);
                let h = self.instant_histograms(vs, t);
                if !h.is_empty() {
                    if v.is_empty() {
                        self.charge(h.len())?;
                        return Ok(Value::Histograms(h));
                    }
                    self.warn(format!(
                        "{} native histogram series left out of {vs}: Keel does not mix floats and native histograms in one vector yet",
                        h.len()
                    ));
                }
                self.charge(v.len())?;
                Ok(Value::Vector(v))
            }
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                let (m, _, _) = self.matrix(e, t)?;
                Ok(Value::Matrix(m))
            }
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Histograms(v) => {
                    let out = crate::native::with_scalar("*", v, -1.0, false)?;
                    crate::native::check_unique(&out)?;
                    Ok(Value::Histograms(out))
                }
                Value::Vector(v) => {
                    let out: Vec<Sample> = v
                        .into_iter()
                        .map(|s| Sample {
                            labels: s.labels.without_name(),
                            value: -s.value,
                        })
                        .collect();
                    binary::check_unique(&out)?;
                    Ok(Value::Vector(out))
                }
                other => Err(EvalError::Execution(format!(
                    "unary minus on a {}",
                    other.type_name()
                ))),
            },
            Expr::Binary(b) => self.binary(b, t),
            Expr::Aggregate(a) => {
                let op = a.op.to_string();
                let grouping = match &a.modifier {
                    Some(LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
                    Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
                    None => Grouping::By(Vec::new()),
                };
                let (num, label) = match &a.param {
                    Some(p) if op == "count_values" => (None, Some(self.string(p, t)?)),
                    Some(p) => (Some(self.scalar(p, t)?), None),
                    None => (None, None),
                };
                let input = match self.instant(&a.expr, t, "")? {
                    Instant::Floats(v) => v,
                    Instant::Histograms(h) => {
                        return Ok(
                            match crate::native::aggregate(&op, h, &grouping, &mut self.notes)? {
                                crate::native::Aggregated::Histograms(h) => Value::Histograms(h),
                                crate::native::Aggregated::Floats(v) => Value::Vector(v),
                            },
                        );
                    }
                };
                if let Some(k) = num {
                    self.check_aggregation_param(&op, k, !input.is_empty())?;
                }
                let node = a as *const parser::AggregateExpr as usize;
                Ok(Value::Vector(aggregate(
                    &op,
                    input,
                    &grouping,
                    num,
                    label.as_deref(),
                    &mut self.group_keys,
                    node,
                )?))
            }
            Expr::Call(c) => self.call(c.func.name, &c.args.args, t),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    /// Prometheus' checks on an aggregation's numeric parameter: a `k`
    /// must be a number that fits an int64; a φ or ratio out of range
    /// earns a warning.
    fn check_aggregation_param(&mut self, op: &str, k: f64, any: bool) -> Result<(), EvalError> {
        match op {
            "topk" | "bottomk" | "limitk" => {
                if k.is_nan() {
                    return Err(EvalError::Execution("Parameter value is NaN".into()));
                }
                if k < i64::MIN as f64 {
                    return Err(EvalError::Execution(format!(
                        "Scalar value {} underflows int64",
                        crate::value::format_go_g(k)
                    )));
                }
                if k > i64::MAX as f64 {
                    return Err(EvalError::Execution(format!(
                        "Scalar value {} overflows int64",
                        crate::value::format_go_g(k)
                    )));
                }
            }
            "limit_ratio" => {
                if k.is_nan() {
                    return Err(EvalError::Execution("Ratio value is NaN".into()));
                }
                if any && !(-1.0..=1.0).contains(&k) {
                    let capped = k.clamp(-1.0, 1.0);
                    self.warn(format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}",
                        crate::value::format_go_g(k),
                        crate::value::format_go_g(capped)
                    ));
                }
            }
            // Said where a group is aggregated, as in Prometheus.
            "quantile" if any => self.check_quantile(k),
            _ => {}
        }
        Ok(())
    }

    fn binary(&mut self, b: &parser::BinaryExpr, t: i64) -> Result<Value, EvalError> {
        let op = b.op.to_string().to_lowercase();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = binary::apply(&op, l, r)?;
                if binary::is_comparison(&op) {
                    Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Value::Scalar(v))
                }
            }
            (Value::Vector(l), Value::Scalar(r)) => Ok(Value::Vector(binary::vector_scalar(
                &op,
                l,
                r,
                false,
                return_bool,
            )?)),
            (Value::Scalar(l), Value::Vector(r)) => Ok(Value::Vector(binary::vector_scalar(
                &op,
                r,
                l,
                true,
                return_bool,
            )?)),
            (Value::Vector(l), Value::Vector(r)) => {
                let mut m = Matching {
                    return_bool,
                    ..Matching::default()
                };
                if let Some(modifier) = &b.modifier {
                    if let Some(lm) = &modifier.matching {
                        m.on = lm.is_include();
                        m.labels = lm.labels().labels.clone();
                    }
                    match &modifier.card {
                        VectorMatchCardinality::ManyToOne(l) => {
                            m.group_left = Some(true);
                            m.include = l.labels.clone();
                        }
                        VectorMatchCardinality::OneToMany(l) => {
                            m.group_left = Some(false);
                            m.include = l.labels.clone();
                        }
                        _ => {}
                    }
                }
                Ok(Value::Vector(binary::vector_vector(&op, l, r, &m)?))
            }
            (Value::Histograms(l), Value::Scalar(r)) => Ok(Value::Histograms(
                crate::native::with_scalar(&op, l, r, false)?,
            )),
            (Value::Scalar(l), Value::Histograms(r)) => Ok(Value::Histograms(
                crate::native::with_scalar(&op, r, l, true)?,
            )),
            (l @ Value::Histograms(_), r @ (Value::Histograms(_) | Value::Vector(_)))
            | (l @ Value::Vector(_), r @ Value::Histograms(_)) => {
                if b.modifier
                    .as_ref()
                    .is_some_and(|m| !matches!(m.card, VectorMatchCardinality::OneToOne))
                {
                    return Err(EvalError::Unsupported(
                        "group_left/group_right with native histograms".into(),
                    ));
                }
                let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
                let names = matching.map(|lm| lm.labels().labels.clone());
                let on_names = names
                    .as_deref()
                    .map(|n| (matching.is_some_and(|lm| lm.is_include()), n));
                Ok(Value::Histograms(match (l, r) {
                    (Value::Histograms(l), Value::Histograms(r)) => {
                        crate::native::between(&op, l, r, on_names, &mut self.notes)?
                    }
                    (Value::Histograms(h), Value::Vector(f)) => {
                        crate::native::with_floats(&op, h, f, false, on_names)?
                    }
                    (Value::Vector(f), Value::Histograms(h)) => {
                        crate::native::with_floats(&op, h, f, true, on_names)?
                    }
                    (l, r) => {
                        return Err(EvalError::Internal(format!(
                            "operator {op} between a {} and a {}",
                            l.type_name(),
                            r.type_name()
                        )));
                    }
                }))
            }
            (Value::Histograms(_), _) | (_, Value::Histograms(_)) => Err(
                crate::native::not_numbers(&format!("operator {op} with this operand")),
            ),
            (l, r) => Err(EvalError::Execution(format!(
                "operator {op} between a {} and a {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

/// An instant vector as [`Ctx::instant`] finds it.
enum Instant {
    Floats(Vec<Sample>),
    Histograms(Vec<crate::value::HistogramSample>),
}

/// Float and histogram series of a range result, one list in label order.
fn merge_series(
    series: HashMap<Labels, Vec<(i64, f64)>>,
    histograms: HashMap<Labels, Vec<(i64, Histogram)>>,
) -> Vec<RangeSeries> {
    let mut all: HashMap<Labels, RangeSeries> = series
        .into_iter()
        .map(|(labels, points)| (labels.clone(), RangeSeries::floats(labels, points)))
        .collect();
    for (labels, h) in histograms {
        all.entry(labels.clone())
            .or_insert_with(|| RangeSeries::floats(labels, Vec::new()))
            .histograms = h;
    }
    let mut out: Vec<RangeSeries> = all.into_values().collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

mod call;
mod columns;
mod plan;

#[cfg(test)]
mod prometheus3_tests;
#[cfg(test)]
mod tests;
