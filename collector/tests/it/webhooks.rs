//! Pages reach webhooks as Alertmanager's JSON, retried until the
//! receiver takes them, and the resolution follows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_alerting::notify::NotifyConfig;
use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_series::labels::Labels;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reaches_a_webhook_that_fails_twice_then_its_resolution() {
    let _turn = crate::common::turn().await;
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("rules/r.yml"),
        "groups:\n- name: g\n  interval: 500ms\n  rules:\n  - alert: Down\n    expr: x > 1\n    severity: P0\n    annotations: {summary: 'x is {{ $value }}'}\n",
    )
    .expect("write");
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
            webhooks: vec![hook.clone()],
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(100),
            p0_group_interval: Duration::from_millis(500),
            dashboard_url: "http://keel.example".into(),
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
                Labels::new(vec![("__name__", "x"), ("job", "j")]),
                vec![(clock.now_ms(), v)],
            )])
            .expect("append");
    };
    let wait_for = |n: usize| {
        let got = got.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let v = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if v.len() >= n {
                    return v;
                }
                assert!(Instant::now() < deadline, "only {} webhook bodies", v.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    x(5.0);
    let bodies = wait_for(1).await;
    let b = &bodies[0];
    assert_eq!(b["version"], "4");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["externalURL"], "http://keel.example");
    let a = &b["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "Down");
    assert_eq!(a["labels"]["severity"], "P0");
    assert_eq!(a["labels"]["job"], "j");
    assert_eq!(a["annotations"]["summary"], "x is 5");
    assert!(
        a["startsAt"].as_str().is_some_and(|s| s.starts_with("20")),
        "{a}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two refusals, then taken");
    // The body arrived before the answer did: wait for the record.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d: Value = reqwest::get(format!("http://{}/api/v1/notifications", c.api))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let first = &d["data"][0];
        if !first["delivered_at_ms"].is_null() {
            assert_eq!(first["receiver"], hook.as_str());
            assert_eq!(first["attempts"], 3, "{first}");
            break;
        }
        assert!(Instant::now() < deadline, "not recorded as delivered: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    x(0.5);
    let bodies = wait_for(2).await;
    assert_eq!(bodies[1]["status"], "resolved");
    assert!(
        bodies[1]["alerts"][0]["endsAt"]
            .as_str()
            .is_some_and(|s| !s.starts_with("0001"))
    );
}
