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
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c, k) = (got.clone(), calls.clone(), keys.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(v): axum::Json<Value>| {
                let (g, c, k) = (g.clone(), c.clone(), k.clone());
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    k.lock().unwrap_or_else(|e| e.into_inner()).push(key);
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    g.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let hook = serve_hook(app).await;

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
    // Every attempt is the same notification: one idempotency key, in
    // the header and the body.
    let k = keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(k.len(), 3);
    assert!(!k[0].is_empty() && k.iter().all(|x| *x == k[0]), "{k:?}");
    assert_eq!(b["notificationId"], k[0].as_str());
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
            // A webhook's path is often its secret: readers see where.
            let shown = keel_core::secret::redact_url_path(&hook);
            assert_eq!(first["receiver"], shown.as_str());
            assert!(!d.to_string().contains(&hook), "{d}");
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

/// A collector with one P0 rule on `x` paging `hook` (trusting what
/// `webhook_tls` says); `x` is above the threshold from the start.
async fn paging(
    dir: &std::path::Path,
    hook: &str,
    webhook_tls: keel_tls::TlsConfig,
) -> keel_collector::server::Running {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    std::fs::write(
        dir.join("rules/r.yml"),
        "groups:\n- name: g\n  interval: 500ms\n  rules:\n  - alert: Down\n    expr: x > 1\n    severity: P0\n",
    )
    .expect("write");
    let config = CollectorConfig {
        rules: RulesConfig {
            files: vec![dir.join("rules")],
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            webhooks: vec![hook.to_owned()],
            webhook_tls,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_millis(100),
            ..NotifyConfig::default()
        },
        ..crate::common::config(&dir.join("data"))
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let c = start(&config, clock.clone())
        .await
        .expect("collector starts");
    c.store
        .append(vec![(
            Labels::new(vec![("__name__", "x"), ("job", "j")]),
            vec![(clock.now_ms(), 5.0)],
        )])
        .expect("append");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_paged_through_its_ca_file_and_an_unknown_ca_is_a_named_error() {
    let _turn = crate::common::turn().await;
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                axum::http::StatusCode::OK
            }
        }),
    );
    let https = keel_testkit::https::serve(app).await.expect("https server");
    let hook = format!("https://127.0.0.1:{}/hook", https.addr.port());
    // Trusting the CA that signed the receiver's certificate: paged.
    let dir = tempfile::tempdir().expect("tempdir");
    let trusting = |ca: &std::path::Path| keel_tls::TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    };
    let _c = paging(dir.path(), &hook, trusting(&https.ca_file)).await;
    let body = keel_testkit::until("the page over HTTPS", Duration::from_secs(20), async || {
        got.lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    })
    .await;
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "Down");
    // Trusting another CA (and the system's): not sent, and the delivery
    // says why.
    let dir = tempfile::tempdir().expect("tempdir");
    let c = paging(dir.path(), &hook, trusting(&https.other_ca_file)).await;
    let error = keel_testkit::until("a failed attempt", Duration::from_secs(20), async || {
        let first = crate::common::first_notification(c.api).await?;
        first["last_error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("invalid peer certificate"), "{error}");
    let shown = keel_core::secret::redact_url_path(&hook);
    assert!(error.contains(&shown), "the receiver is named: {error}");
    assert!(!error.contains(&hook), "its path is not: {error}");
    assert_eq!(
        got.lock().unwrap_or_else(|e| e.into_inner()).len(),
        1,
        "nothing more arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_refuses_a_page_for_good_is_recorded_failed_counted_and_not_retried() {
    let _turn = crate::common::turn().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::BAD_REQUEST, "unknown channel")
            }
        }),
    );
    let hook = serve_hook(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = paging(dir.path(), &hook, keel_tls::TlsConfig::default()).await;
    let first = keel_testkit::until(
        "the delivery given up",
        Duration::from_secs(20),
        async || {
            let first = crate::common::first_notification(c.api).await?;
            (!first["failed_at_ms"].is_null()).then_some(first)
        },
    )
    .await;
    assert!(first["delivered_at_ms"].is_null(), "{first}");
    assert_eq!(first["attempts"], 1, "{first}");
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("400")),
        "{first}"
    );
    let metrics = crate::common::own_metrics(c.api).await;
    assert!(
        metrics.contains(&format!(
            "keel_notifications_failed_total{{receiver=\"{}\"}} 1",
            keel_core::secret::redact_url_path(&hook)
        )),
        "{metrics}"
    );
    // Retries would come within retry_max (100 ms): the rules' next
    // evaluations pass, and the receiver was still asked once.
    let before = std::time::SystemTime::now();
    crate::common::evaluated_at(c.api, before + Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

/// Serve `app` on a free port of 127.0.0.1; its `/hook` URL.
async fn serve_hook(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    hook
}
