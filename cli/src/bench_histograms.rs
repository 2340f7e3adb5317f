//! `keel bench histograms`: native histograms against the same data as
//! classic `le` buckets, in one run (#30).
//!
//! `--series` latency histograms are scraped every 15 s for
//! `--scrapes` scrapes, each scrape adding `--observations` log-normal
//! latencies (median 100 ms). Each scrape is an OTLP exponential
//! histogram at scale 4 (16 buckets an octave, what the OpenTelemetry
//! SDK picks for such a spread within its 160 buckets), converted by the
//! collector's own OTLP translation twice: as native histograms, and as
//! classic `_bucket{le}`/`_sum`/`_count` series
//! (`collector.otlp.exponential_histograms: classic`); and the same
//! buckets sent as explicit-bucket histograms, stored as native
//! histograms with custom buckets (`collector.otlp.convert_histograms_to_nhcb`:
//! the classic bounds, one series). Each goes into its own in-memory
//! store.
//!
//! Figures: bytes per histogram sample in sealed chunks (native: the
//! histogram chunks; classic: the float chunks of all its series), and
//! the p50 time of a one-hour `histogram_quantile(0.99, …)` range query
//! over each (`sum(rate(lat[5m]))` native, `sum by (le) (rate(lat_bucket[5m]))`
//! classic), with how far the two answers are apart.
//!
//! And a floor no encoding can beat: the entropy of the bucket
//! increments (which buckets a scrape's observations fell in: the
//! multinomial code length, the run's bucket frequencies known), in
//! bytes a histogram sample — before the sum, whose low bits are as
//! random as the observations.
//!
//! And the peer, in the same run: two Prometheus servers (Debian's 2.42,
//! `--enable-feature=native-histograms`) are sent the same data by
//! remote write, one the native histograms, the other the classic
//! series; their bytes are the chunks of a snapshot of each head (every
//! sample, in the block format Prometheus keeps on disk).

use std::time::Instant;

use crate::bench_crash::kv;
use keel_collector::ingest::otlp::{self, ExponentialAs, Translation};
use keel_collector::ingest::remote_write::WriteRequest;
use keel_metricstore::{Store, StoreConfig};
use keel_promql::{Engine, QueryRange};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram as Explicit, HistogramDataPoint,
    Metric, ResourceMetrics, ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use rand::{Rng, SeedableRng};

/// Flags of `keel bench histograms`.
#[derive(clap::Args)]
pub struct HistogramsBenchArgs {
    /// Histogram series.
    #[arg(long, default_value_t = 200)]
    series: usize,
    /// Scrapes of each, 15 s apart.
    #[arg(long, default_value_t = 240)]
    scrapes: usize,
    /// Observations a histogram takes between two scrapes.
    #[arg(long, default_value_t = 50)]
    observations: usize,
    /// Range queries timed on each store.
    #[arg(long, default_value_t = 20)]
    queries: usize,
    /// The Prometheus binary to compare with (Debian package
    /// `prometheus`); skipped when it is not there.
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: std::path::PathBuf,
}

/// A Prometheus server and where it keeps its data.
struct Peer {
    server: crate::bench_metrics::Server,
    dir: tempfile::TempDir,
}

/// Two Prometheus servers, sent the native and the classic form.
struct Peers {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    native: Peer,
    classic: Peer,
}

impl Peers {
    fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = reqwest::Client::new();
        let flags = [
            "--enable-feature=native-histograms",
            "--web.enable-admin-api",
        ];
        let start = || -> anyhow::Result<Peer> {
            let dir = tempfile::tempdir()?;
            let server = rt.block_on(crate::bench_metrics::start_prometheus_with(
                bin,
                dir.path(),
                &flags,
                &client,
            ))?;
            Ok(Peer { server, dir })
        };
        let (native, classic) = (start()?, start()?);
        Ok(Self {
            rt,
            client,
            native,
            classic,
        })
    }

    /// Post a snappy remote-write body; anything but 2xx is an error.
    fn send(&self, to: &Peer, body: Vec<u8>) -> anyhow::Result<()> {
        self.rt.block_on(crate::bench_forward::post(
            &self.client,
            &to.server.write_url,
            body,
        ))
    }

    /// The bytes of the chunks of a snapshot of `of`'s head: every
    /// sample, in the block format.
    fn snapshot_chunk_bytes(&self, of: &Peer) -> anyhow::Result<u64> {
        self.rt
            .block_on(crate::bench_metrics::prometheus_snapshot_chunk_bytes(
                &self.client,
                &of.server,
                of.dir.path(),
            ))
    }
}

