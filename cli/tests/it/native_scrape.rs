//! Native histograms from a scrape, as Prometheus takes them: Keel's
//! agent (with `scrape_native_histograms`) and a real Prometheus (with
//! `--enable-feature=native-histograms`) scrape the same target, which
//! answers in Prometheus' protobuf format when asked for it. Both ask for
//! protobuf first; both store the same series (a histogram with native
//! buckets as one native series, a classic-only one as `le` series with
//! Prometheus' `1.0` spelling, a summary's `quantile`s); the native
//! histograms, their sums and `histogram_count` / `histogram_sum` over
//! them answer alike through either's query API. When the histogram
//! leaves the target, both stop answering it. (`histogram_quantile` is
//! not compared: Debian's Prometheus 2.42 interpolates linearly inside a
//! bucket, Prometheus 3 — and Keel — exponentially; the golden cases
//! check Keel's against Prometheus 3's.)
//!
//! Gated on `KEEL_TEST_PROMETHEUS` (Debian's `prometheus`; `.ci/run`
//! installs it and sets it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use keel_agent::config::ScrapeJob;
use keel_agent::exposition::proto::{
    Bucket, BucketSpan, Counter, Histogram, LabelPair, Metric, MetricFamily, Quantile, Summary,
    kind,
};
use keel_agent::run::Agent;
use keel_core::clock::{SharedClock, SystemClock};
use keel_testkit::Reaped;
use prost::Message;

use crate::common::{eventually, query};

const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

fn label(name: &str, value: &str) -> LabelPair {
    LabelPair::new(name, value)
}

fn family(name: &str, kind: i32, metric: Vec<Metric>) -> MetricFamily {
    MetricFamily::new(name, kind, metric)
}

/// The target's families; `with_native` leaves the native histogram out
/// when false (it "went away").
fn families(with_native: bool) -> Vec<MetricFamily> {
    // Schema 3, positive buckets around 0.1 s and 1 s, negative ones, a
    // zero bucket, and classic buckets alongside (a client_golang
    // histogram with both).
    let native = Histogram {
        sample_count: 22,
        sample_sum: 9.75,
        bucket: vec![
            Bucket {
                cumulative_count: 6,
                upper_bound: 0.25,
                ..Bucket::default()
            },
            Bucket {
                cumulative_count: 20,
                upper_bound: 1.0,
                ..Bucket::default()
            },
        ],
        schema: 3,
        zero_threshold: 2f64.powi(-128),
        zero_count: 2,
        positive_span: vec![
            BucketSpan {
                offset: -27,
                length: 3,
            },
            BucketSpan {
                offset: 24,
                length: 2,
            },
        ],
        positive_delta: vec![1, 2, -1, 5, -2],
        negative_span: vec![BucketSpan {
            offset: 2,
            length: 1,
        }],
        negative_delta: vec![2],
        ..Histogram::default()
    };
    let classic = Histogram {
        sample_count: 10,
        sample_sum: 4.5,
        bucket: vec![
            Bucket {
                cumulative_count: 3,
                upper_bound: 0.1,
                ..Bucket::default()
            },
            Bucket {
                cumulative_count: 9,
                upper_bound: 1.0,
                ..Bucket::default()
            },
            Bucket {
                cumulative_count: 10,
                upper_bound: 5.0,
                ..Bucket::default()
            },
        ],
        ..Histogram::default()
    };
    let mut out = vec![
        family(
            "requests_total",
            kind::COUNTER,
            vec![Metric {
                label: vec![label("code", "200")],
                counter: Some(Counter {
                    value: 42.0,
                    exemplar: None,
                }),
                ..Metric::default()
            }],
        ),
        family(
            "queue_seconds",
            kind::HISTOGRAM,
            vec![Metric {
                histogram: Some(classic),
                ..Metric::default()
            }],
        ),
        family(
            "gc_seconds",
            kind::SUMMARY,
            vec![Metric {
                summary: Some(Summary {
                    sample_count: 5,
                    sample_sum: 0.5,
                    quantile: vec![
                        Quantile {
                            quantile: 0.0,
                            value: 0.01,
                        },
                        Quantile {
                            quantile: 0.5,
                            value: 0.1,
                        },
                        Quantile {
                            quantile: 1.0,
                            value: 0.2,
                        },
                    ],
                }),
                ..Metric::default()
            }],
        ),
    ];
    if with_native {
        out.push(family(
            "rpc_seconds",
            kind::HISTOGRAM,
            vec![
                Metric {
                    label: vec![label("path", "/a")],
                    histogram: Some(native.clone()),
                    ..Metric::default()
                },
                Metric {
                    label: vec![label("path", "/b")],
                    histogram: Some(Histogram {
                        sample_count: 3,
                        sample_sum: 1.5,
                        zero_count: 0,
                        positive_span: vec![BucketSpan {
                            offset: 0,
                            length: 1,
                        }],
                        positive_delta: vec![3],
                        negative_span: Vec::new(),
                        negative_delta: Vec::new(),
                        ..native
                    }),
                    ..Metric::default()
                },
            ],
        ));
    }
    out
}

