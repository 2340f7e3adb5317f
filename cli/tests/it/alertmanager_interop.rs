//! Keel as an Alertmanager and beside one, with the real tools:
//!
//! - `amtool` adds, lists and expires silences on a `keel collector` and
//!   adds and queries alerts (silenced ones shown suppressed);
//! - a real Prometheus sends its firing alert to Keel, which lists it on
//!   Alertmanager's API and routes it to a page;
//! - Keel sends its own firing alert to a real Alertmanager, which
//!   delivers it to a webhook; the send is counted under Prometheus'
//!   names on Keel's `/metrics`, which `promtool check metrics` finds
//!   clean.
//!
//! Gated on `KEEL_TEST_ALERTMANAGER` (Debian's `prometheus-alertmanager`
//! with `amtool`, and `prometheus`; `.ci/run` installs them and sets it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;

fn gated() -> bool {
    if std::env::var_os("KEEL_TEST_ALERTMANAGER").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_ALERTMANAGER=1 with Debian's prometheus-alertmanager and prometheus installed (.ci/run does)"
        );
        return false;
    }
    true
}

/// `amtool --alertmanager.url=<url> <args> -o json`, parsed (or the text
/// when it prints no JSON).
fn amtool(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("amtool")
        .arg(format!("--alertmanager.url={url}"))
        .args(args)
        .output()
        .expect("KEEL_TEST_ALERTMANAGER is set but amtool does not run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The first notification Keel decided for alert `name`.
async fn page_for(keel: &str, name: &str) -> Json {
    keel_testkit::until(
        &format!("a page for {name}"),
        Duration::from_secs(20),
        async || {
            let (_, n) = crate::common::get_json(&format!("{keel}/api/v1/notifications")).await;
            n["data"]
                .as_array()?
                .iter()
                .find(|d| d["page"]["alerts"][0]["labels"]["alertname"] == name)
                .cloned()
        },
    )
    .await
}

/// `amtool alert add` with `labels` (and an annotation `k=v`), which
/// must succeed.
fn add_alert(keel: &str, labels: &[&str], annotation: Option<&str>) {
    let mut args = vec!["alert".to_owned(), "add".to_owned()];
    args.extend(labels.iter().map(|l| (*l).to_owned()));
    args.extend(annotation.map(|a| format!("--annotation={a}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = amtool(keel, &args);
    assert!(ok, "alert add {labels:?}: {out}");
}

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_manages_silences_and_alerts_on_keel() {
    if !gated() {
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _, keel) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _keel = keel_testkit::Reaped(child);

    let (ok, id) = amtool(
        &keel,
        &[
            "silence",
            "add",
            "alertname=Foo",
            "job=~web.*",
            "--duration=1h",
            "--comment=maintenance",
            "--author=ops",
        ],
    );
    assert!(ok, "silence add: {id}");
    let id = id.trim().to_owned();
    let (ok, listed) = amtool(&keel, &["silence", "query", "-o", "json"]);
    assert!(ok, "{listed}");
    let listed = json(&listed);
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["comment"], "maintenance");
    assert_eq!(listed[0]["createdBy"], "ops");
    assert_eq!(listed[0]["status"]["state"], "active");
    let matchers: Vec<String> = listed[0]["matchers"]
        .as_array()
        .expect("matchers")
        .iter()
        .map(|m| {
            format!(
                "{}{}{}",
                m["name"].as_str().unwrap_or(""),
                if m["isRegex"] == true { "=~" } else { "=" },
                m["value"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(matchers, ["alertname=Foo", "job=~web.*"]);
    // The same silence through Keel's own API.
    let (_, mine) = crate::common::get_json(&format!("{keel}/api/v1/silences")).await;
    assert_eq!(mine["data"][0]["comment"], "maintenance", "{mine}");

    for labels in [
        &["alertname=Bar", "severity=critical", "instance=i1"][..],
        &["alertname=Foo", "job=web1"][..],
    ] {
        add_alert(&keel, labels, Some("summary=from amtool"));
    }
    let (ok, active) = amtool(&keel, &["alert", "query", "-o", "json"]);
    assert!(ok, "{active}");
    let active = json(&active);
    let names: Vec<&str> = active
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(names, ["Bar"], "the silenced Foo is not active: {active}");
    assert_eq!(active[0]["annotations"]["summary"], "from amtool");
    let (ok, silenced) = amtool(&keel, &["alert", "query", "--silenced", "-o", "json"]);
    assert!(ok, "{silenced}");
    let silenced = json(&silenced);
    let foo = silenced
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["labels"]["alertname"] == "Foo")
        .unwrap_or_else(|| panic!("Foo is not listed silenced: {silenced}"));
    assert_eq!(foo["status"]["state"], "suppressed");
    assert_eq!(foo["status"]["silencedBy"][0], id.as_str());
    // Bar routes as Keel's P0 (critical): a page was decided.
    let page = page_for(&keel, "Bar").await;
    assert_eq!(page["page"]["severity"], "P0", "{page}");

    // amtool's update: the silence gets the new comment and end in
    // place (its id kept, as Alertmanager updates an active silence whose
    // matchers and start stay), still the one silence muting Foo.
    let (ok, updated) = amtool(
        &keel,
        &[
            "silence",
            "update",
            &id,
            "--duration=2h",
            "--comment=longer",
        ],
    );
    assert!(ok, "silence update: {updated}");
    let (_, listed) = amtool(&keel, &["silence", "query", "-o", "json"]);
    let listed = json(&listed);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        (&listed[0]["id"], &listed[0]["comment"]),
        (&id.as_str().into(), &"longer".into()),
        "{listed}"
    );
    let ends = |v: &Json| {
        let t = v["endsAt"].as_str().unwrap_or_default();
        humantime::parse_rfc3339_weak(t).unwrap_or_else(|e| panic!("endsAt {t:?}: {e}"))
    };
    let left = ends(&listed[0])
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        left > Duration::from_secs(3600 + 1800),
        "the update's 2 h end: {listed}"
    );

    let (ok, out) = amtool(&keel, &["silence", "expire", &id]);
    assert!(ok, "expire: {out}");
    let (_, left) = amtool(&keel, &["silence", "query", "-o", "json"]);
    assert_eq!(
        json(&left),
        serde_json::json!([]),
        "expired silences are not listed as active"
    );
    let (_, expired) = amtool(&keel, &["silence", "query", "--expired", "-o", "json"]);
    assert_eq!(json(&expired)[0]["status"]["state"], "expired", "{expired}");
    let (ok, active) = amtool(&keel, &["alert", "query", "-o", "json"]);
    assert!(ok);
    assert_eq!(
        json(&active).as_array().map(Vec::len),
        Some(2),
        "Foo active once its silence expired: {active}"
    );
    // Bad input: a silence of an unknown id, a malformed alert.
    let (ok, out) = amtool(
        &keel,
        &["silence", "expire", "00000000-0000-4000-8000-0000000000ff"],
    );
    assert!(!ok, "expiring an unknown silence succeeded: {out}");
    let r = reqwest::Client::new()
        .post(format!("{keel}/api/v2/alerts"))
        .header("content-type", "application/json")
        .body(r#"[{"labels": {}}, {"labels": {"alertname": "Ok"}}]"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let why = r.text().await.unwrap_or_default();
    assert!(
        why.contains("alert 0") && why.contains("label pair"),
        "{why}"
    );
    let (_, all) = amtool(&keel, &["alert", "query", "-o", "json"]);
    assert!(
        all.contains("\"Ok\""),
        "the valid alert of the request was kept: {all}"
    );
    // Inhibition (Keel's default: a firing P0 of a job mutes its P1 and
    // P2): the warning is left out of the active list and shown, with
    // what inhibits it, when asked for.
    for labels in [
        &["alertname=Down", "severity=critical", "job=shop"][..],
        &["alertname=Slow", "severity=warning", "job=shop"][..],
    ] {
        add_alert(&keel, labels, None);
    }
    let (_, active) = amtool(
        &keel,
        &["alert", "query", "alertname=~Down|Slow", "-o", "json"],
    );
    let names: Vec<String> = json(&active)
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["Down"], "{active}");
    let (_, with_inhibited) = amtool(
        &keel,
        &[
            "alert",
            "query",
            "alertname=Slow",
            "--inhibited",
            "-o",
            "json",
        ],
    );
    let slow = json(&with_inhibited);
    assert_eq!(slow[0]["status"]["state"], "suppressed", "{slow}");
    assert_eq!(
        slow[0]["status"]["inhibitedBy"].as_array().map(Vec::len),
        Some(1),
        "{slow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sends_its_alerts_to_keel() {
    if !gated() {
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _, keel) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _keel = keel_testkit::Reaped(child);
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels:\n          severity: critical\n        annotations:\n          summary: from Prometheus\n",
    )
    .expect("rules");
    let host = keel.trim_start_matches("http://");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{host}']\n",
        rules.display()
    );
    // Its first send may find no Alertmanager discovered yet (dropped);
    // the next goes after the resend delay (1 m by default).
    let _prom = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| config,
        &["--rules.alert.resend-delay=1s"],
    )
    .await
    .expect("KEEL_TEST_ALERTMANAGER is set but prometheus does not start");
    let alert = keel_testkit::until(
        "Prometheus' alert on Keel's Alertmanager API",
        Duration::from_secs(60),
        async || {
            let (_, a) = crate::common::get_json(&format!("{keel}/api/v2/alerts")).await;
            a.as_array()?
                .iter()
                .find(|a| a["labels"]["alertname"] == "AlwaysFiring")
                .cloned()
        },
    )
    .await;
    assert_eq!(
        alert["annotations"]["summary"], "from Prometheus",
        "{alert}"
    );
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.contains("/graph")),
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], "active");
    let page = page_for(&keel, "AlwaysFiring").await;
    assert_eq!(page["page"]["severity"], "P0", "{page}");
    assert_eq!(page["page"]["kind"], "firing", "{page}");
}

