//! The collector's stores as a rule [`Source`]: PromQL over the metric
//! store, log counts over the log index, recorded series appended back.

use std::sync::Arc;

use super::engine::{Recorded, Samples, Source};
use keel_logindex::logs::LogStore;
use keel_metricstore::Store;
use keel_promql::{Engine, Value};
use keel_series::labels::{Labels, NAME};

/// The metric store (and, in the collector, the log index).
#[derive(Clone)]
pub struct StoreSource {
    /// The metric store.
    pub store: Arc<Store>,
    /// The log index; none in rule unit tests.
    pub logs: Option<Arc<LogStore>>,
    /// What one rule's query may cost.
    pub limits: keel_promql::QueryLimits,
}

impl StoreSource {
    /// Rules over `store` (and `logs`) with Prometheus' default limits.
    pub fn new(store: Arc<Store>, logs: Option<Arc<LogStore>>) -> Self {
        Self {
            store,
            logs,
            limits: keel_promql::QueryLimits::default(),
        }
    }
}

impl Source for StoreSource {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<Samples, String> {
        match Engine::with_budget(&self.store, self.limits.budget(None))
            .instant(expr, t_ms)
            .map_err(|e| e.to_string())?
        {
            Value::Vector(v) => Ok(v
                .into_iter()
                .map(|s| {
                    let labels = s
                        .labels
                        .pairs()
                        .filter(|(k, _)| *k != NAME)
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    (labels, s.value)
                })
                .collect()),
            Value::Scalar(x) => Ok(vec![(Default::default(), x)]),
            other => Err(format!(
                "a rule's expression must give a vector, not a {}",
                other.type_name()
            )),
        }
    }

    fn count_logs(&self, query: &str, start_ms: i64, end_ms: i64) -> Result<u64, String> {
        match &self.logs {
            Some(l) => l
                .count(query, start_ms, end_ms)
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            None => {
                Err("log rules cannot be unit-tested yet (no log input in the test format)".into())
            }
        }
    }

    fn record(&self, samples: Recorded) -> Result<(), String> {
        let batch = samples
            .into_iter()
            .map(|(l, t, v)| (Labels::new(l.into_iter().collect()), vec![(t, v)]))
            .collect();
        self.store
            .append(batch)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
