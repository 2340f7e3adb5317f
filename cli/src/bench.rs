//! `keel bench sampleapp`: how much the lb costs, and how well the load
//! generator keeps its schedule. Every figure is compared with a baseline
//! measured in the same run on the same machine (a ratio), because these
//! machines are small and noisy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use keel_core::clock::{SharedClock, SystemClock};
use keel_sampleapp::config::{Capacity, SampleAppConfig};
use keel_sampleapp::load::{
    self, HttpTarget, Outcome, Profile, ProfileKind, RequestKind, RunOptions, Target,
};
use keel_sampleapp::supervisor::Supervisor;
use serde::Serialize;

/// Flags of `keel bench sampleapp`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Length of the lb comparison (split over the rounds) and of the
    /// generator accuracy run.
    #[arg(long, default_value = "20s", value_parser = keel_core::duration::parse)]
    duration: Duration,
    /// Interleaved direct/lb rounds sharing `duration`.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Concurrent connections in the closed-loop throughput runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Rate for the generator accuracy run.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Throughput {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: String,
    direct: Throughput,
    through_lb: Throughput,
    lb_throughput_ratio: f64,
    lb_p99_ratio: f64,
    generator_target_rps: f64,
    generator_achieved_rps: f64,
    generator_achieved_ratio: f64,
    generator_send_lag_p99_ms: f64,
    generator_latency_p99_ms: f64,
    generator_one_core_ceiling_rps: f64,
    generator_one_core_http_ceiling_rps: f64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Latencies (µs) and error count of closed-loop runs, poolable.
struct Sample {
    hist: Histogram<u64>,
    errors: u64,
    seconds: f64,
}

impl Sample {
    fn empty() -> Self {
        Self {
            hist: new_histogram(),
            errors: 0,
            seconds: 0.0,
        }
    }

    fn absorb(&mut self, other: &Sample) {
        if let Err(e) = self.hist.add(&other.hist) {
            eprintln!("keel bench: merging latencies failed: {e}");
        }
        self.errors += other.errors;
        self.seconds += other.seconds;
    }

    fn summary(&self) -> Throughput {
        Throughput {
            requests_per_s: self.hist.len() as f64 / self.seconds.max(f64::MIN_POSITIVE),
            p50_ms: self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            errors: self.errors,
        }
    }
}

/// Closed loop: `connections` workers each send the next request as soon
/// as the last one answered, for `duration`.
async fn closed_loop(base: &str, connections: usize, duration: Duration) -> Sample {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_default();
    let deadline = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..connections {
        let (client, base) = (client.clone(), base.to_owned());
        workers.spawn(async move {
            let mut s = Sample::empty();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = 1 + (n * 31 + w as u64) % 1000;
                let t = Instant::now();
                match client.get(format!("{base}/api/products/{id}")).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => s.errors += 1,
                }
                s.hist.saturating_record(t.elapsed().as_micros() as u64);
                n += 1;
            }
            s
        });
    }
    let mut all = Sample::empty();
    while let Some(Ok(s)) = workers.join_next().await {
        all.absorb(&s);
    }
    all.seconds = duration.as_secs_f64();
    all
}

/// A target that answers at once: the generator's own cost, nothing else.
struct Null;

impl Target for Null {
    fn send(
        &self,
        _k: RequestKind,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> {
        Box::pin(std::future::ready(Outcome::Ok))
    }
}

/// The highest rate (doubling from `start`) at which the generator, on a
/// single-threaded runtime (one core), sends ≥ 98 % of its schedule with a
/// send-lag p99 under 5 ms. `target` is built inside that runtime.
fn one_core_ceiling(
    what: &str,
    start: f64,
    duration: Duration,
    target: impl Fn() -> Arc<dyn Target>,
) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut best = 0.0;
    let mut rate = start;
    while rate <= 5_000_000.0 {
        let profile = Profile::builtin(ProfileKind::Steady, rate, duration);
        let clock: SharedClock = Arc::new(SystemClock);
        let t = rt.block_on(async { target() });
        let r = rt.block_on(load::run(clock, &profile, t, RunOptions::default(), |_| {}));
        let kept = r.sent as f64 / profile.expected_requests();
        eprintln!(
            "  {what} at {rate:>9.0}/s: achieved {:>9.0}/s, sent {:.1} % of schedule, send lag p99 {:.2} ms, errors {}",
            r.achieved_rps,
            kept * 100.0,
            r.send_lag_ms.p99,
            r.errors
        );
        if kept < 0.98 || r.achieved_rps < 0.98 * rate || r.send_lag_ms.p99 > 5.0 || r.errors > 0 {
            break;
        }
        best = rate;
        rate *= 2.0;
    }
    Ok(best)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary data dir")?;
    let mut config = SampleAppConfig {
        data_dir: dir.path().to_path_buf(),
        ..SampleAppConfig::default()
    };
    config.lb.port = 0;
    config.supervisor.port = 0;
    config.web.instances = 1;
    // Measure the proxy, not the simulated capacity: no service time.
    config.web.capacity = Capacity {
        max_concurrency: 1024,
        queue_limit: 4096,
        service_time: Duration::ZERO,
        ..Capacity::default()
    };
    let exe = std::env::current_exe()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        let (sup, ep) = Supervisor::start(config, exe).await?;
        let web = ep
            .processes
            .iter()
            .find(|p| p.name == "web-1")
            .map(|p| p.addr)
            .context("web-1")?;
        let (direct_url, lb_url) = (format!("http://{web}"), format!("http://{}", ep.lb));
        eprintln!("keel bench: warming the cache");
        closed_loop(&direct_url, args.connections, Duration::from_secs(2)).await;
        // Interleave the two, several rounds, so drift on a noisy machine
        // hits both alike; pool the raw samples.
        let rounds = args.rounds.max(1);
        let slice = args.duration / (2 * rounds);
        eprintln!(
            "keel bench: closed loop, {} connections, {rounds} rounds of direct then lb, {slice:?} each",
            args.connections
        );
        let (mut direct, mut lb) = (Sample::empty(), Sample::empty());
        for round in 1..=rounds {
            let d = closed_loop(&direct_url, args.connections, slice).await;
            let l = closed_loop(&lb_url, args.connections, slice).await;
            let (ds, ls) = (d.summary(), l.summary());
            eprintln!(
                "  round {round}: direct {:>7.0} req/s p99 {:.2} ms | lb {:>7.0} req/s p99 {:.2} ms",
                ds.requests_per_s, ds.p99_ms, ls.requests_per_s, ls.p99_ms
            );
            direct.absorb(&d);
            lb.absorb(&l);
        }
        let (direct, through_lb) = (direct.summary(), lb.summary());

