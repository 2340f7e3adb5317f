//! The peers of `keel bench rules`, fed the same series and the same
//! rules in the same run: Debian's Prometheus (its own
//! `prometheus_rule_group_last_duration_seconds`, one reading per
//! evaluation) and `vmalert` over VictoriaMetrics (its
//! `vmalert_iteration_duration_seconds` summary).
//!
//! Each peer gets the series by remote write, 10 minutes of them ending
//! at the wall clock (both evaluate at "now"), then the rule file; it
//! evaluates the group every 5 s and the bench reads `evaluations` of
//! them. A peer is only counted when every rule's alert fires there too,
//! so a figure is never that of an empty store.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};

/// The shape of the data: `services` × `per_service` counters of
/// `http_requests_total{service, instance, code}`, half `code="500"` at
/// 2 % of the requests (so every error-ratio rule fires).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Services (one rule each).
    pub services: usize,
    /// Series per service.
    pub per_service: usize,
    /// Samples per series, 15 s apart.
    pub steps: usize,
}

impl Shape {
    /// The labels and the value at step `k` of series `i` of service `s`.
    pub fn series(&self, s: usize, i: usize) -> (Vec<(String, String)>, f64) {
        let code = if i.is_multiple_of(2) { "200" } else { "500" };
        let labels = vec![
            ("__name__".to_owned(), "http_requests_total".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("instance".to_owned(), format!("i-{}", i / 2)),
            ("service".to_owned(), format!("svc-{s}")),
        ];
        (labels, if code == "200" { 98.0 } else { 2.0 })
    }
}

/// One peer's figures.
pub struct Peer {
    /// What was measured (with its version).
    pub name: String,
    /// One group evaluation's duration: median.
    pub p50: Duration,
    /// One group evaluation's duration: 99th percentile.
    pub p99: Duration,
    /// Alerts firing there after the evaluations.
    pub firing: usize,
}

/// `bin --version`'s first line's version word (Prometheus prints
/// `prometheus, version 2.42.0+ds …`), or "" when it says none.
fn version(bin: &str) -> String {
    let out = Command::new(bin).arg("--version").output();
    let text = out
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t
        })
        .unwrap_or_default();
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .map(|v| v.split('+').next().unwrap_or(v).to_owned())
        .unwrap_or_default()
}

