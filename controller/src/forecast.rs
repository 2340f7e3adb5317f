//! Forecasting load for predictive scaling: additive Holt-Winters
//! (triple exponential smoothing) over evenly spaced history, with a
//! daily season — weekly once there are two weeks of history.
//!
//! Why Holt-Winters rather than seasonal decomposition: it learns level,
//! trend and season online in one pass, needs only two seasons of history
//! (decomposition wants several to separate trend from season), costs
//! O(n) per fit so the parameters can be chosen by a small grid search on
//! one-step errors, and a gap is bridged by its own forecast. Its
//! weakness — one season shape — is what traffic has (days alike, or weeks
//! alike).
//!
//! Outliers — points beyond 6σ of their one-step prediction (a burst, an
//! outage) — are set aside in a second pass, so one spike does not raise
//! the forecasts that follow it.
//!
//! The prediction interval is ±z·σ·√(1 + (h−1)·α²) around the mean, σ
//! the one-step residuals' standard deviation (the usual approximation
//! for exponential smoothing; 80 % by default, z = 1.2816).

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    level: f64,
    trend: f64,
    /// The last season's seasonal terms, in time order (the next point
    /// uses `seasonal[0]`).
    seasonal: Vec<f64>,
    /// Smoothing factors.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Season smoothing.
    pub gamma: f64,
    /// One-step residuals' standard deviation.
    pub sigma: f64,
}

/// One forecast point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The expected value.
    pub mean: f64,
    /// The interval's low end.
    pub low: f64,
    /// The interval's high end.
    pub high: f64,
}

/// 80 % two-sided.
pub const Z80: f64 = 1.2816;

/// Why there is no forecast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoForecast {
    /// Fewer than two seasons of history (how many points, how many needed).
    TooLittleHistory(usize, usize),
    /// A whole first season is missing.
    NoFirstSeason,
}

impl std::fmt::Display for NoForecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoForecast::TooLittleHistory(have, need) => {
                write!(f, "{have} points of history, {need} needed (two seasons)")
            }
            NoForecast::NoFirstSeason => f.write_str("the first season has no data"),
        }
    }
}

/// The season length for `n` points `step_ms` apart with a cycle of
/// `cycle_ms` (a day): seven cycles (a week) when there are fourteen,
/// else one.
pub fn season_for(n: usize, step_ms: u64, cycle_ms: u64) -> usize {
    let day = (cycle_ms / step_ms.max(1)).max(1) as usize;
    if n >= 14 * day { 7 * day } else { day }
}