/// A webhook receiver: every body it was posted.
async fn webhook() -> (String, Arc<Mutex<Vec<Json>>>) {
    let got: Arc<Mutex<Vec<Json>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_sends_its_alerts_to_a_real_alertmanager() {
    if !gated() {
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, got) = webhook().await;
    let am_port = keel_testkit::free_port().expect("port");
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n"
        ),
    )
    .expect("am config");
    let am = keel_testkit::server::Server::start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        am_port,
        "/-/ready",
        &dir.path().join("alertmanager.stderr"),
    )
    .await
    .expect("KEEL_TEST_ALERTMANAGER is set but prometheus-alertmanager does not start");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: KeelSaysHello\n        expr: vector(1)\n        severity: P2\n        annotations:\n          summary: from Keel\n",
    )
    .expect("rules");
    let config = dir.path().join("keel.yaml");
    std::fs::write(
        &config,
        format!(
            "collector:\n  rules:\n    files: ['{}']\n  notify:\n    alertmanagers: ['{}']\n    alertmanager_resend_delay: 1s\n",
            rules.display(),
            am.url
        ),
    )
    .expect("keel config");
    let keel_dir = dir.path().join("keel");
    std::fs::create_dir_all(&keel_dir).expect("mkdir");
    let (child, _, keel) =
        crate::common::start_collector(crate::common::collector_command(&config), &keel_dir);
    let _keel = keel_testkit::Reaped(child);
    let delivered = keel_testkit::until(
        "Alertmanager delivers Keel's alert to the webhook",
        Duration::from_secs(60),
        async || {
            let bodies = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
            bodies.into_iter().find_map(|b| {
                b["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| a["labels"]["alertname"] == "KeelSaysHello")
                    .cloned()
            })
        },
    )
    .await;
    assert_eq!(
        delivered["annotations"]["summary"], "from Keel",
        "{delivered}"
    );
    assert_eq!(delivered["status"], "firing", "{delivered}");
    // Counted under Prometheus' names, and the exposition is clean.
    let (_, metrics) = crate::common::get_text(&format!("{keel}/metrics")).await;
    let sent = metrics
        .lines()
        .find(|l| l.starts_with("prometheus_notifications_sent_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(sent.is_some_and(|n| n >= 1.0), "{metrics}");
    if let Err(e) = crate::common::promtool_check_metrics(&metrics) {
        panic!("promtool check metrics: {e}");
    }
}
