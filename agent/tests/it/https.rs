//! The agent over HTTPS: it ships to an `https://` collector and scrapes
//! an `https` target whose certificate a CA in `tls_config.ca_file`
//! signed; a CA it does not trust is an error that says so, in its
//! status, never a silent skip.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_agent::config::{AgentConfig, HostMetricsConfig, ScrapeJob};
use keel_agent::run::Agent;
use keel_core::clock::{SharedClock, SystemClock};
use keel_testkit::https::{Https, serve};
use keel_tls::TlsConfig;

/// An HTTPS "collector" that counts metric batches and serves one
/// metric at `/metrics`.
async fn server(batches: Arc<AtomicUsize>) -> Https {
    let app = axum::Router::new()
        .route(
            "/v1/metrics",
            axum::routing::post(move || {
                let b = batches.clone();
                async move {
                    b.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::OK
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|| async { "# TYPE over_tls gauge\nover_tls 1\n" }),
        );
    serve(app).await.expect("https server")
}

fn config(dir: &std::path::Path, https: &Https, ca: &std::path::Path) -> AgentConfig {
    let base = format!("https://127.0.0.1:{}", https.addr.port());
    let tls = TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    };
    AgentConfig {
        collector: base.clone(),
        collector_tls: tls.clone(),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        otlp_receiver: String::new(),
        host_metrics: HostMetricsConfig {
            enabled: false,
            ..HostMetricsConfig::default()
        },
        scrape: vec![ScrapeJob {
            job: "tls".into(),
            targets: vec![format!("{base}/metrics")],
            interval: Duration::from_millis(200),
            tls_config: tls,
            ..ScrapeJob::default()
        }],
        ..AgentConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_ships_and_scrapes_over_https_trusting_its_ca_file() {
    let batches = Arc::new(AtomicUsize::new(0));
    let https = server(batches.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config(dir.path(), &https, &https.ca_file), clock)
        .await
        .expect("agent starts");
    keel_testkit::until(
        "a scraped batch shipped",
        Duration::from_secs(20),
        async || {
            let s = agent.status();
            let up = s.targets.iter().any(|t| t.up && t.samples > 0);
            (up && s.sent_records > 0 && batches.load(Ordering::SeqCst) > 0).then_some(())
        },
    )
    .await;
    assert_eq!(agent.status().last_send_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_the_agent_does_not_trust_is_a_named_error_and_nothing_is_sent() {
    let batches = Arc::new(AtomicUsize::new(0));
    let https = server(batches.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config(dir.path(), &https, &https.other_ca_file), clock)
        .await
        .expect("agent starts");
    let (scrape, send) =
        keel_testkit::until("both failures", Duration::from_secs(20), async || {
            let s = agent.status();
            let scrape = s.targets.first()?.error.clone()?;
            Some((scrape, s.last_send_error?))
        })
        .await;
    for e in [&scrape, &send] {
        assert!(e.contains("invalid peer certificate"), "{e}");
    }
    assert!(!agent.status().targets[0].up);
    assert_eq!(batches.load(Ordering::SeqCst), 0, "nothing got through");
}

/// `agent.tls`: the agent's own listener serves HTTPS with the configured
/// certificate; a client that does not trust its CA fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_listener_serves_tls_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = keel_testkit::https::Pki::new(dir.path()).expect("certificates");
    let config = AgentConfig {
        collector: "http://127.0.0.1:9".into(),
        data_dir: dir.path().join("agent"),
        listen: "127.0.0.1:0".into(),
        otlp_receiver: String::new(),
        host_metrics: HostMetricsConfig {
            enabled: false,
            ..HostMetricsConfig::default()
        },
        tls: keel_tls::server::ServerTlsConfig {
            cert_file: pki.cert_file.clone(),
            key_file: pki.key_file.clone(),
            client_ca_file: Default::default(),
        },
        ..AgentConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");
    let url = format!("https://{}/status", agent.addr);
    let trusting = TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..Default::default()
    }
    .client(reqwest::Client::builder(), "test")
    .expect("client");
    let status = trusting.get(&url).send().await.expect("answer").status();
    assert_eq!(status.as_u16(), 200);
    let e = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect_err("the test CA is not the system's");
    assert!(keel_tls::describe(&e).contains("UnknownIssuer"), "{e:?}");
    let plain = reqwest::get(format!("http://{}/status", agent.addr)).await;
    assert!(plain.is_err() || !plain.expect("answer").status().is_success());
    agent.stop().await;
}
