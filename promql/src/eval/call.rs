//! Function calls: range functions over a selector's window, and the
//! instant-vector and scalar functions, each by its PromQL name.

use super::*;
use crate::float::{go_max, go_min};
use crate::functions::RangeCall;
use crate::value::HistogramSample;

impl Ctx<'_> {
    pub(super) fn call(
        &mut self,
        name: &str,
        args: &[Box<Expr>],
        t: i64,
    ) -> Result<Value, EvalError> {
        let arg = |i: usize| -> Result<&Expr, EvalError> {
            args.get(i)
                .map(|b| b.as_ref())
                .ok_or_else(|| EvalError::Execution(format!("{name}: missing argument {}", i + 1)))
        };
        if functions::is_range_function(name) {
            // The series argument; every other argument is a scalar
            // parameter, in order.
            let series_idx = usize::from(name == "quantile_over_time");
            let mut params = Vec::with_capacity(args.len().saturating_sub(1));
            for (i, a) in args.iter().enumerate() {
                if i != series_idx {
                    params.push(self.scalar(a, t)?);
                }
            }
            // Fast path for a plain matrix selector: the function reads each
            // series' window straight from the fetched samples, no copy.
            if let Expr::MatrixSelector(ms) = strip_parens(arg(series_idx)?) {
                let range = dur_ms(ms.range);
                let at = self.read_time(&ms.vs, t);
                let (start, end) = (at.saturating_sub(range), at);
                let key = &ms.vs as *const VectorSelector as usize;
                let fetched = self.fetched.remove(&key).unwrap_or_default();
                let mut windows = self.windows.remove(&key).unwrap_or_default();
                windows.resize(fetched.len(), Window::default());
                let mut out = Vec::with_capacity(fetched.len());
                let mut failure = None;
                for ((labels, points), w) in fetched.iter().zip(windows.iter_mut()) {
                    let (lo, hi) = w.slide(points, start, end);
                    let window = &points[lo..hi];
                    if window.is_empty() {
                        continue;
                    }
                    let owned: Vec<(i64, f64)>;
                    let window = if window.iter().any(|(_, v)| is_stale(*v)) {
                        owned = window
                            .iter()
                            .copied()
                            .filter(|(_, v)| !is_stale(*v))
                            .collect();
                        &owned[..]
                    } else {
                        window
                    };
                    let call = RangeCall {
                        start,
                        end,
                        at: t,
                        params: &params,
                    };
                    if functions::wants_counter(name) {
                        self.note_counter(labels);
                    }
                    match functions::over_range(name, window, call) {
                        Ok(Some(v)) => {
                            let labels = if functions::keeps_name(name) {
                                labels.clone()
                            } else {
                                self.strip(labels)
                            };
                            out.push(Sample { labels, value: v });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                self.fetched.insert(key, fetched);
                self.windows.insert(key, windows);
                if let Some(e) = failure {
                    return Err(e);
                }
                if !out.is_empty() {
                    self.check_params(name, &params);
                }
                let hs: Vec<_> = self
                    .histogram_windows(&ms.vs, range, t)
                    .into_iter()
                    .map(|(l, p)| (l.clone(), p))
                    .collect();
                return self.with_histograms(name, out, hs, start, end);
            }
            let (m, start, end) = self.matrix(arg(series_idx)?, t)?;
            let mut out = Vec::with_capacity(m.len());
            let call = RangeCall {
                start,
                end,
                at: t,
                params: &params,
            };
            for s in &m {
                if functions::wants_counter(name) {
                    self.note_counter(&s.labels);
                }
                if let Some(v) = functions::over_range(name, &s.points, call)? {
                    let labels = if functions::keeps_name(name) {
                        s.labels.clone()
                    } else {
                        self.strip(&s.labels)
                    };
                    out.push(Sample { labels, value: v });
                }
            }
            if !out.is_empty() {
                self.check_params(name, &params);
            }
            let hs: Vec<_> = m
                .into_iter()
                .filter(|s| !s.histograms.is_empty())
                .map(|s| (s.labels, s.histograms))
                .collect();
            return self.with_histograms(name, out, hs, start, end);
        }
        // An element-wise function drops the name, so two series that
        // differ only by it collide: an error, as in Prometheus.
        let map = |v: Vec<Sample>, f: &dyn Fn(f64) -> f64| -> Result<Value, EvalError> {
            let out: Vec<Sample> = v
                .into_iter()
                .map(|s| Sample {
                    labels: s.labels.without_name(),
                    value: f(s.value),
                })
                .collect();
            binary::check_unique(&out)?;
            Ok(Value::Vector(out))
        };
        match name {
            "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
            "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
            "vector" => {
                let v = self.scalar(arg(0)?, t)?;
                Ok(Value::Vector(vec![Sample {
                    labels: Labels::default(),
                    value: v,
                }]))
            }
            "scalar" => {
                let v = self.vector(arg(0)?, t)?;
                Ok(Value::Scalar(if v.len() == 1 {
                    v[0].value
                } else {
                    f64::NAN
                }))
            }
            "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "sin"
            | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
            | "acosh" | "atanh" | "deg" | "rad" => {
                let v = self.vector(arg(0)?, t)?;
                map(v, &|x| functions::math(name, x).unwrap_or(f64::NAN))
            }
            "round" => {
                let v = self.vector(arg(0)?, t)?;
                let to = match args.get(1) {
                    Some(a) => self.scalar(a, t)?,
                    None => 1.0,
                };
                // Prometheus rounds half up with the inverse of `to`
                // (fewer rounding errors than dividing by it).
                let inverse = 1.0 / to;
                map(v, &|x| (x * inverse + 0.5).floor() / inverse)
            }
            "clamp" => {
                let v = self.vector(arg(0)?, t)?;
                let (lo, hi) = (self.scalar(arg(1)?, t)?, self.scalar(arg(2)?, t)?);
                if lo > hi {
                    return Ok(Value::Vector(Vec::new()));
                }
                map(v, &|x| go_max(lo, go_min(hi, x)))
            }
            "clamp_min" => {
                let v = self.vector(arg(0)?, t)?;
                let lo = self.scalar(arg(1)?, t)?;
                map(v, &|x| go_max(lo, x))
            }
            "clamp_max" => {
                let v = self.vector(arg(0)?, t)?;
                let hi = self.scalar(arg(1)?, t)?;
                map(v, &|x| go_min(hi, x))
            }
            "timestamp" => {
                let Expr::VectorSelector(vs) = strip_parens(arg(0)?) else {
                    let v = self.vector(arg(0)?, t)?;
                    return map(v, &|_| t as f64 / 1000.0);
                };
                let out: Vec<Sample> = self
                    .latest(vs, t)
                    .into_iter()
                    .map(|(labels, pt, _)| Sample {
                        labels: labels.without_name(),
                        value: pt as f64 / 1000.0,
                    })
                    .collect();
                binary::check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year"
            | "days_in_month" | "month" | "year" => {
                let v = match args.first() {
                    Some(a) => self.vector(a, t)?,
                    None => vec![Sample {
                        labels: Labels::default(),
                        value: t as f64 / 1000.0,
                    }],
                };
                map(v, &|x| functions::calendar(name, x).unwrap_or(f64::NAN))
            }
            "absent" => {
                let v = self.vector(arg(0)?, t)?;
                if !v.is_empty() {
                    return Ok(Value::Vector(Vec::new()));
                }
                Ok(Value::Vector(vec![Sample {
                    labels: absent_labels(arg(0)?),
                    value: 1.0,
                }]))
            }
            "absent_over_time" => {
                let (m, _, _) = self.matrix(arg(0)?, t)?;
                if !m.is_empty() {
                    return Ok(Value::Vector(Vec::new()));
                }
                let inner = match strip_parens(arg(0)?) {
                    Expr::MatrixSelector(ms) => Expr::VectorSelector(ms.vs.clone()),
                    other => other.clone(),
                };
                Ok(Value::Vector(vec![Sample {
                    labels: absent_labels(&inner),
                    value: 1.0,
                }]))
            }
            "label_replace" => {
                let v = self.vector(arg(0)?, t)?;
                let (dst, repl, src, re) = (
                    self.string(arg(1)?, t)?,
                    self.string(arg(2)?, t)?,
                    self.string(arg(3)?, t)?,
                    self.string(arg(4)?, t)?,
                );
                if dst.is_empty() {
                    return Err(EvalError::Execution(format!(
                        "invalid destination label name in label_replace(): {dst}"
                    )));
                }
                let re = anchored_regex(&re).map_err(|e| {
                    EvalError::Execution(format!(
                        "invalid regular expression in label_replace(): {e}"
                    ))
                })?;
                let out: Vec<Sample> = v
                    .iter()
                    .map(|s| Sample {
                        labels: functions::label_replace(s, &dst, &repl, &src, &re),
                        value: s.value,
                    })
                    .collect();
                binary::check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            "label_join" => {
                let v = self.vector(arg(0)?, t)?;
                let (dst, sep) = (self.string(arg(1)?, t)?, self.string(arg(2)?, t)?);
                let mut srcs = Vec::new();
                for a in &args[3.min(args.len())..] {
                    let src = self.string(a, t)?;
                    if src.is_empty() {
                        return Err(EvalError::Execution(format!(
                            "invalid source label name in label_join(): {src}"
                        )));
                    }
                    srcs.push(src);
                }
                if dst.is_empty() {
                    return Err(EvalError::Execution(format!(
                        "invalid destination label name in label_join(): {dst}"
                    )));
                }
                let out: Vec<Sample> = v
                    .into_iter()
                    .map(|s| {
                        let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n)).collect();
                        Sample {
                            labels: s.labels.with(&dst, &joined.join(&sep)),
                            value: s.value,
                        }
                    })
                    .collect();
                binary::check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" | "histogram_fraction" => {
                let mut params = Vec::new();
                for a in &args[..args.len().saturating_sub(1)] {
                    params.push(self.scalar(a, t)?);
                }
                let last = args.last().ok_or_else(|| {
                    EvalError::Execution(format!("{name}: missing its histogram argument"))
                })?;
                match self.instant(last, t, &format!("{name}: "))? {
                    Instant::Histograms(h) => {
                        let out = crate::native::read(name, h, &params);
                        binary::check_unique(&out)?;
                        Ok(Value::Vector(out))
                    }
                    // Float samples are no histograms: Prometheus leaves
                    // them out.
                    Instant::Floats(_) => Ok(Value::Vector(Vec::new())),
                }
            }
            "histogram_quantile" => {
                let q = self.scalar(arg(0)?, t)?;
                self.check_quantile(q);
                let v = match self.instant(arg(1)?, t, &format!("{name}: "))? {
                    Instant::Floats(v) => v,
                    Instant::Histograms(h) => {
                        let out = crate::native::read(name, h, &[q]);
                        binary::check_unique(&out)?;
                        return Ok(Value::Vector(out));
                    }
                };
                // Grouped with the metric name (two metrics' buckets never
                // merge), which is then dropped: a collision is an error.
                let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
                for s in v {
                    let le = s.labels.get("le");
                    let Ok(bound) = le.trim().replace("+Inf", "inf").parse::<f64>() else {
                        self.warn(format!(
                            "bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {:?}",
                            s.labels.get(NAME)
                        ));
                        continue;
                    };
                    let key = s.labels.project(&["le".to_owned()], false);
                    groups.entry(key).or_default().push((bound, s.value));
                }
                let mut out = Vec::with_capacity(groups.len());
                for (labels, buckets) in groups {
                    let (value, fixed) = functions::bucket_quantile(q, buckets);
                    if fixed {
                        self.info(format!(
                            "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                            labels.get(NAME)
                        ));
                    }
                    out.push(Sample {
                        labels: labels.without_name(),
                        value,
                    });
                }
                binary::check_unique(&out)?;
                Ok(Value::Vector(out))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector(arg(0)?, t)?;
                // NaN last for both, as in Prometheus 3.
                v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if name == "sort" => a.value.total_cmp(&b.value),
                    _ => b.value.total_cmp(&a.value),
                });
                Ok(Value::Vector(v))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut v = self.vector(arg(0)?, t)?;
                let mut names = Vec::new();
                for a in &args[1.min(args.len())..] {
                    names.push(self.string(a, t)?);
                }
                v.sort_by(|a, b| {
                    let o = functions::by_labels(&names, &a.labels, &b.labels);
                    if name == "sort_by_label" {
                        o
                    } else {
                        o.reverse()
                    }
                });
                Ok(Value::Vector(v))
            }
            other => Err(EvalError::Unsupported(format!("function {other}()"))),
        }
    }
}

