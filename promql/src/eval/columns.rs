//! Series by series instead of step by step: the range query a dashboard
//! panel sends most, `rate(x[5m])` or `sum by (…) (rate(x[5m]))`, is
//! evaluated by walking each fetched series once across every step and
//! folding its values straight into its group's column.
//!
//! The step-by-step evaluation builds, at every step, a vector of every
//! series (labels and all), groups it by hashing and sorts the groups;
//! here each series' window slides across the steps once, its group is
//! found once, and a counter's window with no reset in it costs two reads
//! instead of a pass over its samples. The answer is the same to the bit:
//! each group folds its members in the same order, with the same
//! compensated sums; annotations and limits are the same. Anything this
//! does not cover (other aggregations, functions with parameters, native
//! histograms, label sets that collide, an answer the sample limit might
//! not hold) is left to the step path.

use super::*;

/// The aggregations folded here: each keeps one value per group and step.
#[derive(Debug, Clone, Copy)]
enum Fold {
    /// No aggregation: each series is its own column.
    One,
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
}

impl Fold {
    fn of(op: &str) -> Option<Self> {
        Some(match op {
            "sum" => Fold::Sum,
            "avg" => Fold::Avg,
            "count" => Fold::Count,
            "min" => Fold::Min,
            "max" => Fold::Max,
            "group" => Fold::Group,
            _ => return None,
        })
    }
}

/// One group's state at one step, as the step path's `aggregate` folds
/// its members.
#[derive(Debug, Clone, Copy)]
enum Cell {
    One(f64),
    Sum(f64, f64),
    Avg(crate::float::Mean),
    Count(f64),
    Min(f64),
    Max(f64),
    Group,
}

impl Cell {
    fn new(fold: Fold) -> Self {
        match fold {
            Fold::One => Cell::One(f64::NAN),
            Fold::Sum => Cell::Sum(0.0, 0.0),
            Fold::Avg => Cell::Avg(crate::float::Mean::default()),
            Fold::Count => Cell::Count(0.0),
            Fold::Min => Cell::Min(f64::NAN),
            Fold::Max => Cell::Max(f64::NAN),
            Fold::Group => Cell::Group,
        }
    }

    fn push(&mut self, v: f64) {
        match self {
            Cell::One(a) => *a = v,
            Cell::Sum(sum, c) => (*sum, *c) = crate::float::kahan_inc(v, *sum, *c),
            Cell::Avg(m) => m.push(v),
            Cell::Count(n) => *n += 1.0,
            Cell::Min(a) => {
                if a.is_nan() || v < *a {
                    *a = v;
                }
            }
            Cell::Max(a) => {
                if a.is_nan() || v > *a {
                    *a = v;
                }
            }
            Cell::Group => {}
        }
    }

    fn value(&self) -> f64 {
        match self {
            Cell::Sum(sum, c) => sum + c,
            Cell::Avg(m) => m.value(),
            Cell::Count(n) => *n,
            Cell::One(a) | Cell::Min(a) | Cell::Max(a) => *a,
            Cell::Group => 1.0,
        }
    }
}

/// The shape this module evaluates: an optional aggregation over one
/// range function of one matrix selector.
struct Shape<'e> {
    fold: Option<(Fold, Grouping)>,
    name: &'static str,
    ms: &'e parser::MatrixSelector,
}

fn shape(e: &Expr) -> Option<Shape<'_>> {
    let (fold, inner) = match strip_parens(e) {
        Expr::Aggregate(a) if a.param.is_none() => {
            let fold = Fold::of(&a.op.to_string())?;
            let grouping = match &a.modifier {
                Some(LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
                None => Grouping::By(Vec::new()),
            };
            (Some((fold, grouping)), strip_parens(&a.expr))
        }
        other => (None, other),
    };
    let Expr::Call(c) = inner else { return None };
    let name = c.func.name;
    // Only functions of the window alone: no scalar parameters.
    if !functions::is_range_function(name)
        || matches!(
            name,
            "quantile_over_time" | "predict_linear" | "double_exponential_smoothing"
        )
        || c.args.args.len() != 1
    {
        return None;
    }
    let Expr::MatrixSelector(ms) = strip_parens(&c.args.args[0]) else {
        return None;
    };
    Some(Shape { fold, name, ms })
}

fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

/// One output series' values: a cell for each step from `from` on that
/// any of its members reached (`None` where none had a value), so a
/// short-lived series holds its own span, not the whole range.
#[derive(Debug, Default, Clone)]
struct Column {
    from: usize,
    cells: Vec<Option<Cell>>,
}

impl Column {
    /// The cell of `step`, the span grown to reach it.
    fn at(&mut self, step: usize) -> &mut Option<Cell> {
        if self.cells.is_empty() {
            self.from = step;
        } else if step < self.from {
            let mut grown = vec![None; self.from - step];
            grown.append(&mut self.cells);
            self.cells = grown;
            self.from = step;
        }
        let i = step - self.from;
        if i >= self.cells.len() {
            self.cells.resize(i + 1, None);
        }
        &mut self.cells[i]
    }
}

/// Window samples read between two checks of the query's deadline.
const CHECK_EVERY: usize = 1 << 16;

impl Ctx<'_> {
    /// The range query's answer, series by series, when `e` has the shape
    /// this module covers; `None` leaves it to the step path.
    pub(super) fn by_series(&mut self, e: &Expr) -> Result<Option<Vec<RangeSeries>>, EvalError> {
        let Some(shape) = shape(e) else {
            return Ok(None);
        };
        let key = &shape.ms.vs as *const VectorSelector as usize;
        if self.fetched_h.get(&key).is_some_and(|h| !h.is_empty()) {
            return Ok(None);
        }
        let times = self.steps();
        let fetched = self.fetched.remove(&key).unwrap_or_default();
        let answer = self.fold_series(&shape, &fetched, &times);
        self.fetched.insert(key, fetched);
        answer
    }

    /// The evaluation times of the range.
    fn steps(&self) -> Vec<i64> {
        let mut times = Vec::new();
        let mut t = self.range.start;
        while t <= self.range.end {
            times.push(t);
            match t.checked_add(self.range.step) {
                Some(next) => t = next,
                None => break,
            }
        }
        times
    }

    fn fold_series(
        &mut self,
        shape: &Shape<'_>,
        fetched: &[(Labels, Vec<(i64, f64)>)],
        times: &[i64],
    ) -> Result<Option<Vec<RangeSeries>>, EvalError> {
        let name = shape.name;
        // Each series' output labels, and the column it folds into.
        let mut outputs: Vec<Labels> = Vec::new();
        let mut column_of = Vec::with_capacity(fetched.len());
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut own_labels: std::collections::HashSet<Labels> = Default::default();
        for (labels, _) in fetched {
            let own = if functions::keeps_name(name) {
                labels.clone()
            } else {
                self.strip(labels)
            };
            if !own_labels.insert(own.clone()) {
                // Two series with one label set once the name is
                // dropped: the step path says where they collide.
                return Ok(None);
            }
            let out = match &shape.fold {
                Some((_, grouping)) => grouping.key(&own),
                None => own,
            };
            let next = outputs.len();
            let column = *index.entry(out.clone()).or_insert(next);
            if column == next {
                outputs.push(out);
            }
            column_of.push(column);
        }
        // The answer holds at most a value per column and step; the step
        // path counts what it holds as it goes, and says so if that is
        // too much.
        let room = self.budget.max_samples().saturating_sub(self.held);
        if outputs.len().saturating_mul(times.len()) > room {
            return Ok(None);
        }
        let fold = shape.fold.as_ref().map_or(Fold::One, |f| f.0);
        let mut columns: Vec<Column> = vec![Column::default(); outputs.len()];
        let mut read = 0usize;
        let range = dur_ms(shape.ms.range);
        let mut clean = Vec::new();
        // Each series that had a window, and the first step it had one at.
        let mut read_from: Vec<(usize, &Labels)> = Vec::new();
        for ((labels, points), &column) in fetched.iter().zip(&column_of) {
            self.budget.check(EXECUTION)?;
            let stale = points.iter().any(|(_, v)| is_stale(*v));
            let resets = if !stale && functions::wants_counter(name) {
                reset_counts(points)
            } else {
                Vec::new()
            };
            let mut window = Window::default();
            let mut first = None;
            for (step, &t) in times.iter().enumerate() {
                let at = self.read_time(&shape.ms.vs, t);
                let (start, end) = (at.saturating_sub(range), at);
                let (lo, hi) = window.slide(points, start, end);
                if lo == hi {
                    continue;
                }
                first.get_or_insert(step);
                // The step path checks before every step; a heavy
                // window (days of samples) must not run past it here.
                read += hi - lo;
                if read >= CHECK_EVERY {
                    read = 0;
                    self.budget.check(EXECUTION)?;
                }
                let w = &points[lo..hi];
                let value = if !resets.is_empty() {
                    counter_increase(w, resets[hi - 1] - resets[lo], (start, end), name)
                } else {
                    let w = if stale {
                        clean.clear();
                        clean.extend(w.iter().copied().filter(|(_, v)| !is_stale(*v)));
                        &clean[..]
                    } else {
                        w
                    };
                    let call = functions::RangeCall {
                        start,
                        end,
                        at: t,
                        params: &[],
                    };
                    functions::over_range(name, w, call)?
                };
                if let Some(v) = value {
                    columns[column]
                        .at(step)
                        .get_or_insert_with(|| Cell::new(fold))
                        .push(v);
                }
            }
            if let Some(step) = first {
                read_from.push((step, labels));
            }
        }
        // A name that does not say counter is noted in the order the step
        // path meets it: by step, then by series (at most ten are kept).
        if functions::wants_counter(name) {
            read_from.sort_by_key(|(step, _)| *step);
            for (_, labels) in read_from {
                self.note_counter(labels);
            }
        }
        // Hold the answer step by step, as the step path does.
        let mut per_step = vec![0usize; times.len()];
        for c in &columns {
            for (i, cell) in c.cells.iter().enumerate() {
                if cell.is_some() {
                    per_step[c.from + i] += 1;
                }
            }
        }
        for n in per_step {
            self.keep(n)?;
        }
        let mut out: Vec<RangeSeries> = outputs
            .into_iter()
            .zip(columns)
            .filter(|(_, c)| !c.cells.is_empty())
            .map(|(labels, c)| {
                let points = times[c.from..]
                    .iter()
                    .zip(c.cells)
                    .filter_map(|(&t, cell)| cell.map(|c| (t, c.value())))
                    .collect();
                RangeSeries::floats(labels, points)
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Some(out))
    }
}