        eprintln!(
            "keel bench: generator at {} req/s for {:?} against web-1",
            args.rate, args.duration
        );
        let profile = Profile::builtin(ProfileKind::Steady, args.rate, args.duration);
        let clock: SharedClock = Arc::new(SystemClock);
        let target = Arc::new(HttpTarget::new(&direct_url, Duration::from_secs(10)));
        let opts = RunOptions {
            read_ratio: 1.0,
            ..RunOptions::default()
        };
        let gen_report = load::run(clock, &profile, target, opts, |_| {}).await;
        eprintln!("keel bench: generator ceiling on one core, HTTP to web-1");
        let url = direct_url.clone();
        let http_ceiling = tokio::task::spawn_blocking(move || {
            one_core_ceiling("generator + HTTP", 1000.0, Duration::from_secs(3), || {
                Arc::new(HttpTarget::new(&url, Duration::from_secs(10)))
            })
        })
        .await??;
        sup.shutdown().await;
        anyhow::Ok((direct, through_lb, gen_report, http_ceiling))
    })?;
    let (direct, through_lb, gen_report, http_ceiling) = results;
    eprintln!("keel bench: generator ceiling on one core, no target (scheduling alone)");
    let ceiling = one_core_ceiling("generator alone", 10_000.0, Duration::from_secs(2), || {
        Arc::new(Null)
    })?;
    let r = Results {
        machine: format!(
            "{} cores, {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::env::consts::ARCH
        ),
        lb_throughput_ratio: through_lb.requests_per_s
            / direct.requests_per_s.max(f64::MIN_POSITIVE),
        lb_p99_ratio: through_lb.p99_ms / direct.p99_ms.max(f64::MIN_POSITIVE),
        direct,
        through_lb,
        generator_target_rps: args.rate,
        generator_achieved_rps: gen_report.achieved_rps,
        generator_achieved_ratio: gen_report.achieved_rps / args.rate,
        generator_send_lag_p99_ms: gen_report.send_lag_ms.p99,
        generator_latency_p99_ms: gen_report.latency_ms.p99,
        generator_one_core_ceiling_rps: ceiling,
        generator_one_core_http_ceiling_rps: http_ceiling,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("machine: {}", r.machine);
        println!(
            "direct to web-1: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.direct.requests_per_s, r.direct.p50_ms, r.direct.p99_ms, r.direct.errors
        );
        println!(
            "through the lb:  {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            r.through_lb.requests_per_s,
            r.through_lb.p50_ms,
            r.through_lb.p99_ms,
            r.through_lb.errors
        );
        println!(
            "lb / direct: throughput {:.2}x, p99 {:.2}x",
            r.lb_throughput_ratio, r.lb_p99_ratio
        );
        println!(
            "generator: target {:.0} req/s, achieved {:.1} req/s ({:.2} %), send lag p99 {:.2} ms, latency p99 {:.2} ms",
            r.generator_target_rps,
            r.generator_achieved_rps,
            r.generator_achieved_ratio * 100.0,
            r.generator_send_lag_p99_ms,
            r.generator_latency_p99_ms
        );
        println!(
            "generator ceiling on one core: {:.0} req/s with HTTP to web-1, {:.0} req/s scheduling alone",
            r.generator_one_core_http_ceiling_rps, r.generator_one_core_ceiling_rps
        );
    }
    Ok(())
}
