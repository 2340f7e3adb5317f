//! A P0 alert pages by email through a real SMTP server (Python's
//! aiosmtpd from PyPI): while the server is down the page is retried,
//! and it is delivered, with the right subject and body, once it is up;
//! the resolution follows. Runs when KEEL_TEST_SMTP=1 (`.ci/run` sets it
//! after `pip install aiosmtpd`).

use std::sync::Arc;
use std::time::Duration;

use keel_alerting::notify::{EmailConfig, NotifyConfig};
use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_series::labels::Labels;
use keel_testkit::smtp::Smtp;
use serde_json::Value;

async fn notifications(api: std::net::SocketAddr) -> Vec<Value> {
    let v: Value = reqwest::get(format!("http://{api}/api/v1/notifications"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Wait (30 s at most) until `f` gives a value.
async fn until<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    keel_testkit::until(what, Duration::from_secs(30), f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p0_page_is_retried_while_smtp_is_down_and_delivered_when_it_returns() {
    let _turn = crate::common::turn().await;
    if std::env::var("KEEL_TEST_SMTP").as_deref() != Ok("1") {
        eprintln!("skipped: set KEEL_TEST_SMTP=1 (needs `pip install aiosmtpd`)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("rules/r.yml"),
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: ErrorsCritical\n    expr: x > 1\n    severity: P0\n    annotations:\n      summary: '{{ $labels.tier }} fails at {{ $value }}'\n      runbook: https://runbooks.example/errors\n",
    )
    .expect("write");
    let smtp_port = keel_testkit::free_port().expect("a free port");
    let config = CollectorConfig {
        data_dir: dir.path().join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![dir.path().join("rules")],
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            email: EmailConfig {
                smtp_port,
                to: vec!["oncall@example.com".into()],
                ..EmailConfig::default()
            },
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            dashboard_url: "http://keel.example:7070".into(),
            ..NotifyConfig::default()
        },
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let c = start(&config, clock.clone())
        .await
        .expect("collector starts");
    let x = |v: f64| {
        c.store
            .append(vec![(
                Labels::new(vec![("__name__", "x"), ("tier", "web")]),
                vec![(clock.now_ms(), v)],
            )])
            .expect("append");
    };
    x(5.0);
    // The page is due, and failing: nothing listens on the SMTP port.
    let api = c.api;
    until("failed attempts", async || {
        let n = notifications(api).await;
        n.first()
            .filter(|d| d["attempts"].as_u64() >= Some(2) && d["delivered_at_ms"].is_null())
            .map(|d| assert!(d["last_error"].is_string(), "{d}"))
    })
    .await;

    // The server comes up: the retried page arrives.
    let smtpd = Smtp::start(smtp_port).await.expect("aiosmtpd starts");
    until("the page at the SMTP server", async || {
        smtpd
            .text()
            .contains("Subject: [P0 FIRING] ErrorsCritical: web fails at 5")
            .then_some(())
    })
    .await;
    let mail = smtpd.text();
    for want in [
        "To: oncall@example.com",
        "ErrorsCritical is FIRING (fired).",
        "Severity: P0",
        "Firing since: ",
        "Value: 5",
        "runbook: https://runbooks.example/errors",
        "tier: web",
        "Dashboard: http://keel.example:7070/alerts?alertname=ErrorsCritical",
    ] {
        assert!(mail.contains(want), "{want:?} not in the mail:\n{mail}");
    }
    let d = until("the delivery recorded", async || {
        notifications(api)
            .await
            .into_iter()
            .find(|d| !d["delivered_at_ms"].is_null())
    })
    .await;
    assert!(d["attempts"].as_u64() >= Some(3), "{d}");

    // Below the threshold: the resolution follows.
    x(0.5);
    until("the resolution", async || {
        smtpd
            .text()
            .contains("Subject: [P0 RESOLVED] ErrorsCritical")
            .then_some(())
    })
    .await;
}
