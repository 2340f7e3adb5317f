//! What one query may cost, as Prometheus bounds it: samples held in
//! memory at once (`query.max_samples`), wall time (`query.timeout`), and
//! queries running at once (`query.max_concurrency`, enforced by
//! [`crate::gate::QueryGate`]). A query past a limit stops with the error
//! Prometheus gives; so does one whose client went away.
//!
//! The timeout is wall time on purpose (an [`Instant`], not the injected
//! clock): it bounds the CPU a query may take, which no simulated clock
//! advances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// The `query:` settings (Prometheus' `--query.*` flags, its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// Most samples one query may hold in memory at once: the selected
    /// series' samples, the result so far, and one step's intermediate
    /// values.
    pub max_samples: usize,
    /// Longest a query may run, waiting for a slot included.
    #[serde(with = "keel_core::duration")]
    pub timeout: Duration,
    /// Most API and dashboard queries evaluated at once; more wait for a
    /// slot (within their timeout). Rule evaluation does not wait for one.
    pub max_concurrency: usize,
    /// Evaluate Prometheus' experimental functions (`limitk`,
    /// `limit_ratio`, `sort_by_label`, `sort_by_label_desc`,
    /// `mad_over_time`, `double_exponential_smoothing`), as its
    /// `--enable-feature=promql-experimental-functions` does.
    pub experimental_functions: bool,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            max_concurrency: 20,
            experimental_functions: false,
        }
    }
}

impl QueryLimits {
    /// Push one message per invalid setting, each naming `at.<field>`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.max_samples == 0 {
            problems.push(format!("{at}.max_samples: must be at least 1"));
        }
        if self.timeout.is_zero() {
            problems.push(format!("{at}.timeout: must be positive"));
        }
        if self.max_concurrency == 0 {
            problems.push(format!("{at}.max_concurrency: must be at least 1"));
        }
    }

    /// A budget for one query starting now, stopped early if `cancel` is
    /// set.
    pub fn budget(&self, cancel: Option<Arc<AtomicBool>>) -> Budget {
        Budget {
            max_samples: self.max_samples,
            deadline: Instant::now().checked_add(self.timeout),
            cancel,
            experimental: self.experimental_functions,
        }
    }
}

/// Where in a query a limit was met, in Prometheus' words.
pub(crate) const EXECUTION: &str = "query execution";
/// Inside a subquery's steps.
pub(crate) const SUBQUERY: &str = "subquery evaluation";

/// One query's allowance: its sample limit, deadline and cancellation.
#[derive(Debug, Clone)]
pub struct Budget {
    max_samples: usize,
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
    experimental: bool,
}

impl Default for Budget {
    /// Prometheus' defaults, starting now, never cancelled.
    fn default() -> Self {
        QueryLimits::default().budget(None)
    }
}

impl Budget {
    /// Whether experimental functions may be evaluated.
    pub fn experimental(&self) -> bool {
        self.experimental
    }

    /// The same budget with experimental functions allowed or not.
    pub fn with_experimental(mut self, on: bool) -> Self {
        self.experimental = on;
        self
    }

    /// Most samples held at once.
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// Whether the query must stop now (`at`: where it is), checked
    /// between steps: cancelled by its caller, or past its deadline.
    pub(crate) fn check(&self, at: &'static str) -> Result<(), EvalError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(EvalError::Canceled(at));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(EvalError::Timeout(at));
        }
        Ok(())
    }

    /// Refuse `held` samples at once beyond the limit.
    pub(crate) fn allow(&self, held: usize, at: &'static str) -> Result<(), EvalError> {
        if held > self.max_samples {
            return Err(EvalError::TooManySamples(at));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_setting_is_named_at_once() {
        let mut problems = Vec::new();
        QueryLimits {
            max_samples: 0,
            timeout: Duration::ZERO,
            max_concurrency: 0,
            experimental_functions: false,
        }
        .validate("collector.query", &mut problems);
        assert_eq!(
            problems,
            [
                "collector.query.max_samples: must be at least 1",
                "collector.query.timeout: must be positive",
                "collector.query.max_concurrency: must be at least 1",
            ]
        );
    }

    #[test]
    fn a_cancelled_query_stops_before_its_deadline() {
        let flag = Arc::new(AtomicBool::new(false));
        let b = QueryLimits::default().budget(Some(flag.clone()));
        assert_eq!(b.check(EXECUTION), Ok(()));
        flag.store(true, Ordering::Relaxed);
        assert_eq!(b.check(EXECUTION), Err(EvalError::Canceled(EXECUTION)));
    }

    #[test]
    fn a_spent_deadline_times_out() {
        let b = Budget {
            deadline: Some(Instant::now()),
            ..Budget::default()
        };
        assert_eq!(b.check(SUBQUERY), Err(EvalError::Timeout(SUBQUERY)));
        assert_eq!(
            b.check(SUBQUERY).map_err(|e| e.to_string()),
            Err("query timed out in subquery evaluation".into())
        );
    }
}
