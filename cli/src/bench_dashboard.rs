//! `keel bench dashboard`: the overview page with days of the sample
//! app's data, loaded in headless Chromium (Debian's `chromium` through
//! `chromedriver`).
//!
//! 1. A fresh `keel up` runs under load for a few seconds, and every series
//!    it stored (the sample app's RED histograms per tier, route, status
//!    and instance, its tier metrics, the host's node_exporter series) is
//!    read back with its latest value.
//! 2. `--days` of history of exactly those series are backfilled at
//!    `--resolution` (counters rising at the rate they showed, on a daily
//!    shape; gauges near their value), into the collector's store through
//!    the `keel import` path.
//! 3. `keel up` starts again on that data, and the overview is loaded
//!    `--loads` times with the time picker at the whole span. Per load: the
//!    first contentful paint, the first panel drawn, every panel drawn
//!    (the page's own `performance` marks), the bytes transferred, and the
//!    CPU time the `keel up` process (collector, agent, controller) spent
//!    during the load, less what it spends idle over as long.
//!
//! The collector's blocks are 10 minutes here so that the backfill can
//! reach to 20 minutes before now (an import never overlaps the live head);
//! the live data covers the rest.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::Value;

use crate::bench_autoscale_live::KeelUp;
use keel_testkit::webdriver::Browser;

/// Flags of `keel bench dashboard`.
#[derive(clap::Args)]
pub struct DashboardBenchArgs {
    /// Days of history behind the page.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Spacing of the backfilled samples (a scrape interval).
    #[arg(long, default_value = "60s", value_parser = keel_core::duration::parse)]
    resolution: Duration,
    /// Page loads measured.
    #[arg(long, default_value_t = 5)]
    loads: usize,
    /// Also save a screenshot of the overview (PNG) here.
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

const OVERLAY: &str = "collector:\n  block_duration: 10m\n  out_of_order_window: 2m\n";

/// One series to backfill: its labels (as OpenMetrics text before the
/// value), whether it counts up, and its rate or level.
struct Template {
    head: String,
    counter: bool,
    value: f64,
}

/// The day's shape (night a third, peaks 3× and 3.5×), as the sample
/// app's traffic would be.
fn shape(t_s: i64) -> f64 {
    let hour = (t_s.rem_euclid(86_400)) as f64 / 3600.0;
    match hour {
        h if (8.0..10.0).contains(&h) => 3.0,
        h if (18.0..20.0).contains(&h) => 3.5,
        h if (6.0..23.0).contains(&h) => 1.0,
        _ => 1.0 / 3.0,
    }
}

/// Generated OpenMetrics text, one series after another, read lazily.
struct Backfill {
    series: Vec<Template>,
    from_s: i64,
    to_s: i64,
    step_s: i64,
    /// The next series to write.
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Backfill {
    /// Refill `buf` with the next series' lines; false when done.
    fn refill(&mut self) -> bool {
        let Some(s) = self.series.get(self.next) else {
            return false;
        };
        self.buf.clear();
        self.pos = 0;
        let mut total = 0.0;
        let mut t = self.from_s;
        while t <= self.to_s {
            let v = if s.counter {
                total += s.value * shape(t) * self.step_s as f64;
                total
            } else {
                s.value
            };
            self.buf
                .extend_from_slice(format!("{} {v} {t}\n", s.head).as_bytes());
            t += self.step_s;
        }
        self.next += 1;
        true
    }
}

impl Read for Backfill {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() && !self.refill() {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// CPU seconds `pid` has used (user + system).
fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    crate::bench_metrics::usage(pid).map(|(cpu, _)| cpu)
}

/// Every series `keel up` stored, with its latest value, as templates.
async fn capture(api: &str, uptime_s: f64) -> anyhow::Result<Vec<Template>> {
    let v: Value = reqwest::Client::new()
        .get(format!("{api}/api/v1/query"))
        .query(&[("query", "{__name__=~\".+\"}")])
        .send()
        .await?
        .json()
        .await?;
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let Some(m) = r["metric"].as_object() else {
            continue;
        };
        let name = m
            .get("__name__")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value: f64 = r["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        if !value.is_finite() {
            continue;
        }
        let labels: Vec<String> = m
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()
                )
            })
            .collect();
        let counter = ["_total", "_count", "_sum", "_bucket"]
            .iter()
            .any(|s| name.ends_with(s));
        out.push(Template {
            head: format!("{name}{{{}}}", labels.join(",")),
            counter,
            // A counter's rate since the process started; a gauge's level.
            value: if counter {
                value / uptime_s.max(1.0)
            } else {
                value
            },
        });
    }
    Ok(out)
}

