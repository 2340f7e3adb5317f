//! keel-replay: a recorded incident bundle through Keel's own rule
//! engine, notification routing and autoscaler on the manual Clock.
//!
//! - [`feed`]: each recorded sample made visible at its recorded arrival.
//! - [`run`]: one replay ([`run::replay`]) with the bundle's rules and
//!   policies or changed ones ([`run::Setup`]).
//! - [`report`]: the timeline, the check that a replay reproduces what
//!   was recorded, and the what-if diff.
//! - [`expect`]: `--assert` expectations.
//! - [`StoreMetrics`]: the collector's store as the controller's metric
//!   source (also what `keel up` runs the controller on).

pub mod expect;
pub mod feed;
pub mod report;
pub mod run;

/// PromQL for the controller, from a collector store.
pub struct StoreMetrics(pub keel_collector::rules::source::StoreSource);

impl StoreMetrics {
    /// The sum of an instant query's samples (a request rate).
    pub fn demand(&self, expr: &str, t_ms: i64) -> Result<f64, String> {
        use keel_collector::rules::engine::Source as _;
        Ok(self.0.instant(expr, t_ms)?.iter().map(|(_, v)| v).sum())
    }
}

impl keel_controller::MetricSource for StoreMetrics {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<keel_controller::run::Samples, String> {
        use keel_collector::rules::engine::Source as _;
        self.0.instant(expr, t_ms)
    }

    fn range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, f64)>, String> {
        let series = keel_collector::promql::Engine::new(&self.0.store)
            .range(
                expr,
                keel_collector::promql::QueryRange {
                    start: start_ms,
                    end: end_ms,
                    step: step_ms,
                },
            )
            .map_err(|e| e.to_string())?;
        match series.as_slice() {
            [] => Ok(Vec::new()),
            [one] => Ok(one.points.clone()),
            more => Err(format!(
                "{} series where one is needed (aggregate the query)",
                more.len()
            )),
        }
    }
}
