//! Classic histograms scraped as native histograms with custom buckets
//! (Prometheus' `convert_classic_histograms_to_nhcb`): the agent scrapes
//! a text target, ships each classic histogram as one custom-bucket
//! histogram to the collector (a marked OTLP explicit-bucket point), and
//! the collector's query API answers it as one series whose quantiles,
//! count and sum are those of its `le` series (kept beside it here with
//! `always_scrape_classic_histograms`). A classic histogram whose counts
//! go down is not converted: its `le` series are kept and the agent
//! counts it as an invalid part of the scrape (the unit tests check the
//! message names it). When the histogram leaves the target, it goes stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_agent::config::ScrapeJob;
use keel_agent::run::Agent;
use keel_core::clock::{SharedClock, SystemClock};
use keel_testkit::Reaped;

use crate::common::{eventually, query};
use crate::native_scrape::answer;

const BODY: &str = "# TYPE http_seconds histogram
http_seconds_bucket{path=\"/a\",le=\"0.05\"} 12
http_seconds_bucket{path=\"/a\",le=\"0.1\"} 40
http_seconds_bucket{path=\"/a\",le=\"0.25\"} 61
http_seconds_bucket{path=\"/a\",le=\"1\"} 70
http_seconds_bucket{path=\"/a\",le=\"+Inf\"} 71
http_seconds_sum{path=\"/a\"} 9.5
http_seconds_count{path=\"/a\"} 71
";

const BROKEN: &str = "# TYPE broken_seconds histogram
broken_seconds_bucket{le=\"1\"} 5
broken_seconds_bucket{le=\"2\"} 3
broken_seconds_bucket{le=\"+Inf\"} 6
broken_seconds_count 6
# TYPE up_items gauge
up_items 3
";

/// Serve the histograms (while `present`) and the rest, in text.
async fn serve(present: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let present = present.clone();
            async move {
                let mut body = String::new();
                if present.load(Ordering::SeqCst) {
                    body.push_str(BODY);
                }
                body.push_str(BROKEN);
                body
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// The one value `expr` answers.
async fn value(api: &str, expr: &str) -> f64 {
    let r = query(api, expr, None).await;
    assert_eq!(r.len(), 1, "{expr}: {r:?}");
    r[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{expr}: {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_histograms_are_scraped_as_custom_buckets_and_answer_as_their_le_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let present = Arc::new(AtomicBool::new(true));
    let target = serve(present.clone()).await;
    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    let (collector, otlp, keel) = crate::common::spawn_collector(&keel_dir, 0, 0);
    let _collector = Reaped(collector);
    let config = crate::common::scraping_agent(
        dir.path(),
        otlp,
        ScrapeJob {
            job: "nhcb".into(),
            targets: vec![format!("http://{target}/metrics")],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            convert_classic_histograms_to_nhcb: true,
            always_scrape_classic_histograms: true,
            ..ScrapeJob::default()
        },
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");

    let expr = r#"http_seconds{job="nhcb"}"#;
    let stored = eventually(
        "the collector holds the custom-bucket histogram",
        Duration::from_secs(60),
        || {
            let keel = keel.clone();
            async move {
                let a = answer(&keel, expr).await;
                (a.len() == 1).then_some(a)
            }
        },
    )
    .await;
    let h = stored.values().next().expect("one histogram");
    assert_eq!(h["count"], "71", "{h}");
    assert_eq!(h["sum"], "9.5", "{h}");
    assert_eq!(
        h["buckets"],
        serde_json::json!([
            [3, "-Inf", "0.05", "12"],
            [0, "0.05", "0.1", "28"],
            [0, "0.1", "0.25", "21"],
            [0, "0.25", "1", "9"],
            [0, "1", "+Inf", "1"]
        ]),
        "{h}"
    );
    // The same numbers as its le series (kept beside it), including the
    // quantile in the open top bucket (its lower bound).
    eventually(
        "the classic series are kept beside it",
        Duration::from_secs(30),
        || {
            let keel = keel.clone();
            async move {
                (query(&keel, r#"http_seconds_bucket{job="nhcb"}"#, None)
                    .await
                    .len()
                    == 5)
                    .then_some(())
            }
        },
    )
    .await;
    for q in ["0.1", "0.5", "0.9", "0.995"] {
        let native = value(&keel, &format!("histogram_quantile({q}, {expr})")).await;
        let classic = value(
            &keel,
            &format!(r#"histogram_quantile({q}, http_seconds_bucket{{job="nhcb"}})"#),
        )
        .await;
        assert!(
            (native - classic).abs() <= 1e-12 * classic.abs().max(1.0),
            "q={q}: custom buckets {native}, le series {classic}"
        );
    }
    assert_eq!(
        value(&keel, &format!("histogram_count({expr})")).await,
        value(&keel, r#"http_seconds_count{job="nhcb"}"#).await
    );
    assert_eq!(
        value(&keel, &format!("histogram_fraction(0, 0.1, {expr})")).await,
        40.0 / 71.0
    );

    // The histogram whose counts go down stays classic, and the scrape
    // says why.
    assert!(
        answer(&keel, r#"broken_seconds{job="nhcb"}"#)
            .await
            .is_empty()
    );
    assert_eq!(
        query(&keel, r#"broken_seconds_bucket{job="nhcb"}"#, None)
            .await
            .len(),
        3
    );
    eventually(
        "the agent counts the histogram it could not convert",
        Duration::from_secs(30),
        || {
            let url = format!("http://{}/metrics", agent.addr);
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("keel_agent_invalid_scrape_lines_total "))
                    .is_some_and(|v| v.trim() != "0")
                    .then_some(())
            }
        },
    )
    .await;

    // The histogram leaves the target: it goes stale at once.
    present.store(false, Ordering::SeqCst);
    eventually(
        "the custom-bucket histogram goes stale",
        Duration::from_secs(60),
        || {
            let keel = keel.clone();
            async move { answer(&keel, expr).await.is_empty().then_some(()) }
        },
    )
    .await;
    agent.stop().await;
}