/// A page load's figures.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    fcp_ms: f64,
    first_ms: f64,
    all_ms: f64,
    bytes: f64,
    api_bytes: f64,
    cpu_ms: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn run(args: DashboardBenchArgs) -> anyhow::Result<()> {
    if args.resolution.as_secs() == 0 || args.days == 0 || args.loads == 0 {
        bail!("--days, --loads and --resolution (≥ 1s) must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: DashboardBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("keel-bench-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "keel bench dashboard: {} days of the sample app's series at {} behind the overview, {} loads",
        args.days,
        humantime::format_duration(args.resolution),
        args.loads
    );
    // 1. What the sample app stores.
    let started = Instant::now();
    let d = dir.clone();
    let mut up = tokio::task::spawn_blocking(move || KeelUp::start(&d, OVERLAY, 2)).await??;
    up.keep = true;
    let shop = up.url("shop API (lb)")?.replace("/api/products/1", "");
    let api = up
        .url("PromQL API")?
        .trim_end_matches("/api/v1/query")
        .to_owned();
    let profile = keel_sampleapp::load::Profile::builtin(
        keel_sampleapp::load::ProfileKind::Steady,
        50.0,
        Duration::from_secs(10),
    );
    keel_sampleapp::load::run(
        Arc::new(keel_core::clock::SystemClock),
        &profile,
        Arc::new(keel_sampleapp::load::HttpTarget::new(
            &shop,
            Duration::from_secs(10),
        )),
        keel_sampleapp::load::RunOptions::default(),
        |_| {},
    )
    .await;
    // Let the last scrapes land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let series = capture(&api, started.elapsed().as_secs_f64()).await?;
    drop(up);
    if series.is_empty() {
        bail!("keel up stored no series to model the history on");
    }
    // 2. The history.
    let config = keel_collector::server::CollectorConfig {
        data_dir: dir.join("collector"),
        block_duration: Duration::from_secs(600),
        out_of_order_window: Duration::from_secs(120),
        ..Default::default()
    };
    let now = now_s();
    let step = args.resolution.as_secs() as i64;
    let from = now - i64::from(args.days) * 86_400;
    let to = now - 25 * 60;
    let n = series.len();
    let samples = n as i64 * ((to - from) / step + 1);
    eprintln!("  backfilling {n} series, {samples} samples…");
    let t0 = Instant::now();
    let imported = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = config.open_store()?;
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            Backfill {
                series,
                from_s: from,
                to_s: to,
                step_s: step,
                next: 0,
                buf: Vec::new(),
                pos: 0,
            },
        );
        let bar = indicatif::ProgressBar::new(0);
        let done =
            keel_metricstore::import::import(&store, "backfill", reader, now * 1000, |_| {
                bar.tick()
            })?;
        bar.finish_and_clear();
        Ok(done)
    })
    .await??;
    eprintln!(
        "  {} samples of {} series in {} blocks ({:.0} s)",
        imported.samples,
        imported.series,
        imported.blocks,
        t0.elapsed().as_secs_f64()
    );
    // 3. The page.
    let d = dir.clone();
    let up = tokio::task::spawn_blocking(move || KeelUp::start(&d, OVERLAY, 2)).await??;
    let ui = up.url("dashboard")?.to_owned();
    // The time picker's longest range within the history.
    let range = match args.days {
        1 => "24h",
        2..=6 => "2d",
        _ => "7d",
    };
    let browser = Browser::start(1440, 1000).await?;
    let url = format!("{ui}d/overview?range={range}");
    let pid = up.pid();
    let mut loads = Vec::new();
    // One load first, not counted: the collector's first reads of the
    // blocks (page cache) and the browser's start.
    for k in 0..=args.loads {
        browser.goto("about:blank").await?;
        let idle0 = cpu_s(pid)?;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rate = (cpu_s(pid)? - idle0) / t.elapsed().as_secs_f64();
        let c0 = cpu_s(pid)?;
        let t = Instant::now();
        browser.goto(&url).await?;
        browser
            .until(
                "every panel drawn",
                "return performance.getEntriesByName('keel-all-panels').length ? 1 : null;",
                Duration::from_secs(60),
            )
            .await?;
        let busy = cpu_s(pid)? - c0 - idle_rate * t.elapsed().as_secs_f64();
        let v = browser
            .js(r#"const nav = performance.getEntriesByType('navigation')[0];
                   const at = (n) => { const e = performance.getEntriesByName(n)[0]; return e ? e.startTime : null; };
                   const res = performance.getEntriesByType('resource');
                   const api = res.filter((r) => r.name.includes('/api/')).reduce((a, r) => a + r.transferSize, 0);
                   return { fcp: at('first-contentful-paint'), first: at('keel-first-panel'), all: at('keel-all-panels'),
                            bytes: res.reduce((a, r) => a + r.transferSize, nav.transferSize), api };"#)
            .await?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let load = Load {
            fcp_ms: f("fcp"),
            first_ms: f("first"),
            all_ms: f("all"),
            bytes: f("bytes"),
            api_bytes: f("api"),
            cpu_ms: busy.max(0.0) * 1000.0,
        };
        eprintln!(
            "  load {k}: first paint {:.0} ms, first panel {:.0} ms, all panels {:.0} ms, {:.0} kB ({:.0} kB data), collector CPU {:.0} ms{}",
            load.fcp_ms,
            load.first_ms,
            load.all_ms,
            load.bytes / 1000.0,
            load.api_bytes / 1000.0,
            load.cpu_ms,
            if k == 0 {
                " (warm-up, not counted)"
            } else {
                ""
            }
        );
        if k > 0 {
            loads.push(load);
        }
    }
    let errors = browser.console_errors().await?;
    if let Some(path) = &args.screenshot {
        std::fs::write(path, browser.screenshot().await?)?;
        println!("screenshot: {}", path.display());
    }
    let m = |f: fn(&Load) -> f64| median(&mut loads.iter().map(f).collect::<Vec<_>>());
    println!(
        "overview, {range} ({} series): first contentful paint {:.0} ms, first panel {:.0} ms, all panels {:.0} ms (goal ≤ 1000), {:.0} kB transferred ({:.0} kB of data), collector CPU {:.0} ms a load (medians of {})",
        n,
        m(|l| l.fcp_ms),
        m(|l| l.first_ms),
        m(|l| l.all_ms),
        m(|l| l.bytes) / 1000.0,
        m(|l| l.api_bytes) / 1000.0,
        m(|l| l.cpu_ms),
        loads.len()
    );
    if !errors.is_empty() {
        bail!("console errors: {errors:?}");
    }
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