/// A peer's rule file: Keel's rules in Prometheus' format (the severity
/// is a label there).
pub fn rule_file(rules: usize) -> String {
    let mut text = String::from("groups:\n- name: bench\n  interval: 5s\n  rules:\n");
    for k in 0..rules {
        text.push_str(&format!(
            "  - alert: ErrorRatio{k}\n    expr: sum(rate(http_requests_total{{service=\"svc-{k}\",code=\"500\"}}[5m])) / sum(rate(http_requests_total{{service=\"svc-{k}\"}}[5m])) > 0.01\n    labels: {{severity: P2}}\n"
        ));
    }
    text
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Remote-write bodies (snappy) of the whole history ending now: per
/// timestamp, in time order, shards of at most 10,000 series.
fn bodies(shape: Shape) -> Vec<Vec<Vec<u8>>> {
    let end = now_ms() / 15_000 * 15_000;
    let all: Vec<(Vec<(String, String)>, f64)> = (0..shape.services)
        .flat_map(|s| (0..shape.per_service).map(move |i| shape.series(s, i)))
        .collect();
    (0..shape.steps)
        .map(|k| {
            let t = end - (shape.steps - 1 - k) as i64 * 15_000;
            all.chunks(10_000)
                .map(|chunk| {
                    let req = WriteRequest {
                        timeseries: chunk
                            .iter()
                            .map(|(labels, per_step)| TimeSeries {
                                labels: labels
                                    .iter()
                                    .map(|(n, v)| Label {
                                        name: n.clone(),
                                        value: v.clone(),
                                    })
                                    .collect(),
                                samples: vec![Sample {
                                    value: per_step * k as f64,
                                    timestamp: t,
                                }],
                            })
                            .collect(),
                    };
                    req.to_snappy()
                })
                .collect()
        })
        .collect()
}

/// Remote-write the history to `url`, one timestamp at a time (its
/// shards at once).
async fn write(http: &reqwest::Client, url: &str, shape: Shape) -> anyhow::Result<()> {
    for step in bodies(shape) {
        let mut sends = tokio::task::JoinSet::new();
        for body in step {
            sends.spawn(
                http.post(url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body)
                    .send(),
            );
        }
        while let Some(r) = sends.join_next().await {
            let r = r??;
            anyhow::ensure!(
                r.status().is_success(),
                "{url} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The value of the first sample of `metric` in a Prometheus text page
/// whose labels contain every one of `with`.
fn metric_value(page: &str, metric: &str, with: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| with.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn text(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Alerts firing in a Prometheus-API `/api/v1/alerts` answer.
async fn firing(http: &reqwest::Client, url: &str) -> usize {
    let v: serde_json::Value = match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .count()
}

/// Prometheus: remote-written, then the rules loaded (a reload) once the
/// data is in; one duration per evaluation from its own metrics.
pub async fn prometheus(
    dir: &Path,
    shape: Shape,
    rules: usize,
    evaluations: usize,
) -> anyhow::Result<Peer> {
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    let glob = rules_dir.join("*.yml");
    let prom = keel_testkit::server::Server::prometheus(
        dir,
        |_| {
            format!(
                "global:\n  scrape_interval: 1h\n  evaluation_interval: 5s\nrule_files: ['{}']\n",
                glob.display()
            )
        },
        &[
            "--web.enable-remote-write-receiver",
            "--web.enable-lifecycle",
        ],
    )
    .await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    write(&http, &format!("{}/api/v1/write", prom.url), shape).await?;
    println!(
        "  prometheus: {} series written in {:.1} s",
        shape.services * shape.per_service,
        started.elapsed().as_secs_f64()
    );
    std::fs::write(rules_dir.join("bench.yml"), rule_file(rules))?;
    let r = http.post(format!("{}/-/reload", prom.url)).send().await?;
    anyhow::ensure!(r.status().is_success(), "prometheus reload: {}", r.status());
    let metrics = format!("{}/metrics", prom.url);
    let mut seen = None;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30 + 10 * evaluations as u64);
    while out.len() < evaluations {
        anyhow::ensure!(
            Instant::now() < deadline,
            "prometheus evaluated the group {} times, not {evaluations}",
            out.len()
        );
        let page = text(&http, &metrics).await;
        let at = metric_value(
            &page,
            "prometheus_rule_group_last_evaluation_timestamp_seconds",
            &["bench"],
        );
        let took = metric_value(
            &page,
            "prometheus_rule_group_last_duration_seconds",
            &["bench"],
        );
        if let (Some(at), Some(took)) = (at, took)
            && at > 0.0
            && seen != Some(at)
        {
            seen = Some(at);
            out.push(Duration::from_secs_f64(took));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out.sort();
    let firing = firing(&http, &format!("{}/api/v1/alerts", prom.url)).await;
    let pct = |p: f64| out[((out.len() as f64 - 1.0) * p).round() as usize];
    Ok(Peer {
        name: format!(
            "Prometheus {} (same rules, same series)",
            version("prometheus")
        ),
        p50: pct(0.5),
        p99: pct(0.99),
        firing,
    })
}

/// VictoriaMetrics with `vmalert` evaluating the rule file against it;
/// vmalert's per-iteration p50 and p99 (its summary) after `evaluations`
/// iterations. vmalert wants a notifier: a sink that accepts anything.
pub async fn vmalert(
    dir: &Path,
    shape: Shape,
    rules: usize,
    evaluations: usize,
) -> anyhow::Result<Peer> {
    std::fs::create_dir_all(dir)?;
    let vm_port = keel_testkit::free_port()?;
    let vm = keel_testkit::victoria::Victoria::start(
        Path::new("victoria-metrics"),
        &dir.join("vm-data"),
        vm_port,
    )
    .await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    write(&http, &format!("{}/api/v1/write", vm.url), shape).await?;
    let _ = http
        .get(format!("{}/internal/force_flush", vm.url))
        .send()
        .await;
    println!(
        "  victoria-metrics: {} series written in {:.1} s",
        shape.services * shape.per_service,
        started.elapsed().as_secs_f64()
    );
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_port = sink.local_addr()?.port();
    let app = axum::Router::new().fallback(|| async { "" });
    tokio::spawn(async move { axum::serve(sink, app).await });
    let rule_path = dir.join("bench.yml");
    std::fs::write(&rule_path, rule_file(rules))?;
    let port = keel_testkit::free_port()?;
    let _vmalert = keel_testkit::proc::Reaped(
        Command::new("vmalert")
            .arg(format!("-rule={}", rule_path.display()))
            .arg(format!("-datasource.url={}", vm.url))
            .arg(format!("-notifier.url=http://127.0.0.1:{sink_port}"))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-evaluationInterval=5s")
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("vmalert.stderr"))?)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting vmalert (apt install victoria-metrics): {e}"))?,
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30 + 10 * evaluations as u64);
    let page = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "vmalert did not evaluate the group {evaluations} times; its stderr: {}",
            std::fs::read_to_string(dir.join("vmalert.stderr")).unwrap_or_default()
        );
        let page = text(&http, &metrics).await;
        let done = metric_value(
            &page,
            "vmalert_iteration_duration_seconds_count",
            &["bench"],
        );
        if done.is_some_and(|n| n >= evaluations as f64) {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Its summary's quantiles over the iterations so far.
    let q = |quantile: &str| {
        metric_value(
            &page,
            "vmalert_iteration_duration_seconds",
            &["group=\"bench\"", &format!("quantile=\"{quantile}\"")],
        )
        .map(Duration::from_secs_f64)
        .ok_or_else(|| anyhow::anyhow!("vmalert reports no {quantile} quantile of its iterations"))
    };
    let firing = firing(&http, &format!("http://127.0.0.1:{port}/api/v1/alerts")).await;
    drop(vm);
    Ok(Peer {
        name: "vmalert over VictoriaMetrics (same rules, same series)".into(),
        p50: q("0.5")?,
        p99: q("0.99")?,
        firing,
    })
}

/// Whether `bin` runs here.
pub fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_from_a_text_page_by_name_and_labels() {
        let page = "# HELP x y\nprometheus_rule_group_last_duration_seconds{rule_group=\"a.yml;other\"} 1\nprometheus_rule_group_last_duration_seconds{rule_group=\"b.yml;bench\"} 0.25\nprometheus_rule_group_last_duration_seconds_x 9\n";
        assert_eq!(
            metric_value(
                page,
                "prometheus_rule_group_last_duration_seconds",
                &["bench"]
            ),
            Some(0.25)
        );
        assert_eq!(metric_value(page, "missing", &[]), None);
    }

    #[test]
    fn the_peers_rules_are_keels_in_prometheus_format() {
        let text = rule_file(2);
        assert!(text.contains("alert: ErrorRatio1"), "{text}");
        assert!(text.contains("labels: {severity: P2}"), "{text}");
        assert!(!text.contains("\n    severity:"), "{text}");
    }
}
