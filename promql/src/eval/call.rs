//! Function calls: range functions over a selector's window, and the
//! instant-vector and scalar functions, each by its PromQL name.

use super::*;

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
            let (param_idx, series_idx) = match name {
                "quantile_over_time" => (Some(0), 1),
                "predict_linear" => (Some(1), 0),
                _ => (None, 0),
            };
            let param = match param_idx {
                Some(i) => self.scalar(arg(i)?, t)?,
                None => 0.0,
            };
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
                    match functions::over_range(name, window, start, end, param) {
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
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(Value::Vector(out)),
                };
            }
            let (m, start, end) = self.matrix(arg(series_idx)?, t)?;
            let mut out = Vec::with_capacity(m.len());
            for s in &m {
                if let Some(v) = functions::over_range(name, &s.points, start, end, param)? {
                    let labels = if functions::keeps_name(name) {
                        s.labels.clone()
                    } else {
                        self.strip(&s.labels)
                    };
                    out.push(Sample { labels, value: v });
                }
            }
            return Ok(Value::Vector(out));
        }
        let map = |v: Vec<Sample>, f: &dyn Fn(f64) -> f64| -> Value {
            Value::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: s.labels.without_name(),
                        value: f(s.value),
                    })
                    .collect(),
            )
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
                Ok(map(v, &|x| functions::math(name, x).unwrap_or(f64::NAN)))
            }
            "round" => {
                let v = self.vector(arg(0)?, t)?;
                let to = match args.get(1) {
                    Some(a) => self.scalar(a, t)?,
                    None => 1.0,
                };
                // Prometheus rounds half up: floor(x / to + 0.5) * to.
                Ok(map(v, &|x| (x / to + 0.5).floor() * to))
            }
            "clamp" => {
                let v = self.vector(arg(0)?, t)?;
                let (lo, hi) = (self.scalar(arg(1)?, t)?, self.scalar(arg(2)?, t)?);
                if lo > hi {
                    return Ok(Value::Vector(Vec::new()));
                }
                Ok(map(v, &|x| x.max(lo).min(hi)))
            }
            "clamp_min" => {
                let v = self.vector(arg(0)?, t)?;
                let lo = self.scalar(arg(1)?, t)?;
                Ok(map(v, &|x| x.max(lo)))
            }
            "clamp_max" => {
                let v = self.vector(arg(0)?, t)?;
                let hi = self.scalar(arg(1)?, t)?;
                Ok(map(v, &|x| x.min(hi)))
            }
            "timestamp" => {
                let Expr::VectorSelector(vs) = strip_parens(arg(0)?) else {
                    let v = self.vector(arg(0)?, t)?;
                    return Ok(map(v, &|_| t as f64 / 1000.0));
                };
                let out: Vec<Sample> = self
                    .latest(vs, t)
                    .into_iter()
                    .map(|(labels, pt, _)| Sample {
                        labels: labels.without_name(),
                        value: pt as f64 / 1000.0,
                    })
                    .collect();
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
                Ok(map(v, &|x| {
                    functions::calendar(name, x).unwrap_or(f64::NAN)
                }))
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
                    srcs.push(self.string(a, t)?);
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
            "histogram_quantile" => {
                let q = self.scalar(arg(0)?, t)?;
                let v = self.vector(arg(1)?, t)?;
                let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
                for s in v {
                    let le = s.labels.get("le");
                    let Ok(bound) = le.trim().replace("+Inf", "inf").parse::<f64>() else {
                        continue;
                    };
                    let key = s.labels.without_name().project(&["le".to_owned()], false);
                    groups.entry(key).or_default().push((bound, s.value));
                }
                Ok(Value::Vector(
                    groups
                        .into_iter()
                        .map(|(labels, b)| Sample {
                            labels,
                            value: functions::bucket_quantile(q, b),
                        })
                        .collect(),
                ))
            }
            "sort" | "sort_desc" => {
                let mut v = self.vector(arg(0)?, t)?;
                v.sort_by(|a, b| {
                    if name == "sort" {
                        a.value.total_cmp(&b.value)
                    } else {
                        b.value.total_cmp(&a.value)
                    }
                });
                Ok(Value::Vector(v))
            }
            other => Err(EvalError::Unsupported(format!("function {other}()"))),
        }
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
