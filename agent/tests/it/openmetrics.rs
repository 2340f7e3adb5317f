//! A target that answers OpenMetrics only when asked for it (as
//! client_golang, Python's and Java's clients do): the agent asks as
//! Prometheus does, reads the exemplar on its latency bucket and the
//! timestamp in seconds, and leaves out the counter's `_created` line.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use keel_agent::exposition::Format;
use keel_agent::scrape::{Target, scrape};

const OPENMETRICS: &str = "# TYPE req counter\n\
req_total 4\n\
req_created 1600000000.0\n\
# TYPE lat_seconds histogram\n\
lat_seconds_bucket{le=\"0.5\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.25 1600000001.5\n\
lat_seconds_bucket{le=\"+Inf\"} 4\n\
lat_seconds_count 4\n\
lat_seconds_sum 1.5\n\
# EOF\n";

const TEXT: &str = "# TYPE req_total counter\nreq_total 4\n";

/// Answer OpenMetrics when the Accept header names it, else the text format.
async fn metrics(headers: HeaderMap) -> ([(header::HeaderName, &'static str); 1], &'static str) {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            OPENMETRICS,
        )
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], TEXT)
    }
}

/// The `/metrics` target at `addr`, with a default job's options and
/// `limits`.
fn target_at(addr: std::net::SocketAddr, limits: keel_agent::scrape::Limits) -> Target {
    Target {
        job: "api".into(),
        url: format!("http://{addr}/metrics"),
        instance: addr.to_string(),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        honor_labels: false,
        labels: BTreeMap::new(),
        accept: keel_agent::config::ScrapeJob::default().accept(),
        native: Default::default(),
        limits,
    }
}

#[tokio::test]
async fn the_agent_asks_for_openmetrics_and_keeps_its_exemplars() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/metrics", axum::routing::get(metrics));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let target = target_at(addr, Default::default());
    let got = scrape(&reqwest::Client::new(), &target).await;
    assert_eq!(got.error, None);
    let names: Vec<&str> = got.samples.iter().map(|s| s.labels[0].1.as_str()).collect();
    assert_eq!(
        names,
        [
            "req_total",
            "lat_seconds_bucket",
            "lat_seconds_bucket",
            "lat_seconds_count",
            "lat_seconds_sum"
        ],
        "OpenMetrics, without req_created"
    );
    let e = got.samples[1]
        .exemplar
        .as_ref()
        .expect("the bucket's exemplar");
    assert_eq!(
        e.labels,
        [(
            "trace_id".to_owned(),
            "4bf92f3577b34da6a3ce929d0e0e4736".to_owned()
        )]
    );
    assert_eq!((e.value, e.timestamp_ms), (0.25, Some(1_600_000_001_500)));
    assert_eq!(
        Format::of_content_type(Some("text/plain; version=0.0.4")),
        Format::Prometheus
    );
}

#[tokio::test]
async fn a_scrape_past_the_jobs_body_or_sample_limit_fails_and_keeps_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body: String = (0..100).map(|i| format!("m{{i=\"{i}\"}} {i}\n")).collect();
    let len = body.len() as u64;
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let target = |limits| target_at(addr, limits);
    let client = reqwest::Client::new();
    let got = scrape(&client, &target(Default::default())).await;
    assert_eq!((got.error, got.samples.len()), (None, 100));
    let at = |body_size, samples| keel_agent::scrape::Limits { body_size, samples };
    let got = scrape(&client, &target(at(len, 100))).await;
    assert_eq!(
        (got.error, got.samples.len()),
        (None, 100),
        "at both limits"
    );
    let got = scrape(&client, &target(at(len - 1, 0))).await;
    assert!(
        got.error
            .as_deref()
            .is_some_and(|e| e.contains("body_size_limit")),
        "{:?}",
        got.error
    );
    assert!(got.samples.is_empty());
    let got = scrape(&client, &target(at(0, 99))).await;
    assert_eq!(
        got.error.as_deref(),
        Some("100 samples, more than sample_limit (99)")
    );
    assert!(got.samples.is_empty());
}
