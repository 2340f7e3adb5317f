//! Queries from clients (the API, dashboard panels) run through one
//! gate: at most `max_concurrency` at once, each on a blocking thread
//! with its budget, and cancelled when its caller stops waiting (the
//! HTTP client went away and the handler's future was dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use crate::EvalError;
use crate::limits::{Budget, QueryLimits};

/// Where a query waited for its slot, in Prometheus' words.
const QUEUE: &str = "query queue";

/// The concurrency limit and the limits every query it runs gets.
#[derive(Clone)]
pub struct QueryGate {
    limits: QueryLimits,
    slots: Arc<Semaphore>,
}

impl Default for QueryGate {
    fn default() -> Self {
        Self::new(QueryLimits::default())
    }
}

/// Sets the query's cancel flag when the waiting future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl QueryGate {
    /// A gate for `limits`.
    pub fn new(limits: QueryLimits) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_concurrency.max(1)));
        Self { limits, slots }
    }

    /// The limits its queries get.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.limits.max_concurrency.max(1) - self.slots.available_permits()
    }

    /// Run `query` once a slot is free (waiting counts against the
    /// timeout), on a blocking thread, with a budget that is cancelled
    /// if the returned future is dropped before it finishes.
    pub async fn run<T, F>(&self, query: F) -> Result<T, EvalError>
    where
        T: Send + 'static,
        F: FnOnce(Budget) -> Result<T, EvalError> + Send + 'static,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let _on_drop = CancelOnDrop(cancel.clone());
        let budget = self.limits.budget(Some(cancel));
        let slot = tokio::time::timeout(self.limits.timeout, self.slots.clone().acquire_owned());
        let permit = match slot.await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(EvalError::Canceled(QUEUE)),
            Err(_) => return Err(EvalError::Timeout(QUEUE)),
        };
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            query(budget)
        });
        match done.await {
            Ok(r) => r,
            Err(e) => Err(EvalError::Internal(format!("the query failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gate(max_concurrency: usize, timeout: Duration) -> QueryGate {
        QueryGate::new(QueryLimits {
            max_concurrency,
            timeout,
            ..QueryLimits::default()
        })
    }

    /// Spins until its budget says stop, reporting why.
    fn until_stopped(b: Budget) -> Result<(), EvalError> {
        loop {
            b.check(crate::limits::EXECUTION)?;
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn a_query_past_its_timeout_stops_with_prometheus_error() {
        let g = gate(2, Duration::from_millis(20));
        let e = g.run(until_stopped).await.unwrap_err();
        assert_eq!(e.to_string(), "query timed out in query execution");
        assert_eq!(g.running(), 0, "the slot is given back");
    }

    #[tokio::test]
    async fn a_full_gate_makes_the_next_query_wait_then_time_out() {
        let g = gate(1, Duration::from_millis(300));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g1 = g.clone();
        let first = tokio::spawn(async move {
            g1.run(move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
        });
        started_rx.await.expect("the first query starts");
        assert_eq!(g.running(), 1);
        let e = g.run(|_| Ok(())).await.unwrap_err();
        assert_eq!(e, EvalError::Timeout(QUEUE));
        release_tx.send(()).expect("the first query waits");
        first
            .await
            .expect("joins")
            .expect("the first query finishes");
        assert_eq!(g.run(|_| Ok(7)).await, Ok(7), "a free slot runs at once");
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_query() {
        let g = gate(1, Duration::from_secs(600));
        let (tx, rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let g1 = g.clone();
        let caller = tokio::spawn(async move {
            g1.run(move |b| {
                let _ = started_tx.send(());
                let r = until_stopped(b);
                let _ = tx.send(r.clone());
                r
            })
            .await
        });
        started_rx.await.expect("the query starts");
        caller.abort();
        let why = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .expect("joins")
            .expect("the query reports why it stopped");
        assert_eq!(why, Err(EvalError::Canceled(crate::limits::EXECUTION)));
    }

    #[tokio::test]
    async fn a_panicking_query_is_an_internal_error_and_frees_its_slot() {
        let g = gate(1, Duration::from_secs(5));
        let e = g
            .run(|_| -> Result<(), EvalError> { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(e, EvalError::Internal(_)), "{e}");
        assert_eq!(g.run(|_| Ok(1)).await, Ok(1));
    }
}
