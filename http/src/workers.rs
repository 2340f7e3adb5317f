//! A fixed set of threads that decode and store incoming batches.
//!
//! Decoding and appending are CPU-bound and appends serialise on the head,
//! so more threads than cores store nothing faster. Tokio's blocking pool
//! would run each batch on whichever of up to 512 threads is idle; every
//! thread that allocates keeps an allocator heap of its own, and the
//! head's long-lived data then ends up spread over many half-empty heaps.
//! A few threads that live as long as the collector keep it compact
//! (measured by `keel bench metrics`: about a third less memory a series).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool; cloning shares it. Its threads end when the last clone goes.
#[derive(Clone, Debug)]
pub struct Workers {
    tx: mpsc::Sender<Job>,
}

/// A job could not run to the end (the pool is gone, or the job panicked).
#[derive(Debug, thiserror::Error)]
#[error("ingest worker failed: {0}")]
pub struct WorkerError(&'static str);

impl Workers {
    /// Start `threads` threads (at least one) named `name-N`.
    pub fn new(name: &str, threads: usize) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        job();
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// One thread a core.
    pub fn per_core(name: &str) -> Result<Self, std::io::Error> {
        Self::new(
            name,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )
    }

    /// Run `f` on a worker and wait for its result without blocking the
    /// async runtime. A panic in `f` is caught and reported as an error.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, WorkerError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(r) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = done.send(r);
            }
        });
        self.tx
            .send(job)
            .map_err(|_| WorkerError("the pool has stopped"))?;
        result.await.map_err(|_| WorkerError("the job panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_threads_and_a_panic_is_an_error() {
        let w = Workers::new("test-ingest", 2).expect("threads");
        let name = w
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert!(name.is_some_and(|n| n.starts_with("test-ingest-")));
        let failed = w.run(|| -> u8 { panic!("boom") }).await;
        assert!(failed.is_err());
        // The pool still works after a panic.
        assert_eq!(w.run(|| 2 + 2).await.expect("ran"), 4);
    }
}