const SCALE: i32 = 4;
const STEP_MS: i64 = 15_000;
const T0: i64 = 1_700_000_000_000;

/// One scrape of every series: cumulative exponential histograms.
fn scrape(t: i64, state: &[(Vec<u64>, i32, u64, f64)]) -> ExportMetricsServiceRequest {
    let points = state
        .iter()
        .enumerate()
        .map(
            |(i, (counts, offset, count, sum))| ExponentialHistogramDataPoint {
                attributes: vec![kv("pod", format!("pod-{i}"))],
                time_unix_nano: t as u64 * 1_000_000,
                count: *count,
                sum: Some(*sum),
                scale: SCALE,
                positive: Some(Buckets {
                    offset: *offset,
                    bucket_counts: counts.clone(),
                }),
                ..Default::default()
            },
        )
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "lat".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: points,
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The same scrape as explicit-bucket histograms with one fixed set of
/// bounds for every series and scrape (as an SDK's explicit histogram
/// has): the upper bounds `2^((i+1)·2^-scale)` of OTLP buckets `lo..=hi`,
/// an observation below them in the first bucket, above them in the
/// +Inf one.
fn explicit(
    t: i64,
    state: &[(Vec<u64>, i32, u64, f64)],
    (lo, hi): (i32, i32),
) -> ExportMetricsServiceRequest {
    let bounds: Vec<f64> = (lo..=hi)
        .map(|i| (f64::from(i + 1) / f64::from(1 << SCALE)).exp2())
        .collect();
    let mut req = scrape(t, state);
    for rm in &mut req.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                let Some(Data::ExponentialHistogram(e)) = m.data.take() else {
                    continue;
                };
                let points = e
                    .data_points
                    .into_iter()
                    .map(|p| {
                        let b = p.positive.unwrap_or_default();
                        let mut counts = vec![0u64; bounds.len() + 1];
                        for (j, c) in b.bucket_counts.iter().enumerate() {
                            let k = (b.offset + j as i32 - lo).clamp(0, hi - lo + 1);
                            counts[k as usize] += c;
                        }
                        HistogramDataPoint {
                            attributes: p.attributes,
                            time_unix_nano: p.time_unix_nano,
                            count: p.count,
                            sum: p.sum,
                            bucket_counts: counts,
                            explicit_bounds: bounds.clone(),
                            ..Default::default()
                        }
                    })
                    .collect();
                m.data = Some(Data::Histogram(Explicit {
                    data_points: points,
                    aggregation_temporality: e.aggregation_temporality,
                }));
            }
        }
    }
    req
}

