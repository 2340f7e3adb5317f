//! The scrape phase of `keel bench metrics` (`--scrape-only` runs it
//! alone): what one scraped target costs the collector, through the real
//! path — a `keel collector` and a `keel agent` as child processes, the
//! agent scraping one endpoint of `--scrape-series` series every second.
//!
//! Reported: series the collector holds per scraped target (the target's
//! own series, the synthetic `up`/`scrape_*` ones and any `target_info`),
//! the label names they carry, and what a stored sample costs — write-ahead
//! log bytes and chunk bytes per sample. These are counts and bytes, not
//! timings, so a debug build measures them as well as a release one.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::bench_agent::{serve_metrics, start_agent};
use crate::bench_metrics::start_keel;

/// What the scrape phase measured.
#[derive(Debug, Serialize)]
pub(crate) struct ScrapeFigures {
    /// Series on the scraped endpoint.
    pub endpoint_series: usize,
    /// Scrapes stored.
    pub scrapes: u64,
    /// Series the collector holds for the one target.
    pub series_per_target: u64,
    /// Of those, `target_info` series.
    pub target_info_series: u64,
    /// Label names on the target's own series (besides `__name__`).
    pub label_names: Vec<String>,
    /// Samples stored.
    pub samples: u64,
    /// Write-ahead log bytes per sample.
    pub wal_bytes_per_sample: f64,
    /// Chunk bytes per sample (open chunks included).
    pub chunk_bytes_per_sample: f64,
}

/// Run the phase: `series` on the endpoint, `scrapes` scrapes 1 s apart.
pub(crate) async fn measure(
    client: &reqwest::Client,
    series: usize,
    scrapes: u64,
) -> anyhow::Result<ScrapeFigures> {
    let dir = tempfile::tempdir()?;
    let collector = start_keel(dir.path(), client).await?;
    let port = serve_metrics(series).await?;
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "agent:\n  collector: {}\n  data_dir: {}\n  otlp_receiver: \"\"\n  host_metrics:\n    enabled: false\n  scrape:\n    - job: bench\n      targets: [http://127.0.0.1:{port}/metrics]\n      interval: 1s\n      timeout: 1s\n",
            collector.otlp,
            dir.path().join("agent").display()
        ),
    )
    .context("writing the agent's config")?;
    let (_agent, _) = start_agent(dir.path(), &config)?;
    let query = |q: &str| {
        let url = format!("{}/api/v1/query", collector.api);
        let q = q.to_owned();
        async move {
            let v: serde_json::Value = client
                .get(url)
                .query(&[("query", q.as_str())])
                .send()
                .await?
                .json()
                .await?;
            Ok::<f64, anyhow::Error>(
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0),
            )
        }
    };
    // Until `scrapes` scrapes of every series are stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(scrapes * 3 + 60);
    loop {
        let stored = query(&format!(
            "min(count_over_time(bench_requests_total[{}s]))",
            scrapes * 2 + 30
        ))
        .await
        .unwrap_or(0.0);
        if stored >= scrapes as f64 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the collector holds {stored} scrapes of the target after {} s",
            scrapes * 3 + 60
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status: serde_json::Value = client
        .get(format!("{}/api/v1/status/keel", collector.api))
        .send()
        .await?
        .json()
        .await?;
    let store = &status["data"]["store"];
    let samples = store["samples"].as_u64().unwrap_or(0);
    let per = |key: &str| store[key].as_f64().unwrap_or(0.0) / samples.max(1) as f64;
    let labels: serde_json::Value = client
        .get(format!("{}/api/v1/series", collector.api))
        .query(&[("match[]", "bench_requests_total")])
        .send()
        .await?
        .json()
        .await?;
    let mut label_names: Vec<String> = labels["data"][0]
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "__name__").cloned().collect())
        .unwrap_or_default();
    label_names.sort();
    Ok(ScrapeFigures {
        endpoint_series: series,
        scrapes: query("min(count_over_time(bench_requests_total[1h]))").await? as u64,
        series_per_target: store["series"].as_u64().unwrap_or(0),
        target_info_series: query("count(target_info)").await? as u64,
        label_names,
        samples,
        wal_bytes_per_sample: per("wal_bytes"),
        chunk_bytes_per_sample: per("chunk_bytes"),
    })
}

/// Print the figures as the bench's other tables are.
pub(crate) fn print(f: &ScrapeFigures) {
    println!(
        "scrape path (agent → collector): one target of {} series, {} scrapes stored",
        f.endpoint_series, f.scrapes
    );
    println!(
        "  series per target {} ({} target_info); labels {}",
        f.series_per_target,
        f.target_info_series,
        f.label_names.join(", ")
    );
    println!(
        "  samples {}; WAL bytes / sample {:.2}; chunk bytes / sample {:.2}",
        f.samples, f.wal_bytes_per_sample, f.chunk_bytes_per_sample
    );
}
