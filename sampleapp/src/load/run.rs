//! Running a profile against a target, open loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use keel_core::clock::SharedClock;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::profile::Profile;

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET /api/products/{product}`.
    Read {
        /// Product id.
        product: u64,
    },
    /// `POST /api/orders` for `product`.
    Write {
        /// Product id.
        product: u64,
    },
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Anything else; the string names the class (`http_503`, `connect`, …).
    Error(String),
}

/// Something that can be sent requests.
pub trait Target: Send + Sync + 'static {
    /// Send one request and report how it ended.
    fn send(&self, kind: RequestKind) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;
}

/// The sample app's shop API over HTTP.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    base: String,
    client: reqwest::Client,
}

impl HttpTarget {
    /// A target at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Target for HttpTarget {
    fn send(&self, kind: RequestKind) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
        let req = match kind {
            RequestKind::Read { product } => self
                .client
                .get(format!("{}/api/products/{product}", self.base)),
            RequestKind::Write { product } => self
                .client
                .post(format!("{}/api/orders", self.base))
                .json(&serde_json::json!({ "product_id": product, "quantity": 1 })),
        };
        Box::pin(async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    // Read the body so the connection is reused.
                    match r.bytes().await {
                        Ok(_) => Outcome::Ok,
                        Err(_) => Outcome::Error("body".into()),
                    }
                }
                Ok(r) => Outcome::Error(format!("http_{}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Outcome::Error("timeout".into()),
                Err(e) if e.is_connect() => Outcome::Error("connect".into()),
                Err(_) => Outcome::Error("io".into()),
            }
        })
    }
}

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Fraction of reads (the rest are writes).
    pub read_ratio: f64,
    /// Products are drawn from `1..=products`.
    pub products: u64,
    /// Seed for the request mix, so runs are repeatable.
    pub seed: u64,
    /// Requests allowed in flight; beyond, a due request is counted as
    /// `dropped` (the target is not keeping up) rather than delayed.
    pub max_in_flight: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            read_ratio: 0.8,
            products: 1000,
            seed: 1,
            max_in_flight: 10_000,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// Progress while running, and the final summary.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests that got a 2xx.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Requests due but not sent because `max_in_flight` was reached.
    pub dropped: u64,
    /// Requests still in flight.
    pub in_flight: u64,
    /// Requests the profile asked for.
    pub scheduled: u64,
    /// Sent per second of elapsed time.
    pub achieved_rps: f64,
    /// Latency from the intended send time.
    pub latency_ms: Latency,
    /// How late requests left against their intended send time: the
    /// generator's own lag (near 0 when it keeps up).
    pub send_lag_ms: Latency,
    /// Failures by class.
    pub errors_by_kind: BTreeMap<String, u64>,
}

struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

fn percentiles(h: &Histogram<u64>) -> Latency {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Latency {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        max: h.max() as f64 / 1000.0,
    }
}

fn report(
    t: &Tally,
    lag: &Histogram<u64>,
    elapsed: Duration,
    sent: u64,
    dropped: u64,
    in_flight: u64,
    scheduled: u64,
) -> Report {
    let secs = elapsed.as_secs_f64();
    Report {
        elapsed_s: secs,
        sent,
        ok: t.ok,
        errors: t.errors.values().sum(),
        dropped,
        in_flight,
        scheduled,
        achieved_rps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        latency_ms: percentiles(&t.hist),
        send_lag_ms: percentiles(lag),
        errors_by_kind: t.errors.clone(),
    }
}

/// Run `profile` against `target`, sending each request at its scheduled
/// time on `clock`. `progress` is called about every 250 ms of clock time.
pub async fn run(
    clock: SharedClock,
    profile: &Profile,
    target: Arc<dyn Target>,
    opts: RunOptions,
    mut progress: impl FnMut(&Report),
) -> Report {
    let start = clock.now();
    let scheduled = profile.expected_requests().ceil() as u64;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let mut tasks = tokio::task::JoinSet::new();
    let (mut sent, mut dropped) = (0u64, 0u64);
    let mut last_progress = start;
    let mut lag = new_histogram();
    let products = opts.products.max(1);
    for offset in profile.send_offsets() {
        let intended = start + offset;
        clock.sleep_until(intended).await;
        let late = clock.now().duration_since(intended).unwrap_or_default();
        lag.saturating_record((late.as_micros() as u64).max(1));
        while tasks.try_join_next().is_some() {}
        let product = rng.random_range(1..=products);
        let kind = if rng.random_bool(opts.read_ratio.clamp(0.0, 1.0)) {
            RequestKind::Read { product }
        } else {
            RequestKind::Write { product }
        };
        if in_flight.load(Ordering::Relaxed) >= opts.max_in_flight {
            dropped += 1;
            continue;
        }
        sent += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (fut, clock2, tally2, inf) = (
            target.send(kind),
            clock.clone(),
            tally.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            let outcome = fut.await;
            let latency = clock2
                .now()
                .duration_since(intended)
                .unwrap_or(Duration::ZERO);
            let mut t = tally2.lock().unwrap_or_else(|e| e.into_inner());
            t.hist
                .saturating_record((latency.as_micros() as u64).max(1));
            match outcome {
                Outcome::Ok => t.ok += 1,
                Outcome::Error(k) => *t.errors.entry(k).or_default() += 1,
            }
            drop(t);
            inf.fetch_sub(1, Ordering::Relaxed);
        });
        let now = clock.now();
        if now.duration_since(last_progress).unwrap_or_default() >= Duration::from_millis(250) {
            last_progress = now;
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            progress(&report(
                &t,
                &lag,
                elapsed(&clock, start),
                sent,
                dropped,
                in_flight.load(Ordering::Relaxed) as u64,
                scheduled,
            ));
        }
    }
    // The send phase lasts the profile's length, or longer if the
    // generator fell behind; the achieved rate is over that, not over the
    // time the last answers took to arrive.
    let length = profile
        .duration()
        .max(elapsed(&clock, start))
        .max(Duration::from_nanos(1));
    while tasks.join_next().await.is_some() {}
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = report(&t, &lag, length, sent, dropped, 0, scheduled);
    r.elapsed_s = elapsed(&clock, start).as_secs_f64();
    r
}

fn elapsed(clock: &SharedClock, start: SystemTime) -> Duration {
    clock.now().duration_since(start).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::profile::ProfileKind;
    use keel_core::clock::{Clock, ManualClock};

    /// Records the clock time of every send.
    struct Recorder {
        clock: ManualClock,
        times: Mutex<Vec<SystemTime>>,
    }

    impl Target for Recorder {
        fn send(
            &self,
            _kind: RequestKind,
        ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
            self.times
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.clock.now());
            Box::pin(std::future::ready(Outcome::Ok))
        }
    }

    async fn drive(profile: Profile) -> (Vec<SystemTime>, SystemTime, Report) {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ManualClock::new(t0);
        let rec = Arc::new(Recorder {
            clock: clock.clone(),
            times: Mutex::new(Vec::new()),
        });
        let shared: SharedClock = Arc::new(clock.clone());
        let target: Arc<dyn Target> = rec.clone();
        let p2 = profile.clone();
        let mut gen_task =
            tokio::spawn(
                async move { run(shared, &p2, target, RunOptions::default(), |_| {}).await },
            );
        // Step time exactly to each deadline the generator waits for.
        let report = loop {
            tokio::select! {
                r = &mut gen_task => break r.expect("generator"),
                d = clock.next_deadline() => clock.set(d),
            }
        };
        let times = rec.times.lock().expect("lock").clone();
        (times, t0, report)
    }

    #[tokio::test]
    async fn every_profile_sends_exactly_on_schedule() {
        for kind in [
            ProfileKind::Steady,
            ProfileKind::Ramp,
            ProfileKind::Diurnal,
            ProfileKind::Spike,
        ] {
            let profile = Profile::builtin(kind, 50.0, Duration::from_secs(20));
            let expected: Vec<Duration> = profile.send_offsets().collect();
            let (times, t0, report) = drive(profile).await;
            let got: Vec<Duration> = times
                .iter()
                .map(|t| t.duration_since(t0).expect("after start"))
                .collect();
            assert_eq!(
                got, expected,
                "{kind:?}: send times differ from the schedule"
            );
            assert_eq!(report.sent, expected.len() as u64, "{kind:?}");
            assert_eq!(report.ok, report.sent, "{kind:?}");
            assert_eq!(report.dropped, 0, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn steady_schedule_is_exactly_evenly_spaced_on_the_clock() {
        let (times, t0, report) = drive(Profile::builtin(
            ProfileKind::Steady,
            200.0,
            Duration::from_secs(3),
        ))
        .await;
        assert_eq!(times.len(), 600);
        for (n, t) in times.iter().enumerate() {
            assert_eq!(
                t.duration_since(t0).expect("after"),
                Duration::from_secs_f64(n as f64 / 200.0)
            );
        }
        assert!(
            (report.achieved_rps - 200.0).abs() < 1e-9,
            "{}",
            report.achieved_rps
        );
    }

    #[tokio::test]
    async fn a_target_that_never_answers_shows_as_dropped_not_as_delay() {
        struct Stuck;
        impl Target for Stuck {
            fn send(
                &self,
                _k: RequestKind,
            ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
                Box::pin(std::future::pending())
            }
        }
        let t0 = SystemTime::UNIX_EPOCH;
        let clock = ManualClock::new(t0);
        let shared: SharedClock = Arc::new(clock.clone());
        let profile = Profile::builtin(ProfileKind::Steady, 10.0, Duration::from_secs(2));
        let opts = RunOptions {
            max_in_flight: 5,
            ..RunOptions::default()
        };
        let mut gen_task =
            tokio::spawn(async move { run(shared, &profile, Arc::new(Stuck), opts, |_| {}).await });
        let mut sent_all = false;
        while !sent_all {
            tokio::select! {
                _ = &mut gen_task => unreachable!("stuck requests never finish"),
                d = clock.next_deadline() => {
                    clock.set(d);
                    sent_all = d >= t0 + Duration::from_millis(1900);
                }
            }
        }
        // The schedule was kept: the last request slot came due on time.
        assert_eq!(clock.now(), t0 + Duration::from_millis(1900));
        gen_task.abort();
    }
}