/// The median relative gap between two answers, step by step.
fn median_gap(a: &[f64], b: &[f64]) -> f64 {
    let mut diffs: Vec<f64> = a.iter().zip(b).map(|(a, b)| (a / b - 1.0).abs()).collect();
    diffs.sort_by(f64::total_cmp);
    diffs.get(diffs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Record one latency into a series' OTLP buckets (index `floor(log2(v) * 2^scale)`,
/// OTLP's upper-inclusive rule ignored at exact powers: none are drawn).
/// Returns the bucket's index.
fn observe(s: &mut (Vec<u64>, i32, u64, f64), v: f64) -> i32 {
    let idx = (v.log2() * f64::from(1 << SCALE)).floor() as i32;
    let (counts, offset, count, sum) = s;
    if idx < *offset {
        let grow = (*offset - idx) as usize;
        counts.splice(0..0, std::iter::repeat_n(0, grow));
        *offset = idx;
    }
    let k = (idx - *offset) as usize;
    if k >= counts.len() {
        counts.resize(k + 1, 0);
    }
    counts[k] += 1;
    *count += 1;
    *sum += v;
    idx
}

/// Bits the increments need at least: each scrape's multinomial code
/// length, `-log2(n! / Π k_i! · Π p_i^k_i)`, with `p` the buckets' share
/// of every observation of the run. Averaged over the scrapes.
fn increment_entropy_bits(increments: &[Vec<(i32, u32)>]) -> f64 {
    let mut totals: std::collections::HashMap<i32, f64> = std::collections::HashMap::new();
    let mut all = 0.0;
    for (i, n) in increments.iter().flatten() {
        *totals.entry(*i).or_default() += f64::from(*n);
        all += f64::from(*n);
    }
    let log2_fact = |n: u32| (2..=n).map(|i| f64::from(i).log2()).sum::<f64>();
    let bits: f64 = increments
        .iter()
        .map(|inc| {
            let n: u32 = inc.iter().map(|(_, k)| k).sum();
            let mut b = -log2_fact(n);
            for (i, k) in inc {
                b += log2_fact(*k) - f64::from(*k) * (totals[i] / all).log2();
            }
            b
        })
        .sum();
    bits / increments.len().max(1) as f64
}

/// `keel bench histograms`.
pub fn run(args: HistogramsBenchArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(30);
    let native = Store::in_memory(StoreConfig {
        limits: keel_metricstore::SeriesLimits {
            max_series: usize::MAX,
            ..Default::default()
        },
        ..StoreConfig::default()
    });
    let classic = Store::in_memory(StoreConfig {
        limits: keel_metricstore::SeriesLimits {
            max_series: usize::MAX,
            ..Default::default()
        },
        ..StoreConfig::default()
    });
    let custom = Store::in_memory(StoreConfig::default());
    let as_native = Translation::default();
    let as_custom = Translation {
        convert_histograms_to_nhcb: true,
        ..Translation::default()
    };
    let as_classic = Translation {
        exponential_histograms: ExponentialAs::Classic,
        ..Translation::default()
    };
    // Buckets from 1 ms to 10 s from the start (as an SDK's histogram
    // that has seen that spread), so the classic form has every `le`
    // series from its first scrape: a bucket appearing later would start
    // a classic series mid-window and skew its rate.
    let lo = (0.001f64.log2() * f64::from(1 << SCALE)).floor() as i32;
    let hi = (10f64.log2() * f64::from(1 << SCALE)).ceil() as i32;
    let mut state = vec![(vec![0u64; (hi - lo + 1) as usize], lo, 0u64, 0.0f64); args.series];
    let mut classic_samples = 0u64;
    let peers = if args.prometheus.exists() {
        Some(Peers::start(&args.prometheus)?)
    } else {
        eprintln!(
            "  {} not found: install Debian's prometheus package to compare",
            args.prometheus.display()
        );
        None
    };
    eprintln!(
        "keel bench histograms: {} series × {} scrapes × {} observations",
        args.series, args.scrapes, args.observations
    );
    // Each scrape's increments (bucket index, observations), for the floor.
    let mut increments: Vec<Vec<(i32, u32)>> = Vec::with_capacity(args.series * args.scrapes);
    for k in 0..args.scrapes {
        for s in state.iter_mut() {
            let mut inc: Vec<(i32, u32)> = Vec::new();
            for _ in 0..args.observations {
                // Log-normal: median 0.1 s, σ 0.8 (Box–Muller).
                let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let i = observe(s, (0.1f64.ln() + 0.8 * z).exp());
                match inc.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, n)) => *n += 1,
                    None => inc.push((i, 1)),
                }
            }
            increments.push(inc);
        }
        let t = T0 + k as i64 * STEP_MS;
        let req = scrape(t, &state);
        let n = otlp::convert(&req, &as_native, &|_| None);
        let c = otlp::convert(&req, &as_classic, &|_| None);
        if let Some(p) = &peers {
            use prost::Message as _;
            let body = keel_collector::forward::histograms::request(&n.histograms);
            let body = snap::raw::Encoder::new().compress_vec(&body.encode_to_vec())?;
            p.send(&p.native, body)?;
            p.send(&p.classic, WriteRequest::from_batch(&c.batch).to_snappy())?;
        }
        native.append_histograms(n.histograms)?;
        custom.append_histograms(
            otlp::convert(&explicit(t, &state, (lo, hi)), &as_custom, &|_| None).histograms,
        )?;
        classic_samples += c.batch.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
        classic.append(c.batch)?;
        if k % 60 == 59 {
            eprintln!("  {} of {} scrapes stored", k + 1, args.scrapes);
        }
    }
    native.histograms().seal_all();
    custom.histograms().seal_all();
    let custom_per_hist =
        custom.histograms().chunk_bytes() as f64 / (args.series * args.scrapes) as f64;
    let hist_samples = (args.series * args.scrapes) as f64;
    let native_bytes = native.histograms().chunk_bytes() as f64;
    let stats = classic.stats();
    let sealed = classic_samples as f64 - stats.open_chunk_samples as f64;
    let classic_per_sample = (stats.chunk_bytes - stats.open_chunk_bytes) as f64 / sealed.max(1.0);
    let classic_series = stats.series as f64 / args.series as f64;
    let classic_per_hist = classic_per_sample * classic_samples as f64 / hist_samples;
    let native_per_hist = native_bytes / hist_samples;

    let end = T0 + (args.scrapes as i64 - 1) * STEP_MS;
    let range = QueryRange {
        start: (end - 3_600_000).max(T0 + 300_000),
        end,
        step: 60_000,
    };
    let time = |store: &Store, q: &str| -> anyhow::Result<(f64, Vec<f64>)> {
        let mut ms = Vec::with_capacity(args.queries);
        let mut last = Vec::new();
        for _ in 0..args.queries.max(1) {
            let start = Instant::now();
            let r = Engine::new(store)
                .range(q, range)
                .map_err(|e| anyhow::anyhow!("{q}: {e}"))?;
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            last = r
                .first()
                .map(|s| s.points.iter().map(|p| p.1).collect())
                .unwrap_or_default();
        }
        ms.sort_by(f64::total_cmp);
        Ok((ms[ms.len() / 2], last))
    };
    let prometheus = match &peers {
        Some(p) => Some((
            p.snapshot_chunk_bytes(&p.native)? as f64 / hist_samples,
            p.snapshot_chunk_bytes(&p.classic)? as f64 / hist_samples,
        )),
        None => None,
    };
    drop(peers);
    let (native_ms, nq) = time(&native, "histogram_quantile(0.99, sum(rate(lat[5m])))")?;
    let (classic_ms, cq) = time(
        &classic,
        "histogram_quantile(0.99, sum by (le) (rate(lat_bucket[5m])))",
    )?;
    let (custom_ms, uq) = time(&custom, "histogram_quantile(0.99, sum(rate(lat[5m])))")?;
    // Classic `le` series appear as the layout grows (an exponential
    // histogram's first observations in a new bucket), which skews their
    // rate in the first windows: the median step says how close the two
    // answers are.
    let agree = median_gap(&nq, &cq);
    println!(
        "{} histograms × {} scrapes × {} observations; classic: {:.0} series a histogram",
        args.series, args.scrapes, args.observations, classic_series
    );
    println!("| figure | native | classic | native / classic |");
    println!("|---|---|---|---|");
    println!(
        "| bytes per histogram sample (sealed chunks) | {native_per_hist:.2} | {classic_per_hist:.2} | {:.3} |",
        native_per_hist / classic_per_hist
    );
    if let Some((pn, pc)) = prometheus {
        println!(
            "| Prometheus 2.42, bytes per histogram sample (snapshot block chunks) | {pn:.2} | {pc:.2} | {:.3} |",
            pn / pc
        );
        println!(
            "| Keel ÷ Prometheus, bytes per histogram sample | {:.3} | {:.3} | |",
            native_per_hist / pn,
            classic_per_hist / pc
        );
    }
    let floor = increment_entropy_bits(&increments) / 8.0;
    println!(
        "| floor: bucket increments' entropy, bytes per histogram sample | {floor:.2} | | {:.3} |",
        floor / classic_per_hist
    );
    println!(
        "| custom buckets (NHCB, the classic bounds), bytes per histogram sample | {custom_per_hist:.2} | {classic_per_hist:.2} | {:.3} |",
        custom_per_hist / classic_per_hist
    );
    println!(
        "| bytes per observation | {:.3} | {:.3} | |",
        native_per_hist / args.observations as f64,
        classic_per_hist / args.observations as f64
    );
    println!(
        "| 1 h histogram_quantile(0.99) range query, p50 ms | {native_ms:.1} | {classic_ms:.1} | {:.2} |",
        native_ms / classic_ms
    );
    println!(
        "| 1 h histogram_quantile(0.99) range query, p50 ms: custom buckets (NHCB) | {custom_ms:.1} | {classic_ms:.1} | {:.2} |",
        custom_ms / classic_ms
    );
    println!(
        "p99 answers: native (exponential interpolation) and classic (linear) differ by {:.2} % at the median step ({} steps); custom buckets (linear) and classic by {:.2} %",
        agree * 100.0,
        nq.len().min(cq.len()),
        median_gap(&uq, &cq) * 100.0
    );
    Ok(())
}
