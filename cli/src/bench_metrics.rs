//! `keel bench metrics`: Keel's collector against the real Prometheus on
//! the same machine in the same run, fed the same series through the same
//! remote-write requests.
//!
//! Reported for each: ingest samples per CPU-second of the server process
//! (from /proc, so the load generator's own work is not counted), memory
//! per active series (RSS growth over the series count), compressed chunk
//! bytes per sample (Keel: its Gorilla chunks; Prometheus: the block chunks
//! of a snapshot of its head, every sample),
//! and p50/p99 latency of a 1-hour `query_range` of a RED-style panel over
//! 1,000 series, and p99 latency of the series and label lookups with
//! `match[]` that Grafana's variables and label browser make (answers
//! compared). Ratios Keel / Prometheus are what to read. VictoriaMetrics
//! (Debian's `victoria-metrics`, single node) gets the same requests in
//! the same run, where installed: its bytes per sample are its `data/`
//! parts after `/internal/force_flush` and `/internal/force_merge`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Flags of `keel bench metrics`.
#[derive(clap::Args)]
pub struct MetricsBenchArgs {
    /// Active series.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// History sent, at one sample per 15 s per series.
    #[arg(long, default_value = "2h", value_parser = keel_core::duration::parse)]
    history: Duration,
    /// Series per remote-write request.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// The Prometheus binary (Debian package `prometheus`).
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: PathBuf,
    /// The VictoriaMetrics binary (Debian package `victoria-metrics`).
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Query repetitions for the latency figures.
    #[arg(long, default_value_t = 30)]
    queries: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Series on the endpoint of the scrape phase (agent → collector).
    #[arg(long, default_value_t = 1_000)]
    scrape_series: usize,
    /// Scrapes (1 s apart) the scrape phase stores.
    #[arg(long, default_value_t = 20)]
    scrapes: u64,
    /// Run only the scrape phase (its figures are counts and bytes, so
    /// any build measures them).
    #[arg(long)]
    scrape_only: bool,
}

#[derive(Debug, Serialize, Default, Clone)]
struct Figures {
    ingest_seconds: f64,
    cpu_seconds: f64,
    samples_per_cpu_second: f64,
    rss_growth_bytes: f64,
    bytes_per_series: f64,
    /// Cut (sealed) chunks only: what Prometheus' `chunks_head/` holds.
    chunk_bytes_per_sample: f64,
    /// Every chunk, the open ones too (Keel only).
    all_chunk_bytes_per_sample: f64,
    query_p50_ms: f64,
    query_p99_ms: f64,
    query_series: usize,
    /// Each of [`lookups`]: p99 ms and how many results it gave.
    lookups: Vec<(f64, usize)>,
}

#[derive(Debug, Serialize)]
struct Results {
    machine: String,
    series: usize,
    samples: usize,
    keel: Figures,
    prometheus: Option<Figures>,
    prometheus_note: Option<String>,
    victoria_metrics: Option<Figures>,
    victoria_metrics_note: Option<String>,
    scrape: crate::bench_scrape::ScrapeFigures,
}

/// (user + system CPU seconds, RSS bytes) of a process, from /proc.
pub(crate) fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let pid = pid.to_string();
    let cpu = keel_core::procfs::cpu_seconds(&pid)
        .with_context(|| format!("no CPU time in /proc/{pid}/stat"))?;
    let rss = keel_core::procfs::rss_bytes(&pid).unwrap_or(0);
    Ok((cpu, rss as f64))
}

pub(crate) fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// node_exporter-like series: CPU-seconds counters per cpu and mode,
/// memory and filesystem gauges, network byte counters.
fn series_labels(n: usize) -> Vec<Vec<Label>> {
    let modes = [
        "user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice",
    ];
    let label = |k: &str, v: String| Label {
        name: k.into(),
        value: v,
    };
    (0..n)
        .map(|i| {
            let host = format!("host-{:04}", i / 50);
            let k = i % 50;
            let mut l = vec![
                label("instance", format!("{host}:9100")),
                label("job", "node".into()),
            ];
            if k < 32 {
                l.push(label("__name__", "node_cpu_seconds_total".into()));
                l.push(label("cpu", (k / 8).to_string()));
                l.push(label("mode", modes[k % 8].into()));
            } else if k < 40 {
                l.push(label("__name__", "node_network_receive_bytes_total".into()));
                l.push(label("device", format!("eth{}", k - 32)));
            } else if k < 45 {
                l.push(label("__name__", "node_filesystem_avail_bytes".into()));
                l.push(label("mountpoint", format!("/mnt/{}", k - 40)));
            } else {
                l.push(label("__name__", "node_memory_MemAvailable_bytes".into()));
                l.push(label("slot", (k - 45).to_string()));
            }
            l
        })
        .collect()
}

