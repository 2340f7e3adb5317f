//! End to end with `keel up` and a test overlay config (short `for`,
//! business hours always open, a real SMTP server): errors injected into
//! web through the sample app's knob fire the error-rate alert and the
//! page arrives by email; removing them resolves it. Runs when
//! KEEL_TEST_SMTP=1 (aiosmtpd from PyPI; `.ci/run` installs it).

use std::time::Duration;

use crate::common::*;
use keel_testkit::smtp::Smtp;

const RULES: &str = r#"groups:
  - name: test
    interval: 1s
    rules:
      - alert: WebErrorRate
        expr: |
          sum(rate(http_server_request_duration_seconds_count{tier="web",http_response_status_code=~"5.."}[30s]))
            / sum(rate(http_server_request_duration_seconds_count{tier="web"}[30s])) > 0.2
        for: 2s
        severity: P1
        annotations:
          summary: "web fails {{ $value | humanizePercentage }} of requests"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_page_by_email_and_their_removal_resolves() {
    if std::env::var("KEEL_TEST_SMTP").as_deref() != Ok("1") {
        eprintln!("skipped: set KEEL_TEST_SMTP=1 (needs `pip install aiosmtpd`)");
        return;
    }
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = Smtp::start(keel_testkit::free_port().expect("a free port"))
        .await
        .expect("aiosmtpd starts");
    let smtp_port = smtp.port;
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/test.yml"), RULES).expect("write");
    std::fs::write(
        dir.path().join("overlay.yaml"),
        format!(
            "collector:\n  notify:\n    email: {{smtp_port: {smtp_port}, to: [oncall@example.com]}}\n    business_hours: {{days: [mon, tue, wed, thu, fri, sat, sun], start: '00:00', end: '23:59:59.999'}}\n    retry_initial: 200ms\n    p1_group_wait: 0s\n    p1_group_interval: 1s\n"
        ),
    )
    .expect("write");
    let (mut child, lines) = keel_up(dir.path(), &["--config", "overlay.yaml"]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let shop = printed_url(&lines, "shop API");
    let supervisor = printed_url(&lines, "supervisor API").replace("/api/v1/processes", "");
    let rules = printed_url(&lines, "alert rules");
    let (_, r) = get_json(&rules).await;
    assert_eq!(
        r["data"]["groups"][0]["rules"][0]["name"], "WebErrorRate",
        "the overlay's ./rules run: {r}"
    );
    // Steady traffic through the lb.
    let traffic = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let _ = client.get(&shop).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let knob = |rate: f64| {
        let url = format!("{supervisor}/api/v1/web/capacity");
        let sup = supervisor_client(dir.path());
        async move {
            let r = sup
                .put(url)
                .json(&serde_json::json!({"error_rate": rate}))
                .send()
                .await
                .expect("knob");
            assert!(
                r.status().is_success(),
                "{}",
                r.text().await.unwrap_or_default()
            );
        }
    };
    knob(0.8).await;
    eventually("the page by email", Duration::from_secs(90), || {
        let t = smtp.text();
        async move {
            t.contains("Subject: [P1 FIRING] WebErrorRate: web fails")
                .then_some(())
        }
    })
    .await;
    let got = smtp.text();
    assert!(
        got.contains("To: oncall@example.com") && got.contains("Severity: P1"),
        "{got}"
    );
    knob(0.0).await;
    eventually("the resolution by email", Duration::from_secs(90), || {
        let t = smtp.text();
        async move {
            t.contains("Subject: [P1 RESOLVED] WebErrorRate")
                .then_some(())
        }
    })
    .await;
    traffic.abort();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "keel up exited with {status}");
}
