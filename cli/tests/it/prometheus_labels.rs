//! Series as Prometheus has them: Keel's agent and a real Prometheus
//! scrape the same real node_exporter, and every series Keel stores has
//! exactly the label set Prometheus stores; then node_exporter is killed
//! and, at the agent's first failed scrape, its series are stale.
//!
//! Gated on `KEEL_TEST_NODE_EXPORTER` (Debian's `prometheus-node-exporter`
//! and `prometheus`; `.ci/run` installs both and sets it). With the
//! variable set, a missing binary fails the test.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keel_agent::config::ScrapeJob;
use keel_agent::run::Agent;
use keel_core::clock::{SharedClock, SystemClock};

use keel_testkit::Reaped;

fn free_port() -> u16 {
    keel_testkit::free_port().expect("a free port")
}

/// `GET {api}{path}` with `query`, the `data` of the answer.
async fn data(api: &str, path: &str, query: &[(&str, String)]) -> serde_json::Value {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}{path}"))
        .query(query)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
    v["data"].clone()
}

/// The label sets of every series matching `{job="node"}`, as sorted
/// `name="value"` lists.
async fn series(api: &str, start: f64, end: f64) -> BTreeSet<String> {
    let d = data(
        api,
        "/api/v1/series",
        &[
            ("match[]", r#"{job="node"}"#.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
        ],
    )
    .await;
    d.as_array()
        .expect("a list of series")
        .iter()
        .map(|s| {
            let mut pairs: Vec<String> = s
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            pairs.sort();
            pairs.join(",")
        })
        .collect()
}

/// How many scrapes of node_exporter `api` holds over the last minute.
async fn scrapes(api: &str) -> f64 {
    let d = data(
        api,
        "/api/v1/query",
        &[("query", r#"count_over_time(up{job="node"}[1m])"#.to_owned())],
    )
    .await;
    d["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// How many series of node_exporter's own (not `up`/`scrape_*`) answer an
/// instant query at `t` seconds.
async fn exported_at(api: &str, t: f64) -> usize {
    let d = data(
        api,
        "/api/v1/query",
        &[
            (
                "query",
                r#"{job="node",__name__!~"up|scrape_.*"}"#.to_owned(),
            ),
            ("time", format!("{t:.3}")),
        ],
    )
    .await;
    d["result"].as_array().map_or(0, Vec::len)
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stores_node_exporter_series_as_prometheus_does_and_marks_them_stale() {
    if std::env::var_os("KEEL_TEST_NODE_EXPORTER").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_NODE_EXPORTER=1 with Debian's prometheus-node-exporter and prometheus installed (.ci/run does)"
        );
        return;
    }
    let _heavy = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let node_port = free_port();
    let node = Reaped(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("node.stderr")).expect("stderr"))
            .spawn()
            .expect("KEEL_TEST_NODE_EXPORTER is set but prometheus-node-exporter does not start"),
    );
    let target = format!("127.0.0.1:{node_port}");

    // A real Prometheus scraping it every second...
    let prom_server = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\n"
        ),
        &[],
    )
    .await
    .expect("KEEL_TEST_NODE_EXPORTER is set but prometheus does not start");
    let prom = prom_server.url.clone();

    // ...and Keel's agent, shipping to a Keel collector.
    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    let (collector, otlp, keel) = crate::common::spawn_collector(&keel_dir, 0, 0);
    let _collector = Reaped(collector);
    let config = crate::common::scraping_agent(
        dir.path(),
        otlp,
        ScrapeJob {
            job: "node".into(),
            targets: vec![format!("http://{target}/metrics")],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ..ScrapeJob::default()
        },
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");
    let start = now_s();

    // Both hold a few scrapes.
    for (who, api) in [("Keel", keel.clone()), ("Prometheus", prom.clone())] {
        crate::common::eventually(
            &format!("{who} holds 3 scrapes of node_exporter"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move { (scrapes(&api).await >= 3.0).then_some(()) }
            },
        )
        .await;
    }
    let end = now_s();
    let (k, p) = (
        series(&keel, start - 5.0, end).await,
        series(&prom, start - 5.0, end).await,
    );
    assert!(p.len() > 100, "Prometheus stored only {} series", p.len());
    let only_keel: Vec<&String> = k.difference(&p).collect();
    let only_prom: Vec<&String> = p.difference(&k).collect();
    assert!(
        only_keel.is_empty() && only_prom.is_empty(),
        "label sets differ: {} series only in Keel, e.g. {:?}; {} only in Prometheus, e.g. {:?}",
        only_keel.len(),
        only_keel.iter().take(5).collect::<Vec<_>>(),
        only_prom.len(),
        only_prom.iter().take(5).collect::<Vec<_>>(),
    );
    // The families' type and help as Prometheus has them from the same
    // exposition (the agent sends them with its first scrape).
    let metadata = |api: String| async move {
        let d = data(&api, "/api/v1/metadata", &[]).await;
        d.as_object()
            .expect("metadata")
            .iter()
            .filter(|(k, _)| k.starts_with("node_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (km, pm) = (metadata(keel.clone()).await, metadata(prom.clone()).await);
    assert!(
        pm.len() > 50,
        "Prometheus has metadata of {} families",
        pm.len()
    );
    assert_eq!(
        km.keys().collect::<Vec<_>>(),
        pm.keys().collect::<Vec<_>>(),
        "the same families"
    );
    for (family, p) in &pm {
        assert_eq!(&km[family], p, "metadata of {family}");
    }
    // No target_info for a scraped target: Prometheus writes none.
    let info = data(
        &keel,
        "/api/v1/query",
        &[("query", "target_info".to_owned())],
    )
    .await;
    assert_eq!(info["result"], serde_json::json!([]), "{info}");

    // node_exporter dies; at the agent's first failed scrape its series
    // are stale (not answering for the 5-minute lookback).
    drop(node);
    let first_failure = crate::common::eventually(
        "Keel holds the agent's first failed scrape",
        Duration::from_secs(30),
        || {
            let keel = keel.clone();
            async move {
                let d = data(
                    &keel,
                    "/api/v1/query",
                    &[("query", r#"up{job="node"}[2m]"#.to_owned())],
                )
                .await;
                let values = d["result"][0]["values"].as_array()?.clone();
                values.iter().find_map(|v| {
                    (v[1].as_str() == Some("0"))
                        .then(|| v[0].as_f64())
                        .flatten()
                })
            }
        },
    )
    .await;
    let before = exported_at(&keel, first_failure - 0.001).await;
    assert!(
        before > 100,
        "{before} node_exporter series just before the failed scrape"
    );
    assert_eq!(
        exported_at(&keel, first_failure).await,
        0,
        "node_exporter's series still answer at the failed scrape ({first_failure})"
    );
    // up and the scrape_* series stay, up at 0.
    let up = data(
        &keel,
        "/api/v1/query",
        &[
            ("query", r#"up{job="node"}"#.to_owned()),
            ("time", format!("{first_failure:.3}")),
        ],
    )
    .await;
    assert_eq!(up["result"][0]["value"][1], "0", "{up}");
    agent.stop().await;
}