/// `resets[i]`: how many times a value in `points[..=i]` fell below the
/// one before it (a counter's resets).
fn reset_counts(points: &[(i64, f64)]) -> Vec<u32> {
    let mut n = 0;
    let mut prev = f64::NAN;
    points
        .iter()
        .map(|&(_, v)| {
            if v < prev {
                n += 1;
            }
            prev = v;
            n
        })
        .collect()
}

/// `rate` or `increase` of a window with `resets` resets in it: with
/// none, last minus first, without walking the window.
fn counter_increase(w: &[(i64, f64)], resets: u32, window: (i64, i64), name: &str) -> Option<f64> {
    let per_second = name == "rate";
    if resets > 0 || w.len() < 2 {
        return functions::extrapolated(w, window.0, window.1, true, per_second);
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    Some(functions::extrapolate(
        (first, last, w.len()),
        last.1 - first.1,
        window,
        true,
        per_second,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_grows_to_the_span_its_members_reach_and_no_further() {
        let mut c = Column::default();
        *c.at(300) = Some(Cell::new(Fold::One));
        *c.at(298) = Some(Cell::new(Fold::One));
        *c.at(305) = Some(Cell::new(Fold::One));
        assert_eq!((c.from, c.cells.len()), (298, 8));
        let present: Vec<bool> = c.cells.iter().map(Option::is_some).collect();
        assert_eq!(
            present,
            [true, false, true, false, false, false, false, true]
        );
    }
}