impl Ctx<'_> {
    /// A range function's answer once its native histogram series
    /// (`hs`, each its window's samples) are counted in beside the float
    /// results `out`: `rate`/`increase`/`sum_over_time`/`avg_over_time`/
    /// `last_over_time` give histograms, `count_over_time` and
    /// `present_over_time` numbers; any other function over histograms
    /// is an error. Floats and histograms both: the floats, with a warning.
    fn with_histograms(
        &mut self,
        name: &str,
        mut out: Vec<Sample>,
        hs: Vec<(Labels, Vec<(i64, Histogram)>)>,
        start: i64,
        end: i64,
    ) -> Result<Value, EvalError> {
        let mut hout = Vec::new();
        for (labels, pts) in hs {
            let keep = functions::keeps_name(name);
            let metric = labels.get(NAME).to_owned();
            let labels = if keep { labels } else { self.strip(&labels) };
            let h = match name {
                "rate" | "increase" => {
                    let Some((h, gauge)) = crate::native::extrapolated(
                        &pts,
                        (start, end),
                        name == "rate",
                        &metric,
                        &mut self.notes,
                    ) else {
                        continue;
                    };
                    if gauge {
                        self.warn(crate::native::not_a_counter(&metric));
                    }
                    h
                }
                "sum_over_time" | "avg_over_time" => {
                    let n = pts.len() as f64;
                    let mut points = pts.into_iter().map(|(_, h)| h);
                    let Some(mut sum) = points.next() else {
                        continue;
                    };
                    let mut mixed = false;
                    for h in points {
                        match crate::native::combine_noted(
                            &sum,
                            &h,
                            crate::native::Op::Aggregate,
                            &metric,
                            &mut self.notes,
                        ) {
                            Some(s) => sum = s,
                            None => {
                                mixed = true;
                                break;
                            }
                        }
                    }
                    if mixed {
                        continue;
                    }
                    if name == "avg_over_time" {
                        sum = sum.scale(1.0 / n);
                    }
                    sum.compact()
                }
                "irate" | "idelta" => {
                    match crate::native::instant(&pts, name == "irate", &metric, &mut self.notes) {
                        Some(h) => h,
                        None => continue,
                    }
                }
                "last_over_time" => match pts.into_iter().last() {
                    Some((_, h)) => h,
                    None => continue,
                },
                "count_over_time" | "present_over_time" => {
                    let value = if name == "count_over_time" {
                        pts.len() as f64
                    } else {
                        1.0
                    };
                    out.push(Sample { labels, value });
                    continue;
                }
                other => return Err(crate::native::not_numbers(&format!("{other}()"))),
            };
            hout.push(HistogramSample {
                labels,
                histogram: h,
            });
        }
        if !functions::keeps_name(name) {
            binary::check_unique(&out)?;
            crate::native::check_unique(&hout)?;
        }
        if hout.is_empty() {
            return Ok(Value::Vector(out));
        }
        if out.is_empty() {
            return Ok(Value::Histograms(hout));
        }
        self.warn(format!(
            "{} native histogram results of {name}() left out beside its float results: Keel does not mix them in one vector yet",
            hout.len()
        ));
        Ok(Value::Vector(out))
    }
}

fn strip_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip_parens(&p.expr),
        other => other,
    }
}

/// Labels of `absent(sel)`: the selector's equality matchers (not the name).
fn absent_labels(e: &Expr) -> Labels {
    let Expr::VectorSelector(vs) = strip_parens(e) else {
        return Labels::default();
    };
    let mut pairs = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &vs.matchers.matchers {
        *seen.entry(m.name.as_str()).or_default() += 1;
    }
    for m in &vs.matchers.matchers {
        if matches!(m.op, MatchOp::Equal) && m.name != NAME && seen.get(m.name.as_str()) == Some(&1)
        {
            pairs.push((m.name.clone(), m.value.clone()));
        }
    }
    Labels::new(pairs)
}