/// One pass of the smoother over `x` (NaN: missing); the model and the
/// sum of squared one-step errors (and how many).
/// `reject`: an observation further than this from its one-step
/// prediction is taken as an outlier (a burst, an outage) and replaced
/// by the prediction, so that one bad hour does not shift the level or
/// the season.
fn run(
    x: &[f64],
    m: usize,
    (alpha, beta, gamma): (f64, f64, f64),
    reject: Option<f64>,
) -> Option<(Model, f64, usize)> {
    let mean = |s: &[f64]| {
        let v: Vec<f64> = s.iter().copied().filter(|v| v.is_finite()).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let first = mean(&x[..m])?;
    let second = mean(&x[m..2 * m]).unwrap_or(first);
    let mut level = first;
    let mut trend = (second - first) / m as f64;
    // Seasonal terms from the first two seasons where present.
    let mut seasonal: Vec<f64> = (0..m)
        .map(|i| {
            let obs: Vec<f64> = [x[i] - first, x[m + i] - second]
                .into_iter()
                .filter(|v| v.is_finite())
                .collect();
            if obs.is_empty() {
                0.0
            } else {
                obs.iter().sum::<f64>() / obs.len() as f64
            }
        })
        .collect();
    let (mut sse, mut count) = (0.0, 0usize);
    for (t, &obs) in x.iter().enumerate().skip(m) {
        let s = seasonal[t % m];
        let predicted = level + trend + s;
        let outlier = |e: f64| reject.is_some_and(|r| e.abs() > r);
        let v = if obs.is_finite() && !outlier(obs - predicted) {
            let e = obs - predicted;
            sse += e * e;
            count += 1;
            obs
        } else {
            predicted
        };
        let new_level = alpha * (v - s) + (1.0 - alpha) * (level + trend);
        trend = beta * (new_level - level) + (1.0 - beta) * trend;
        seasonal[t % m] = gamma * (v - new_level) + (1.0 - gamma) * s;
        level = new_level;
    }
    // Rotate so that seasonal[0] is the next point's.
    let next = x.len() % m;
    seasonal.rotate_left(next);
    let sigma = if count > 1 {
        (sse / (count - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some((
        Model {
            level,
            trend,
            seasonal,
            alpha,
            beta,
            gamma,
            sigma,
        },
        sse,
        count,
    ))
}

impl Model {
    /// Fit to `x` (evenly spaced, oldest first, NaN for missing points)
    /// with season length `m`, choosing the smoothing factors that give
    /// the smallest one-step error.
    pub fn fit(x: &[f64], m: usize) -> Result<Self, NoForecast> {
        if m < 2 || x.len() < 2 * m {
            return Err(NoForecast::TooLittleHistory(x.len(), 2 * m.max(2)));
        }
        let mut best: Option<(f64, Model)> = None;
        for alpha in [0.05, 0.1, 0.2, 0.4] {
            for beta in [0.0, 0.005, 0.02] {
                for gamma in [0.05, 0.15, 0.3, 0.5] {
                    let Some((model, sse, n)) = run(x, m, (alpha, beta, gamma), None) else {
                        return Err(NoForecast::NoFirstSeason);
                    };
                    let score = if n > 0 { sse / n as f64 } else { f64::MAX };
                    if best.as_ref().is_none_or(|(b, _)| score < *b) {
                        best = Some((score, model));
                    }
                }
            }
        }
        let (_, first) = best.ok_or(NoForecast::NoFirstSeason)?;
        // Again with the same factors, outliers (beyond 6σ) set aside.
        let limit = (first.sigma > 0.0).then_some(6.0 * first.sigma);
        Ok(run(x, m, (first.alpha, first.beta, first.gamma), limit)
            .map_or(first, |(model, _, _)| model))
    }

    /// The next `h` points, with the interval at `z` (e.g. [`Z80`]).
    pub fn forecast(&self, h: usize, z: f64) -> Vec<Point> {
        let m = self.seasonal.len();
        (1..=h)
            .map(|k| {
                let mean = self.level + k as f64 * self.trend + self.seasonal[(k - 1) % m];
                let spread =
                    z * self.sigma * (1.0 + (k as f64 - 1.0) * self.alpha * self.alpha).sqrt();
                Point {
                    mean,
                    low: mean - spread,
                    high: mean + spread,
                }
            })
            .collect()
    }
}

/// What predictive scaling asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ahead {
    /// Instances for the forecast.
    pub instances: u32,
    /// Which point of the slice given it is (its offset from the first).
    pub offset: usize,
    /// That forecast point.
    pub point: Point,
}

/// What predictive scaling asks for: enough instances for the largest
/// forecast mean within `lead` points (warm-up plus buffer) — so capacity
/// is in place when the load arrives — at `per_instance` each.
pub fn ahead(forecast: &[Point], lead: usize, per_instance: f64) -> Option<Ahead> {
    let (offset, point) = forecast
        .iter()
        .take(lead.max(1))
        .copied()
        .enumerate()
        .max_by(|(_, a), (_, b)| a.mean.total_cmp(&b.mean))?;
    (per_instance > 0.0).then(|| Ahead {
        instances: (point.mean.max(0.0) / per_instance).ceil() as u32,
        offset,
        point,
    })
}