/// The requests for one timestamp: values advance as node_exporter's do on
/// a mostly idle host. Per 15 s scrape and per CPU: idle gains ~14 s,
/// user and system a fraction of a second, iowait a little, irq/softirq
/// rarely, steal and nice never (CPU seconds at 10 ms resolution); network
/// counters by a few KB; available memory moves every scrape by pages,
/// filesystem space rarely. CPU state is kept in ticks and sent as
/// `ticks / 100`, as node_exporter computes it from /proc/stat.
fn step(
    labels: &[Vec<Label>],
    values: &mut [f64],
    t_ms: i64,
    batch: usize,
    rng: &mut SmallRng,
) -> Vec<Vec<u8>> {
    for (i, v) in values.iter_mut().enumerate() {
        let k = i % 50;
        let centis = |lo: u32, hi: u32, rng: &mut SmallRng| f64::from(rng.random_range(lo..hi));
        *v = match (k < 32, k % 8) {
            (true, 2) => *v + centis(1380, 1500, rng), // idle
            (true, 0) => *v + centis(0, 80, rng),      // user
            (true, 1) => *v + centis(0, 30, rng),      // system
            (true, 3) => *v + centis(0, 5, rng),       // iowait
            (true, 4) | (true, 5) if rng.random_bool(0.2) => *v + 1.0, // irq, softirq
            (true, _) => *v,                           // steal, nice, and quiet scrapes
            _ if k < 40 => *v + f64::from(rng.random_range(0u32..8192)), // network bytes
            _ if k < 45 => {
                if rng.random_bool(0.05) {
                    *v - 4096.0 * f64::from(rng.random_range(1u32..64))
                } else {
                    *v
                }
            }
            _ => (*v + 4096.0 * f64::from(rng.random_range(-32i32..32))).max(0.0), // MemAvailable
        };
    }
    let sent: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 50 < 32 { v / 100.0 } else { *v })
        .collect();
    labels
        .chunks(batch)
        .zip(sent.chunks(batch))
        .map(|(ls, vs)| {
            let req = WriteRequest {
                timeseries: ls
                    .iter()
                    .zip(vs)
                    .map(|(l, v)| TimeSeries {
                        labels: l.clone(),
                        samples: vec![Sample {
                            value: *v,
                            timestamp: t_ms,
                        }],
                    })
                    .collect(),
            };
            req.to_snappy()
        })
        .collect()
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) write_url: String,
    pub(crate) api: String,
    /// OTLP/HTTP base URL (Keel only).
    pub(crate) otlp: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn start_keel(dir: &Path, client: &reqwest::Client) -> anyhow::Result<Server> {
    start_keel_with(dir, client, &[]).await
}

/// Start `keel collector` with extra environment variables (config overrides).
pub(crate) async fn start_keel_with(
    dir: &Path,
    client: &reqwest::Client,
    env: &[(&str, String)],
) -> anyhow::Result<Server> {
    let api = keel_testkit::free_port()?;
    let otlp = keel_testkit::free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "collector",
            "--otlp-port",
            &otlp.to_string(),
            "--grpc-port",
            "0",
            "--api-port",
            &api.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting keel collector")?;
    let s = Server {
        child,
        write_url: format!("http://127.0.0.1:{api}/api/v1/write"),
        api: format!("http://127.0.0.1:{api}"),
        otlp: format!("http://127.0.0.1:{otlp}"),
    };
    wait_ready(client, &format!("{}/api/v1/status/buildinfo", s.api)).await?;
    Ok(s)
}

