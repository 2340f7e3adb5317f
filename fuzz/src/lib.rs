//! keel-fuzz: structure-aware fuzzing of everything Keel decodes or
//! parses from outside — OTLP metrics, logs and traces (valid messages
//! with hostile values and shapes), Prometheus remote write (odd label
//! orders, NaN, ±Inf, staleness markers), JSON log lines, PromQL built
//! from its grammar and evaluated under a query budget, rule and dashboard
//! YAML mutated from valid files, and the metric WAL.
//!
//! Generation goes past the first parse: a decoded message is converted,
//! limited and stored as ingest would, an expression is evaluated, a file
//! is validated. A panic anywhere, or a broken property (an error that
//! does not name its file, a record that cannot be written to the WAL),
//! is a failure; proptest shrinks it to a minimal input, and its seed is
//! saved in `fuzz/regressions/<target>.txt`, which every later run (the
//! bounded one in the tests, the long one in `keel bench fuzz`) replays
//! first, so a found failure stays a regression test.
//!
//! It sits above the collector (it drives its decoders) and below the
//! `keel` binary (the bench); nothing else depends on it.

pub mod inputs;
/// proptest, for targets defined beside what they test (the scenario format).
pub use proptest;
pub mod targets;

use std::time::{Duration, Instant};

use proptest::test_runner::{Config, FileFailurePersistence, TestError, TestRunner};

/// One fuzz target: a name and how to run some cases of it.
#[derive(Clone, Copy)]
pub struct Target {
    /// Its name (and its regressions file's).
    pub name: &'static str,
    /// Run `cases` cases (saved regressions first).
    pub run: fn(u32) -> Outcome,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Cases run.
    pub cases: u32,
    /// The minimized failing input and why, if any.
    pub failure: Option<String>,
}

/// Every target.
pub fn all() -> Vec<Target> {
    targets::ALL.to_vec()
}

/// A runner for `cases` cases of target `name`, replaying and saving
/// failures in its regressions file.
fn runner(name: &'static str, cases: u32) -> TestRunner {
    let path: &'static str = Box::leak(
        format!("{}/regressions/{name}.txt", env!("CARGO_MANIFEST_DIR")).into_boxed_str(),
    );
    // A fixed seed (KEEL_FUZZ_SEED, or [`fix_seed`]) repeats the cases:
    // the bounded run in the tests does, so CI is repeatable; without one
    // every run draws new cases.
    let fixed = std::env::var("KEEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| Some(SEED.load(std::sync::atomic::Ordering::Relaxed)).filter(|s| *s != 0));
    let rng_seed = fixed.map_or(
        proptest::test_runner::RngSeed::Random,
        proptest::test_runner::RngSeed::Fixed,
    );
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        // The shrinking of a slow case must end.
        max_shrink_time: 60_000,
        rng_seed,
        ..Config::default()
    })
}

/// The seed [`fix_seed`] set (0: none).
static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Draw every later run's cases from `seed` (not 0), so they repeat.
pub fn fix_seed(seed: u64) {
    SEED.store(seed, std::sync::atomic::Ordering::Relaxed);
}

/// Run `cases` cases of `strategy` through `test` (target `name`: its
/// regressions file is replayed first, a failure's seed saved there).
pub fn check<S>(
    name: &'static str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) -> Outcome
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
{
    let mut r = runner(name, cases);
    let failure = match r.run(&strategy, test) {
        Ok(()) => None,
        Err(TestError::Fail(why, input)) => Some(format!("{why}\nminimal input: {input:#?}")),
        Err(TestError::Abort(why)) => Some(format!("aborted: {why}")),
    };
    Outcome { cases, failure }
}

/// A long run's figures for one target.
#[derive(Debug, Clone)]
pub struct Rate {
    /// The target.
    pub name: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The first failure found.
    pub failure: Option<String>,
}

/// Run `target` in rounds of `round` cases until `budget` has passed or
/// it fails.
pub fn run_for(target: &Target, budget: Duration, round: u32) -> Rate {
    let start = Instant::now();
    let mut cases = 0u64;
    let mut failure = None;
    while start.elapsed() < budget && failure.is_none() {
        let o = (target.run)(round);
        cases += u64::from(o.cases);
        failure = o.failure;
    }
    Rate {
        name: target.name,
        cases,
        elapsed: start.elapsed(),
        failure,
    }
}

#[cfg(test)]
mod tests {
    /// The bounded run CI does: every target, `KEEL_FUZZ_CASES` cases
    /// each (default 64), saved regressions first, from a fixed seed
    /// (`KEEL_FUZZ_SEED`, else 1) so the run is repeatable. It runs on
    /// a thread with a 256 MiB stack: proptest's own generation of the
    /// nested PromQL strategy overflows a 2 MiB thread in a debug build
    /// for some seeds (seed 10: the backtrace is all `new_tree`, none of
    /// it Keel's). Keel's own depth is bounded: `keel_promql::parse`.
    #[test]
    fn every_target_survives_a_bounded_run() {
        let cases = std::env::var("KEEL_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        super::fix_seed(1);
        let failures = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let mut failures = Vec::new();
                for t in super::all() {
                    if let Some(f) = (t.run)(cases).failure {
                        failures.push(format!("{}: {f}", t.name));
                    }
                }
                failures
            })
            .expect("a fuzz thread")
            .join()
            .expect("the fuzz thread ends");
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}
