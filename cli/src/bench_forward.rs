//! `keel bench forward`: forwarding to a real VictoriaMetrics (#26).
//! The same remote-write requests are sent straight to VictoriaMetrics
//! (the baseline: what it takes when nothing stands between) and to a
//! collector that forwards to it; the figure is the collector's
//! end-to-end rate (until VictoriaMetrics holds every sample) over the
//! baseline's. Then VictoriaMetrics is stopped for `--outage` while the
//! collector takes `--rate` samples/s, started again, and the backlog's
//! drain is timed: the catch-up rate, and how many times the arrival
//! rate it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use keel_testkit::victoria::Victoria;

/// Flags of `keel bench forward`.
#[derive(clap::Args)]
pub struct ForwardBenchArgs {
    /// The VictoriaMetrics binary (Debian package `victoria-metrics`).
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Series a request.
    #[arg(long, default_value_t = 1_000)]
    series: usize,
    /// Requests in the throughput phases (one sample a series each).
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How long VictoriaMetrics is down in the catch-up phase.
    #[arg(long, default_value = "5m", value_parser = keel_core::duration::parse)]
    outage: Duration,
    /// Samples a second sent to the collector meanwhile.
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
}

/// Poll every 50 ms until `check` gives a value, `limit` at most.
async fn until<T>(
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    Ok(keel_testkit::within(what, limit, Duration::from_millis(50), check).await?)
}

/// VictoriaMetrics from `bin` on `port`, its data in `dir`.
async fn start_victoria(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Victoria> {
    Ok(Victoria::start(bin, dir, port).await?)
}

/// Samples of `metric` VictoriaMetrics holds.
async fn held(http: &reqwest::Client, vm: &str, metric: &str) -> u64 {
    let _ = http.get(format!("{vm}/internal/force_flush")).send().await;
    let Ok(r) = http
        .get(format!("{vm}/api/v1/query"))
        .query(&[("query", format!("sum(count_over_time({metric}[1d]))"))])
        .send()
        .await
    else {
        return 0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One request: `series` series of `metric`, one sample each at `t`.
fn request(metric: &str, series: usize, t: i64) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: metric.into(),
                    },
                    Label {
                        name: "series".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![Sample {
                    value: (t % 1000) as f64,
                    timestamp: t,
                }],
            })
            .collect(),
    };
    req.to_snappy()
}

/// Send `n` requests of `metric` to `url`, `concurrency` at a time, each
/// a millisecond apart in sample time.
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    metric: &str,
    args: &ForwardBenchArgs,
    n: usize,
) -> anyhow::Result<()> {
    let base = now_ms() - 60_000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (http, url, metric, next) = (
            http.clone(),
            url.to_owned(),
            metric.to_owned(),
            next.clone(),
        );
        let series = args.series;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                post(&http, &url, request(&metric, series, base + i as i64)).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Post a snappy remote-write 1.0 body; anything but 2xx is an error.
pub(crate) async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let r = http
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "{url}: HTTP {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// A gauge of the collector's own metrics, summed.
async fn own(http: &reqwest::Client, api: &str, name: &str) -> f64 {
    let Ok(r) = http.get(format!("{api}/metrics")).send().await else {
        return 0.0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Run `keel bench forward`.
pub fn run(args: ForwardBenchArgs) -> anyhow::Result<()> {
    if args.requests == 0 || args.series == 0 || args.concurrency == 0 || args.rate == 0 {
        bail!("--requests, --series, --concurrency and --rate must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: ForwardBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = keel_testkit::free_port()?;
    let vm_dir = dir.path().join("vm");
    let http = reqwest::Client::new();
    let total = (args.requests * args.series) as u64;
    println!(
        "keel bench forward: {} requests of {} series to VictoriaMetrics, straight and through a forwarding collector; then a {:?} outage at {} samples/s",
        args.requests, args.series, args.outage, args.rate
    );
    let mut vm = start_victoria(&args.victoria_metrics, &vm_dir, port).await?;

    // Baseline: straight to VictoriaMetrics.
    let started = Instant::now();
    send_all(
        &http,
        &format!("{}/api/v1/write", vm.url),
        "bench_direct",
        &args,
        args.requests,
    )
    .await?;
    until(
        "VictoriaMetrics holds the direct samples",
        Duration::from_secs(600),
        async || (held(&http, &vm.url, "bench_direct").await >= total).then_some(()),
    )
    .await?;
    let direct = total as f64 / started.elapsed().as_secs_f64();
    println!("  straight to VictoriaMetrics: {direct:>10.0} samples/s");

    // Through a collector that forwards.
    let mut config = keel_collector::server::CollectorConfig {
        data_dir: dir.path().join("collector"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..Default::default()
    };
    config.forward.remote_write = vec![keel_collector::forward::Target {
        url: format!("{}/api/v1/write", vm.url),
        ..Default::default()
    }];
    let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
    let running = keel_collector::server::start(&config, clock).await?;
    let api = format!("http://{}", running.api);
    let started = Instant::now();
    send_all(
        &http,
        &format!("{api}/api/v1/write"),
        "bench_fwd",
        &args,
        args.requests,
    )
    .await?;
    let taken = started.elapsed().as_secs_f64();
    until(
        "VictoriaMetrics holds the forwarded samples",
        Duration::from_secs(600),
        async || (held(&http, &vm.url, "bench_fwd").await >= total).then_some(()),
    )
    .await?;
    let forwarded = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "  through the collector:       {forwarded:>10.0} samples/s end to end ({:.0} samples/s taken by the collector); {:.2}× the baseline",
        total as f64 / taken,
        forwarded / direct
    );

    // The outage: the collector takes `rate` samples/s while the remote
    // is down, then drains its queue.
    drop(vm);
    let per_request = args.series;
    let every = Duration::from_secs_f64(per_request as f64 / args.rate as f64);
    let base = now_ms();
    let mut sent = 0u64;
    let outage_started = Instant::now();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_note = Instant::now();
    while outage_started.elapsed() < args.outage {
        ticker.tick().await;
        post(
            &http,
            &format!("{api}/api/v1/write"),
            request(
                "bench_outage",
                per_request,
                base + (sent / per_request as u64) as i64,
            ),
        )
        .await?;
        sent += per_request as u64;
        if last_note.elapsed() > Duration::from_secs(30) {
            last_note = Instant::now();
            println!(
                "  … down {:>4.0} s: {sent} samples queued, lag {:.0} s",
                outage_started.elapsed().as_secs_f64(),
                own(&http, &api, "keel_forward_lag_seconds").await
            );
        }
    }
    let backlog_bytes = own(&http, &api, "keel_forward_queued_bytes").await;
    let lag = own(&http, &api, "keel_forward_lag_seconds").await;
    vm = start_victoria(&args.victoria_metrics, &vm_dir, port).await?;
    let back = Instant::now();
    until(
        "the backlog drains",
        Duration::from_secs(3600),
        async || (held(&http, &vm.url, "bench_outage").await >= sent).then_some(()),
    )
    .await?;
    let drain = back.elapsed().as_secs_f64();
    let catch_up = sent as f64 / drain;
    println!(
        "  outage {:?}: {sent} samples queued ({:.1} MB on disk, lag {lag:.0} s); drained in {drain:.1} s: {catch_up:.0} samples/s, {:.1}× the arrival rate",
        args.outage,
        backlog_bytes / 1e6,
        catch_up / args.rate as f64
    );
    drop(vm);
    drop(running);
    Ok(())
}