/// What the target was asked for, by who asked (its User-Agent).
type Asked = Arc<Mutex<BTreeMap<String, String>>>;

/// Serve `families` as protobuf when the Accept header names it (as
/// client_golang does), recording each scraper's Accept header.
async fn serve(native: Arc<AtomicBool>, asked: Asked) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let native = native.clone();
            let asked = asked.clone();
            async move {
                let get = |h| {
                    headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let accept = get(header::ACCEPT);
                let who = get(header::USER_AGENT);
                asked.lock().expect("lock").insert(
                    who.split('/').next().unwrap_or("").to_owned(),
                    accept.clone(),
                );
                let mut body = Vec::new();
                for f in families(native.load(Ordering::SeqCst)) {
                    f.encode_length_delimited(&mut body).expect("encode");
                }
                ([(header::CONTENT_TYPE, PROTOBUF)], body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// Each series of an instant query's answer, by its labels, with its
/// value or histogram as the API wrote it.
pub(crate) async fn answer(api: &str, expr: &str) -> BTreeMap<String, serde_json::Value> {
    query(api, expr, None)
        .await
        .into_iter()
        .map(|s| {
            let point = if s.get("histogram").is_some() {
                s["histogram"][1].clone()
            } else {
                s["value"][1].clone()
            };
            (s["metric"].to_string(), point)
        })
        .collect()
}

/// The same answer: equal JSON, but for numbers (written as strings)
/// within a few units in the last place. Prometheus takes its bucket
/// bounds from a table whose entries are not all correctly rounded (its
/// 2^-1/2 is 0.7071067811865475); Keel computes them, and one of the two
/// can be one unit off in the last place.
pub(crate) fn same(k: &serde_json::Value, p: &serde_json::Value) -> bool {
    use serde_json::Value::{Array, Object, String as Text};
    match (k, p) {
        // Equal, or the same notation differing only in the last digits.
        (Text(a), Text(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) if a != b => {
                let shared = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                a.contains('e') == b.contains('e')
                    && a.len().abs_diff(b.len()) <= 1
                    && shared + 2 >= a.len().min(b.len())
                    && (x - y).abs() <= 1e-14 * x.abs().max(y.abs())
            }
            _ => a == b,
        },
        (Array(a), Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b)),
        (Object(a), Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, v)| b.get(key).is_some_and(|w| same(v, w)))
        }
        _ => k == p,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_scraped_in_protobuf_are_stored_and_queried_as_prometheus_does() {
    if std::env::var_os("KEEL_TEST_PROMETHEUS").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_PROMETHEUS=1 with Debian's prometheus installed (.ci/run does)"
        );
        return;
    }
    let _heavy = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let native = Arc::new(AtomicBool::new(true));
    let asked: Asked = Arc::default();
    let target = serve(native.clone(), asked.clone()).await;

    let prom_server = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: fix\n    static_configs:\n      - targets: ['{target}']\n"
        ),
        &["--enable-feature=native-histograms"],
    )
    .await
    .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    let prom = prom_server.url.clone();

    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    let (collector, otlp, keel) = crate::common::spawn_collector(&keel_dir, 0, 0);
    let _collector = Reaped(collector);
    let config = crate::common::scraping_agent(
        dir.path(),
        otlp,
        ScrapeJob {
            job: "fix".into(),
            targets: vec![format!("http://{target}/metrics")],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            scrape_native_histograms: true,
            ..ScrapeJob::default()
        },
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");

    // Both hold the native histograms.
    let expr = r#"rpc_seconds{job="fix"}"#;
    for (who, api) in [("Keel", &keel), ("Prometheus", &prom)] {
        eventually(
            &format!("{who} holds the native histograms"),
            Duration::from_secs(60),
            || async move { (answer(api, expr).await.len() == 2).then_some(()) },
        )
        .await;
    }

    // Both asked for protobuf first.
    let asked_now = asked.lock().expect("lock").clone();
    let first = |who: &str| {
        asked_now
            .get(who)
            .unwrap_or_else(|| panic!("{who} never scraped: {asked_now:?}"))
            .split(',')
            .next()
            .unwrap_or("")
            .split(";q=")
            .next()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(first("keel-agent"), first("Prometheus"), "{asked_now:?}");

    // The same series...
    let series = |api: String| async move {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("{api}/api/v1/series"))
            .query(&[("match[]", r#"{job="fix",__name__!~"up|scrape_.*"}"#)])
            .send()
            .await
            .expect("series")
            .json()
            .await
            .expect("json");
        let mut out: Vec<String> = v["data"]
            .as_array()
            .expect("series list")
            .iter()
            .map(|s| s.to_string())
            .collect();
        out.sort();
        out
    };
    let (ks, ps) = (series(keel.clone()).await, series(prom.clone()).await);
    assert_eq!(ks, ps, "Keel's series, then Prometheus'");
    assert!(ps.iter().any(|s| s.contains(r#""le":"1.0""#)), "{ps:?}");
    assert!(
        !ps.iter().any(|s| s.contains("rpc_seconds_bucket")),
        "native only: {ps:?}"
    );

    // ...the same native histograms and the same answers over them.
    for expr in [
        r#"rpc_seconds{job="fix"}"#,
        r#"histogram_count(rpc_seconds{job="fix"})"#,
        r#"histogram_sum(rpc_seconds{job="fix"})"#,
        r#"sum(rpc_seconds{job="fix"})"#,
        r#"histogram_count(sum by (job) (rpc_seconds{job="fix"}))"#,
        r#"queue_seconds_bucket{job="fix"}"#,
        r#"gc_seconds{job="fix"}"#,
    ] {
        let (k, p) = (answer(&keel, expr).await, answer(&prom, expr).await);
        assert!(!p.is_empty(), "Prometheus answers {expr}");
        assert!(
            k.len() == p.len() && k.iter().zip(&p).all(|(k, p)| k.0 == p.0 && same(k.1, p.1)),
            "{expr}: Keel's\n{k:?}\nthen Prometheus'\n{p:?}"
        );
    }

    // The native histogram leaves the target: both stop answering it.
    native.store(false, Ordering::SeqCst);
    for (who, api) in [("Keel", &keel), ("Prometheus", &prom)] {
        eventually(
            &format!("{who} marks the native histograms stale"),
            Duration::from_secs(60),
            || async move { answer(api, expr).await.is_empty().then_some(()) },
        )
        .await;
    }
    assert_eq!(answer(&keel, r#"requests_total{job="fix"}"#).await.len(), 1);
    agent.stop().await;
}