/// A peer `bin` started with `args` (listening on 127.0.0.1:`port`),
/// awaited until `GET <ready>` answers.
async fn start_peer(
    bin: &Path,
    args: &[String],
    port: u16,
    ready: &str,
    client: &reqwest::Client,
) -> anyhow::Result<Server> {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let s = Server {
        child,
        write_url: format!("http://127.0.0.1:{port}/api/v1/write"),
        api: format!("http://127.0.0.1:{port}"),
        otlp: String::new(),
    };
    wait_ready(client, &format!("{}{ready}", s.api)).await?;
    Ok(s)
}

async fn start_prometheus(
    bin: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Server> {
    start_prometheus_with(bin, dir, &["--web.enable-admin-api"], client).await
}

/// The bytes of the chunks of a snapshot of the head of the Prometheus
/// at `server` (keeping its data in `dir/data`, started with
/// `--web.enable-admin-api`): every sample, in the block format, where
/// `chunks_head/` holds only the chunks cut so far (how many samples
/// those hold depends on where in its 2-hour block the data starts).
pub(crate) async fn prometheus_snapshot_chunk_bytes(
    client: &reqwest::Client,
    server: &Server,
    dir: &Path,
) -> anyhow::Result<u64> {
    let r: serde_json::Value = client
        .post(format!("{}/api/v1/admin/tsdb/snapshot", server.api))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let name = r["data"]["name"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the snapshot answered {r}"))?;
    let snap = dir.join("data/snapshots").join(name);
    let mut bytes = 0;
    for block in std::fs::read_dir(&snap)? {
        bytes += dir_bytes(&block?.path().join("chunks"));
    }
    anyhow::ensure!(
        bytes > 0,
        "the snapshot at {} holds no chunks",
        snap.display()
    );
    Ok(bytes)
}

/// Prometheus from `bin` receiving remote write, its data in
/// `dir/data`, with `extra` flags.
pub(crate) async fn start_prometheus_with(
    bin: &Path,
    dir: &Path,
    extra: &[&str],
    client: &reqwest::Client,
) -> anyhow::Result<Server> {
    let port = keel_testkit::free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
    let mut args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-remote-write-receiver".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    start_peer(bin, &args, port, "/-/ready", client).await
}

/// VictoriaMetrics (single node) from `bin`, its data in `dir/data`.
async fn start_victoria(
    bin: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Server> {
    let port = keel_testkit::free_port()?;
    let args = [
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-storageDataPath={}", dir.join("data").display()),
        "-retentionPeriod=100y".to_owned(),
        "-loggerLevel=ERROR".to_owned(),
    ];
    start_peer(bin, &args, port, "/health", client).await
}

/// VictoriaMetrics' sample bytes once what it buffers is flushed and its
/// parts merged (`/internal/force_merge` for each month partition of the
/// history; the merge runs in the background, so the size is read until
/// it holds still for 3 s, 120 s at most): its `data/` directory.
async fn victoria_bytes(
    api: &str,
    dir: &Path,
    client: &reqwest::Client,
    start_ms: i64,
    end_ms: i64,
) -> anyhow::Result<f64> {
    client
        .get(format!("{api}/internal/force_flush"))
        .send()
        .await?;
    let month = |ms: i64| {
        let secs = ms as f64 / 1000.0;
        let part = |what| keel_promql::functions::calendar(what, secs).unwrap_or(0.0);
        format!("{:04}_{:02}", part("year"), part("month"))
    };
    let mut partitions = vec![month(start_ms), month(end_ms)];
    partitions.dedup();
    for p in partitions {
        client
            .get(format!("{api}/internal/force_merge"))
            .query(&[("partition_prefix", p)])
            .send()
            .await?;
    }
    let data = dir.join("data/data");
    let (mut last, mut still) = (dir_bytes(&data), 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while still < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = dir_bytes(&data);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    Ok(last as f64)
}

/// Send every request; (wall s, CPU s, RSS before, RSS after settling).
/// The uploads get a client of their own, dropped before memory is read:
/// the server's buffers for the burst's connections (one per request of
/// a timestamp, as many as 50 at 100,000 series) are per connection, not
/// per series, and go when the connections close.
async fn ingest(
    server: &Server,
    requests: &[Vec<Vec<u8>>],
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let client = reqwest::Client::new();
    let pid = server.child.id();
    let (cpu0, rss0) = usage(pid)?;
    let start = Instant::now();
    for step in requests {
        // All shards of one timestamp at once; timestamps in order.
        let mut sends = tokio::task::JoinSet::new();
        for body in step {
            sends.spawn(
                client
                    .post(&server.write_url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body.clone())
                    .send(),
            );
        }
        while let Some(r) = sends.join_next().await {
            let r = r??;
            if !r.status().is_success() {
                bail!(
                    "{} refused a write: {} {}",
                    server.write_url,
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu1, _) = usage(pid)?;
    drop(client);
    // Memory once settled (5 s): both runtimes give back freed memory lazily.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, rss1) = usage(pid)?;
    Ok((secs, cpu1 - cpu0, rss0, rss1))
}

/// `n` GETs of `url` with `params`: the latency histogram (µs) and the
/// last successful answer's `data`.
async fn timed_gets(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
    n: usize,
) -> anyhow::Result<(Histogram<u64>, serde_json::Value)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds"));
    let mut data = serde_json::Value::Null;
    for _ in 0..n {
        let t = Instant::now();
        let mut r: serde_json::Value = client.get(url).query(params).send().await?.json().await?;
        hist.saturating_record(t.elapsed().as_micros() as u64);
        if r["status"] != "success" {
            bail!("{url}: {r}");
        }
        data = r["data"].take();
    }
    Ok((hist, data))
}

async fn query_latency(
    api: &str,
    client: &reqwest::Client,
    end_ms: i64,
    n: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    // A RED-style panel: per-mode CPU rate over the first 1,000 series (20 hosts x 50).
    let q =
        "sum by (mode) (rate(node_cpu_seconds_total{instance=~\"host-00(0|1)[0-9]:9100\"}[5m]))";
    let end = end_ms as f64 / 1000.0;
    let params = [
        ("query", q.to_owned()),
        ("start", (end - 3600.0).to_string()),
        ("end", end.to_string()),
        ("step", "15".to_owned()),
    ];
    let (hist, data) = timed_gets(client, &format!("{api}/api/v1/query_range"), &params, n).await?;
    Ok((
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        data["result"].as_array().map_or(0, Vec::len),
    ))
}

/// A lookup: what it is, its path, its parameters.
type Lookup = (&'static str, &'static str, Vec<(&'static str, String)>);

/// The series and label lookups Grafana's variables and label browser
/// make, with `match[]` over the last hour: (name, path, parameters).
fn lookups(end_ms: i64) -> Vec<Lookup> {
    let end = end_ms as f64 / 1000.0;
    let span = |mut v: Vec<(&'static str, String)>| {
        v.push(("start", (end - 3600.0).to_string()));
        v.push(("end", end.to_string()));
        v
    };
    vec![
        (
            "label values, match[] a metric",
            "/api/v1/label/instance/values",
            span(vec![("match[]", "node_cpu_seconds_total".into())]),
        ),
        (
            "series, match[] a metric and regex",
            "/api/v1/series",
            span(vec![(
                "match[]",
                "{__name__=\"node_network_receive_bytes_total\",instance=~\"host-00.*\"}".into(),
            )]),
        ),
        (
            "label names, match[] a metric",
            "/api/v1/labels",
            span(vec![("match[]", "node_filesystem_avail_bytes".into())]),
        ),
    ]
}

/// p99 latency (ms) and answer length of each lookup, `n` times each.
async fn lookup_latency(
    api: &str,
    client: &reqwest::Client,
    end_ms: i64,
    n: usize,
) -> anyhow::Result<Vec<(f64, usize)>> {
    let mut out = Vec::new();
    for (_, path, params) in lookups(end_ms) {
        let (hist, data) = timed_gets(client, &format!("{api}{path}"), &params, n).await?;
        out.push((
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            data.as_array().map_or(0, Vec::len),
        ));
    }
    Ok(out)
}

fn figures(
    series: usize,
    samples: usize,
    (secs, cpu, rss0, rss1): (f64, f64, f64, f64),
    chunk_bytes: f64,
    q: (f64, f64, usize),
) -> Figures {
    Figures {
        ingest_seconds: secs,
        cpu_seconds: cpu,
        samples_per_cpu_second: samples as f64 / cpu.max(1e-9),
        rss_growth_bytes: rss1 - rss0,
        bytes_per_series: (rss1 - rss0) / series as f64,
        chunk_bytes_per_sample: chunk_bytes / samples as f64,
        all_chunk_bytes_per_sample: chunk_bytes / samples as f64,
        query_p50_ms: q.0,
        query_p99_ms: q.1,
        query_series: q.2,
        lookups: Vec::new(),
    }
}

pub fn run(args: MetricsBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::new();
        if args.scrape_only {
            let f = crate::bench_scrape::measure(&client, args.scrape_series, args.scrapes).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                crate::bench_scrape::print(&f);
            }
            return Ok(());
        }
        let labels = series_labels(args.series);
        let steps = (args.history.as_secs() / 15).max(1) as usize;
        let end_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 / 15_000 * 15_000;
        let start_ms = end_ms - (steps as i64 - 1) * 15_000;
        eprintln!("keel bench metrics: {} series x {steps} samples (15 s apart), node_exporter-like", args.series);
        let mut rng = SmallRng::seed_from_u64(42);
        let mut values = vec![0.0; args.series];
        for (i, v) in values.iter_mut().enumerate() {
            // CPU in ticks (1,000 s), network in bytes, the rest 8 GB.
            *v = if i % 50 >= 40 { 8e9 } else { 100_000.0 };
        }
        let requests: Vec<Vec<Vec<u8>>> = (0..steps)
            .map(|s| step(&labels, &mut values, start_ms + s as i64 * 15_000, args.batch, &mut rng))
            .collect();
        let samples = args.series * steps;

        let keel_dir = tempfile::tempdir()?;
        let keel = start_keel(keel_dir.path(), &client).await?;
        eprintln!("  ingesting into Keel");
        let k_ingest = ingest(&keel, &requests).await?;
        let status: serde_json::Value = client.get(format!("{}/api/v1/status/keel", keel.api)).send().await?.json().await?;
        let store = &status["data"]["store"];
        let k_chunks = store["chunk_bytes"].as_f64().unwrap_or(0.0);
        let open_bytes = store["open_chunk_bytes"].as_f64().unwrap_or(0.0);
        let open_samples = store["open_chunk_samples"].as_f64().unwrap_or(0.0);
        let k_query = query_latency(&keel.api, &client, end_ms, args.queries).await?;
        let k_lookups = lookup_latency(&keel.api, &client, end_ms, args.queries).await?;
        drop(keel);
        let mut keel_fig = figures(args.series, samples, k_ingest, k_chunks, k_query);
        keel_fig.lookups = k_lookups;
        let sealed_samples = samples as f64 - open_samples;
        keel_fig.chunk_bytes_per_sample =
            if sealed_samples > 0.0 { (k_chunks - open_bytes) / sealed_samples } else { 0.0 };

        let (prometheus, prometheus_note) = if args.prometheus.exists() {
            let prom_dir = tempfile::tempdir()?;
            let prom = start_prometheus(&args.prometheus, prom_dir.path(), &client).await?;
            eprintln!("  ingesting into Prometheus");
            let p_ingest = ingest(&prom, &requests).await?;
            let p_query = query_latency(&prom.api, &client, end_ms, args.queries).await?;
            let p_lookups = lookup_latency(&prom.api, &client, end_ms, args.queries).await?;
            let chunks =
                prometheus_snapshot_chunk_bytes(&client, &prom, prom_dir.path()).await? as f64;
            drop(prom);
            let mut p = figures(args.series, samples, p_ingest, chunks, p_query);
            p.lookups = p_lookups;
            (Some(p), Some(format!(
                "chunk bytes: Prometheus' over every sample, from a snapshot of its head (block chunks), open chunks included; Keel's sealed chunks over theirs; Keel's open chunks ({open_samples} samples) are appended (decimal deltas or Gorilla) until full, then packed"
            )))
        } else {
            (None, Some(format!("{} not found: install Debian's prometheus package to compare", args.prometheus.display())))
        };
        let (victoria_metrics, victoria_metrics_note) = if args.victoria_metrics.exists() {
            let vm_dir = tempfile::tempdir()?;
            let vm = start_victoria(&args.victoria_metrics, vm_dir.path(), &client).await?;
            eprintln!("  ingesting into VictoriaMetrics");
            let v_ingest = ingest(&vm, &requests).await?;
            let bytes = victoria_bytes(&vm.api, vm_dir.path(), &client, start_ms, end_ms).await?;
            let v_query = query_latency(&vm.api, &client, end_ms, args.queries).await?;
            let v_lookups = lookup_latency(&vm.api, &client, end_ms, args.queries).await?;
            drop(vm);
            let mut v = figures(args.series, samples, v_ingest, bytes, v_query);
            v.lookups = v_lookups;
            (Some(v), Some("VictoriaMetrics' bytes: its data/ parts (samples and timestamps, not its index) after force_flush and force_merge, over every sample sent".to_owned()))
        } else {
            (None, Some(format!("{} not found: install Debian's victoria-metrics package to compare", args.victoria_metrics.display())))
        };
        eprintln!("  the scrape path: an agent scraping {} series into Keel", args.scrape_series);
        let scrape = crate::bench_scrape::measure(&client, args.scrape_series, args.scrapes).await?;
        let r = Results {
            scrape,
            machine: format!("{} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH),
            series: args.series,
            samples,
            keel: keel_fig,
            prometheus,
            prometheus_note,
            victoria_metrics,
            victoria_metrics_note,
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        println!("machine: {}; {} series, {} samples", r.machine, r.series, r.samples);
        println!(
            "{:<38} {:>12} {:>12} {:>12} {:>9} {:>9}",
            "", "Keel", "Prometheus", "Victoria", "K/P", "K/V"
        );
        let p = r.prometheus.clone().unwrap_or_default();
        let v = r.victoria_metrics.clone().unwrap_or_default();
        let row = |name: &str, k: f64, p: f64, v: f64, fmt: &dyn Fn(f64) -> String| {
            let shown = |x: f64| if x > 0.0 { fmt(x) } else { "-".into() };
            let ratio = |x: f64| if x > 0.0 { format!("{:.2}x", k / x) } else { "-".into() };
            println!(
                "{name:<38} {:>12} {:>12} {:>12} {:>9} {:>9}",
                fmt(k),
                shown(p),
                shown(v),
                ratio(p),
                ratio(v)
            );
        };
        let int = |x: f64| format!("{x:.0}");
        let two = |x: f64| format!("{x:.2}");
        row("ingest samples / CPU-second", r.keel.samples_per_cpu_second, p.samples_per_cpu_second, v.samples_per_cpu_second, &int);
        row("ingest wall seconds", r.keel.ingest_seconds, p.ingest_seconds, v.ingest_seconds, &two);
        row("memory bytes / active series", r.keel.bytes_per_series, p.bytes_per_series, v.bytes_per_series, &int);
        row("chunk bytes / sample (cut chunks)", r.keel.chunk_bytes_per_sample, p.chunk_bytes_per_sample, v.chunk_bytes_per_sample, &two);
        row("chunk bytes / sample (all, open too)", r.keel.all_chunk_bytes_per_sample, p.all_chunk_bytes_per_sample, v.all_chunk_bytes_per_sample, &two);
        row("query_range 1h p50 ms", r.keel.query_p50_ms, p.query_p50_ms, v.query_p50_ms, &two);
        row("query_range 1h p99 ms", r.keel.query_p99_ms, p.query_p99_ms, v.query_p99_ms, &two);
        for (i, (name, _, _)) in lookups(end_ms).iter().enumerate() {
            let k = r.keel.lookups.get(i).copied().unwrap_or_default();
            let pr = p.lookups.get(i).copied().unwrap_or_default();
            let vm = v.lookups.get(i).copied().unwrap_or_default();
            row(&format!("{name} p99 ms"), k.0, pr.0, vm.0, &two);
            if r.prometheus.is_some() && k.1 != pr.1 {
                println!("  the answers differ: Keel {} results, Prometheus {}", k.1, pr.1);
            }
            if r.victoria_metrics.is_some() && k.1 != vm.1 {
                println!("  the answers differ: Keel {} results, VictoriaMetrics {}", k.1, vm.1);
            }
        }
        for n in [&r.prometheus_note, &r.victoria_metrics_note].into_iter().flatten() {
            println!("note: {n}");
        }
        crate::bench_scrape::print(&r.scrape);
        Ok(())
    })
}
