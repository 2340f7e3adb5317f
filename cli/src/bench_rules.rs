//! `keel bench rules`: the cost of one evaluation of many rules over many
//! series (the goal: 1,000 rules over 100,000 active series in ≤ 100 ms).
//!
//! An in-memory store gets `--series` series of a request counter
//! (`--services` services × instances), sampled every 15 s for 10 minutes;
//! `--rules` alerting rules, each an error ratio over one service's
//! series (`sum(rate(…{service="svc-k",code="500"}[5m])) / sum(rate(…[5m])) > 0.01`,
//! the shape of the shipped rules), are evaluated together
//! `--rounds` times at the data's end, as the collector evaluates a group.
//! The baseline in the same run: one query that touches every series
//! once (`sum by (service) (rate(…[5m]))`), so the ratio says what the
//! per-rule overhead costs beyond reading the data. The peers in the
//! same run (unless `--no-peers`): Prometheus evaluating the same rules
//! over the same series, and vmalert over VictoriaMetrics
//! ([`crate::bench_rules_peers`]); the goal is at most half Prometheus'
//! time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_alerting::rules::engine::Source;
use keel_alerting::rules::{GroupState, SeverityMapping};
use keel_metricstore::{Store, StoreConfig};
use keel_promql::Engine;
use keel_series::labels::Labels;

use crate::bench_rules_peers::{self as peers, Shape};

/// Flags of `keel bench rules`.
#[derive(clap::Args)]
pub struct RulesBenchArgs {
    /// Active series.
    #[arg(long, default_value_t = 100_000)]
    series: usize,
    /// Alerting rules (each over one service).
    #[arg(long, default_value_t = 1_000)]
    rules: usize,
    /// Evaluations measured.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Keel alone: skip Prometheus and vmalert.
    #[arg(long)]
    no_peers: bool,
    /// Evaluations read from each peer.
    #[arg(long, default_value_t = 10)]
    peer_evaluations: usize,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(args: RulesBenchArgs) -> anyhow::Result<()> {
    let services = args.rules.max(1);
    let per_service = (args.series / services).max(2);
    println!(
        "keel bench rules: {} series ({services} services × {per_service}, half of them code=500 at 2 %), {} rules, {} rounds",
        services * per_service,
        args.rules,
        args.rounds
    );
    let store = std::sync::Arc::new(Store::in_memory(StoreConfig::default()));
    let t0: i64 = 1_796_000_000_000;
    let steps = 40;
    let started = Instant::now();
    let shape = Shape {
        services,
        per_service,
        steps,
    };
    for s in 0..services {
        let mut batch = Vec::with_capacity(per_service);
        for i in 0..per_service {
            let (labels, per_step) = shape.series(s, i);
            let samples = (0..steps)
                .map(|k| (t0 + k as i64 * 15_000, per_step * k as f64))
                .collect();
            batch.push((Labels::new(labels), samples));
        }
        store.append(batch)?;
    }
    println!("  loaded in {:.1} s", started.elapsed().as_secs_f64());
    let mut text = String::from("groups:\n- name: bench\n  rules:\n");
    for k in 0..args.rules {
        text.push_str(&format!(
            "  - alert: ErrorRatio{k}\n    expr: sum(rate(http_requests_total{{service=\"svc-{k}\",code=\"500\"}}[5m])) / sum(rate(http_requests_total{{service=\"svc-{k}\"}}[5m])) > 0.01\n    severity: P2\n    annotations: {{summary: '{{{{ $value | humanizePercentage }}}}'}}\n"
        ));
    }
    let groups = keel_alerting::rules::file::parse(
        Path::new("bench.yml"),
        &text,
        Duration::from_secs(15),
        &SeverityMapping::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut group = GroupState::new(
        groups
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no group"))?,
    );
    let source = keel_alerting::rules::source::StoreSource::new(store.clone(), None);
    let at = t0 + (steps as i64 - 1) * 15_000;
    let ext = BTreeMap::new();
    let mut rule_times = Vec::new();
    let mut base_times = Vec::new();
    for _ in 0..args.rounds {
        let s = Instant::now();
        group.eval(&source, at, &ext);
        rule_times.push(s.elapsed());
        let s = Instant::now();
        let n = source
            .instant("sum by (service) (rate(http_requests_total[5m]))", at)
            .map_err(|e| anyhow::anyhow!(e))?
            .len();
        base_times.push(s.elapsed());
        anyhow::ensure!(n == services, "baseline returned {n} series");
    }
    let firing = group.alerts().count();
    let errors = group.health.iter().filter(|h| h.error.is_some()).count();
    anyhow::ensure!(
        errors == 0,
        "{errors} rules failed: {:?}",
        group.health.iter().find_map(|h| h.error.clone())
    );
    anyhow::ensure!(
        firing == args.rules,
        "{firing} of {} rules fire (2 % > 1 %)",
        args.rules
    );
    let _ = Engine::new(&store);
    rule_times.sort();
    base_times.sort();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores, {}", std::env::consts::ARCH);
    println!("{:<52} {:>10} {:>10} {:>10}", "", "p50", "p99", "goal");
    println!(
        "{:<52} {:>8.1}ms {:>8.1}ms {:>10}",
        format!("{} rules, one evaluation", args.rules),
        pct(&rule_times, 0.5).as_secs_f64() * 1e3,
        pct(&rule_times, 0.99).as_secs_f64() * 1e3,
        "≤ 100 ms"
    );
    println!(
        "{:<52} {:>8.1}ms {:>8.1}ms",
        "baseline: one query over every series",
        pct(&base_times, 0.5).as_secs_f64() * 1e3,
        pct(&base_times, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "ratio rules / baseline (p50): {:.2}; {firing} alerts fire, as they should",
        pct(&rule_times, 0.5).as_secs_f64() / pct(&base_times, 0.5).as_secs_f64().max(1e-9)
    );
    drop(group);
    drop(source);
    drop(store);
    if !args.no_peers {
        peers(shape, &args, pct(&rule_times, 0.5))?;
    }
    Ok(())
}

/// Prometheus and vmalert on the same rules and series, one after the
/// other (the machine's cores to each), and Keel's p50 as a ratio of each.
fn peers(shape: Shape, args: &RulesBenchArgs, keel_p50: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for (bin, what) in [
        ("prometheus", "apt install prometheus"),
        ("vmalert", "apt install victoria-metrics"),
    ] {
        if !peers::installed(bin) {
            println!("{bin}: not installed ({what}); its figure is missing");
            continue;
        }
        let peer = rt.block_on(async {
            if bin == "prometheus" {
                peers::prometheus(
                    &dir.path().join(bin),
                    shape,
                    args.rules,
                    args.peer_evaluations,
                )
                .await
            } else {
                peers::vmalert(
                    &dir.path().join(bin),
                    shape,
                    args.rules,
                    args.peer_evaluations,
                )
                .await
            }
        })?;
        anyhow::ensure!(
            peer.firing == args.rules,
            "{}: {} of {} alerts fire, so it did not see the data",
            peer.name,
            peer.firing,
            args.rules
        );
        // Printed as it comes: a later peer's failure keeps this figure.
        println!(
            "{:<52} {:>8.1}ms {:>8.1}ms",
            peer.name,
            peer.p50.as_secs_f64() * 1e3,
            peer.p99.as_secs_f64() * 1e3
        );
        println!(
            "  Keel / it (p50): {:.2}{}",
            keel_p50.as_secs_f64() / peer.p50.as_secs_f64().max(1e-9),
            if bin == "prometheus" {
                " (goal ≤ 0.5)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
