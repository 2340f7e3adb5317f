//! A restarted collector neither re-pages nor forgets: alert state,
//! routing records, silences, tickets and undelivered notifications are
//! kept in the state store — SQLite by default, and the real PostgreSQL
//! server with `KEEL_TEST_POSTGRES=1` — and read back at start. Each
//! collector runs on a runtime of its own, dropped to stop it, on one
//! manual clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_alerting::notify::NotifyConfig;
use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{ManualClock, SharedClock, unix_ms};
use keel_series::labels::Labels;
use serde_json::Value;

use crate::common::{evaluated_at, get};

const RULES: &str = "groups:
- name: shop
  interval: 10s
  rules:
  - alert: Down
    expr: x > 1
    severity: P0
  - alert: Slow
    expr: y > 1
    for: 1m
    severity: P1
  - alert: Leak
    expr: z > 1
    severity: P2
";

/// A webhook receiver that refuses (503) until `accepting`, keeping the
/// alert names of the bodies it took.
struct Hook {
    url: String,
    accepting: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

fn hook() -> Hook {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let accepting = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, g) = (accepting.clone(), got.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (a, g) = (a.clone(), g.clone());
            async move {
                if !a.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let name = format!("{}:{}", v["alerts"][0]["labels"]["alertname"], v["status"]);
                g.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    rt.spawn(async move { axum::serve(l, app).await });
    Hook {
        url,
        accepting,
        got,
        _rt: rt,
    }
}

fn config(dir: &std::path::Path, state: &str, hook: &str) -> CollectorConfig {
    CollectorConfig {
        data_dir: dir.join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        state: state.into(),
        rules: RulesConfig {
            files: vec![dir.join("rules")],
            reload_interval: Duration::ZERO,
            ..RulesConfig::default()
        },
        notify: NotifyConfig {
            webhooks: vec![hook.into()],
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            p1_group_wait: Duration::ZERO,
            // Both alerts are of job "shop": the default inhibition would
            // mute the P1 under the P0, and this test is about restarts.
            inhibit: Vec::new(),
            ..NotifyConfig::default()
        },
        ..CollectorConfig::default()
    }
}

fn put(c: &Running, name: &str, t_ms: i64, v: f64) {
    c.store
        .append(vec![(
            Labels::new(vec![("__name__", name), ("job", "shop")]),
            vec![(t_ms, v)],
        )])
        .expect("append");
}

/// Poll `path` until `done` holds (the API runs beside the evaluation
/// and sending tasks), for at most 20 s.
async fn until(c: &Running, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(c.api, path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alert<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == name)
        .unwrap_or_else(|| panic!("no alert {name}: {alerts}"))
}

fn restart_keeps_state(state: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/shop.yml"), RULES).expect("write");
    let hook = hook();
    // A Wednesday, 10:00 UTC: inside the default business hours.
    let t0 = humantime::parse_rfc3339("2026-12-02T10:00:00Z").expect("time");
    let clock = ManualClock::new(t0);
    let shared: SharedClock = Arc::new(clock.clone());
    let config = config(dir.path(), state, &hook.url);
    // Samples from `ta` on: the evaluation at start (t0) sees none.
    let ta = t0 + Duration::from_secs(10);

    // First life: Down fires and its page is refused; Slow is pending;
    // Leak opens a ticket; a silence is made.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = start(&config, shared.clone()).await.expect("starts");
        for m in ["x", "y", "z"] {
            put(&c, m, unix_ms(ta), 5.0);
        }
        clock.set(ta);
        evaluated_at(c.api, ta).await;
        let v = until(&c, "/api/v1/notifications", |v| {
            v["data"][0]["attempts"].as_u64() >= Some(1)
        })
        .await;
        assert!(v["data"][0]["delivered_at_ms"].is_null(), "{v}");
        c.notifier
            .silence(
                &["alertname=Other".into()],
                None,
                Duration::from_secs(3600),
                "ops",
                "maintenance",
            )
            .expect("silence");
        let (_, writer) = c.state.as_ref().expect("a state store");
        writer.flush().await.expect("flush");
    });
    drop(rt);

    // Second life, 30 s later: the same alerts, the refused page sent
    // again (not decided again), Slow firing at exactly 1m.
    hook.accepting.store(true, Ordering::SeqCst);
    let tb = ta + Duration::from_secs(30);
    clock.set(tb);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = start(&config, shared.clone()).await.expect("restarts");
        evaluated_at(c.api, tb).await;
        let alerts = get(c.api, "/api/v1/alerts").await;
        let began = humantime::format_rfc3339_millis(ta).to_string();
        assert_eq!(alert(&alerts, "Down")["state"], "firing");
        assert_eq!(alert(&alerts, "Down")["activeAt"], began.as_str());
        assert_eq!(alert(&alerts, "Slow")["state"], "pending");
        assert_eq!(alert(&alerts, "Slow")["activeAt"], began.as_str());
        until(&c, "/api/v1/notifications", |v| {
            !v["data"][0]["delivered_at_ms"].is_null()
        })
        .await;
        let tc = ta + Duration::from_secs(60);
        for m in ["x", "y", "z"] {
            put(&c, m, unix_ms(tc), 5.0);
        }
        clock.set(tc);
        evaluated_at(c.api, tc).await;
        let n = until(&c, "/api/v1/notifications", |v| {
            v["data"]
                .as_array()
                .is_some_and(|d| d.len() == 2 && d.iter().all(|d| !d["delivered_at_ms"].is_null()))
        })
        .await;
        let d = &n["data"][0];
        assert!(
            d["attempts"].as_u64() >= Some(2),
            "retried after restart: {d}"
        );
        let got = hook.got.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            got,
            vec![r#""Down":"firing""#, r#""Slow":"firing""#],
            "Down paged once across the restart"
        );
        let alerts = get(c.api, "/api/v1/alerts").await;
        assert_eq!(
            alert(&alerts, "Slow")["firedAt"],
            humantime::format_rfc3339_millis(tc).to_string().as_str(),
            "for: 1m counted from the first life"
        );
        let tickets = get(c.api, "/api/v1/tickets").await;
        assert_eq!(
            tickets["data"].as_array().map(Vec::len),
            Some(1),
            "one ticket, not one a life: {tickets}"
        );
        let silences = get(c.api, "/api/v1/silences").await;
        assert_eq!(silences["data"][0]["comment"], "maintenance", "{silences}");
        // The history holds every change, from both lives (once the
        // writer has committed them).
        let (_, writer) = c.state.as_ref().expect("a state store");
        writer.flush().await.expect("flush");
        let h = get(
            c.api,
            &format!(
                "/api/v1/alerts/history?start={}&end={}",
                unix_ms(t0) / 1000,
                unix_ms(tc) / 1000 + 1
            ),
        )
        .await;
        let changes: Vec<String> = h["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {}→{}",
                    e["rule"].as_str().unwrap_or(""),
                    e["from"].as_str().unwrap_or(""),
                    e["to"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                "Down inactive→firing",
                "Slow inactive→pending",
                "Leak inactive→firing",
                "Slow pending→firing"
            ],
            "{h}"
        );
    });
    drop(rt);
}

#[test]
fn a_restarted_collector_keeps_alerts_pages_and_silences_in_sqlite() {
    let _turn = crate::common::turn_blocking();
    restart_keeps_state("");
}

#[test]
fn a_restarted_collector_keeps_alerts_pages_and_silences_in_postgres() {
    let _turn = crate::common::turn_blocking();
    if !keel_state::testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = rt
        .block_on(keel_state::testing::fresh_postgres_database())
        .expect("database");
    drop(rt);
    restart_keeps_state(&url);
}
