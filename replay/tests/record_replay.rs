//! A real collector records an alert firing and resolving; the window is
//! recorded through its API into a bundle, and replaying the bundle with
//! its own rules reproduces the recorded alert changes and pages exactly,
//! at the same times — three times over.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use keel_collector::server::{CollectorConfig, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_incident::bundle::Bundle;
use keel_replay::run::{Setup, replay};
use serde_json::{Value, json};

fn point(name: &str, t_ms: i64, v: f64) -> Value {
    json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "web"}},
            {"key": "service.instance.id", "value": {"stringValue": "web-1"}},
        ]},
        "scopeMetrics": [{"metrics": [{
            "name": name,
            "gauge": {"dataPoints": [{"timeUnixNano": (t_ms * 1_000_000).to_string(), "asDouble": v}]},
        }]}],
    }]})
}

/// Poll `f` until it holds (a condition, not a sleep as synchronisation).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    keel_testkit::until(what, Duration::from_secs(60), async || {
        f().await.then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_alert_is_reproduced_by_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: Hot\n    expr: temp > 5\n    for: 1s\n    severity: P0\n",
    )
    .expect("rules");
    let mut config = CollectorConfig {
        data_dir: dir.path().join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..CollectorConfig::default()
    };
    config.rules.files = vec![rules];
    config.incidents.record_p0 = false;
    let clock: SharedClock = Arc::new(SystemClock);
    let c = start(&config, clock.clone())
        .await
        .expect("collector starts");
    let http = reqwest::Client::new();
    let from = clock.now_ms() - 1000;
    // Cool, then hot for 3 s, then cool again: one scrape every 250 ms.
    let send = async |v: f64| {
        let r = http
            .post(format!("http://{}/v1/metrics", c.otlp_http))
            .json(&point("temp", clock.now_ms(), v))
            .send()
            .await
            .expect("send");
        assert!(r.status().is_success(), "{}", r.status());
    };
    for i in 0..28 {
        send(if (8..20).contains(&i) { 9.0 } else { 1.0 }).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let history = format!(
        "http://{}/api/v1/alerts/history?start={}",
        c.api,
        from as f64 / 1000.0
    );
    until(
        "the alert to fire and resolve in the saved history",
        async || {
            let v: Value = http
                .get(&history)
                .send()
                .await
                .expect("history")
                .json()
                .await
                .expect("json");
            v["data"]
                .as_array()
                .is_some_and(|l| l.iter().any(|e| e["to"] == "resolved"))
        },
    )
    .await;
    let to = clock.now_ms();
    let r: Value = http
        .post(format!("http://{}/api/v1/incidents", c.api))
        .json(&json!({"name": "hot", "from_ms": from, "to_ms": to}))
        .send()
        .await
        .expect("record")
        .json()
        .await
        .expect("json");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(
        r["data"]["counts"]["series"].as_u64().map(|n| n > 0),
        Some(true),
        "{r}"
    );
    // A second recording under the same name is refused, naming it.
    let again = http
        .post(format!("http://{}/api/v1/incidents", c.api))
        .json(&json!({"name": "hot", "from_ms": from, "to_ms": to}))
        .send()
        .await
        .expect("again");
    assert_eq!(again.status(), 409);
    let listed: Value = http
        .get(format!("http://{}/api/v1/incidents", c.api))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"][0]["name"], "hot", "{listed}");
    let bytes = http
        .get(format!("http://{}/api/v1/incidents/hot/bundle", c.api))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    let bundle = Bundle::read_from(&bytes[..], "hot.keelinc").expect("bundle reads");
    assert!(
        bundle.alerts.iter().any(|a| a.to == "firing"),
        "{:?}",
        bundle.alerts
    );
    assert!(!bundle.pages.is_empty(), "a P0 page was decided");
    assert!(
        bundle
            .marks
            .iter()
            .any(|m| matches!(m, keel_core::marks::Mark::Arrival { .. })),
        "arrivals are marked"
    );
    let setup = Setup::recorded(&bundle, "hot.keelinc").expect("setup");
    let mut reports = Vec::new();
    for _ in 0..3 {
        let outcome = tokio::task::block_in_place(|| replay(&bundle, &setup)).expect("replay");
        let timeline = keel_replay::report::timeline(&bundle, &setup, &outcome);
        match keel_replay::report::reproduction(&bundle, &setup, &outcome) {
            Ok(summary) => reports.push(format!("{timeline}{summary}")),
            Err(diffs) => panic!("not reproduced:\n{}\n{timeline}", diffs.join("\n")),
        }
    }
    assert!(reports.iter().all(|r| *r == reports[0]), "replays differ");
}
