//! The dashboard API without a browser: the shipped files load, each
//! panel answers for a range and variables, a broken file keeps its last
//! good version with its error (file:line), a failing query and an empty
//! result are said in words, panels export as YAML, and the timeline
//! merges alert transitions with the controller's events.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_series::labels::Labels;
use serde_json::{Value, json};

const GOOD: &str = r#"title: Test board
variables:
  - name: tier
    label: tier
    match: requests_total
rows:
  - title: Requests of $tier
    panels:
      - title: Rate
        type: timeseries
        unit: reqps
        queries:
          - expr: sum by (tier) (rate(requests_total{tier="$tier"}[1m]))
            legend: "{{tier}}"
      - title: Nothing
        type: stat
        queries:
          - expr: no_such_metric
      - title: Broken at run time
        type: table
        queries:
          - expr: requests_total + ignoring(tier) requests_total
"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn collector(dir: &std::path::Path) -> Running {
    let config = CollectorConfig {
        data_dir: dir.join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        dashboards: dir.join("dashboards"),
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    start(&config, clock).await.expect("collector starts")
}

async fn get(c: &Running, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}{path}", c.api))
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Two tiers' counters for the last ten minutes, a sample every 10 s.
fn fill(c: &Running, now: i64) {
    for (tier, per_s) in [("web", 5.0), ("lb", 2.0)] {
        let samples: Vec<(i64, f64)> = (0..60)
            .map(|k| {
                let t = now - 600_000 + k * 10_000;
                (t, per_s * (k * 10) as f64)
            })
            .collect();
        c.store
            .append(vec![(
                Labels::new(vec![("__name__", "requests_total"), ("tier", tier)]),
                samples,
            )])
            .expect("append");
    }
}

/// GET `url` as a browser would (accepting gzip, deflate, br); the body,
/// which must come gzipped.
async fn get_gzipped(url: &str) -> axum::body::Bytes {
    let r = reqwest::Client::new()
        .get(url)
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.headers().get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..]),
        "{url}"
    );
    r.bytes().await.expect("body")
}

/// Rewrite `path` with `text` and a modification time `secs` later, so a
/// reload sees the change whatever the file system's clock resolution.
fn rewrite(path: &std::path::Path, text: &str, secs: u64) {
    std::fs::write(path, text).expect("write");
    let f = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    f.set_modified(SystemTime::now() + Duration::from_secs(secs))
        .expect("set mtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panels_answer_for_a_range_and_variables_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dashboards")).expect("mkdir");
    let file = dir.path().join("dashboards/test.yaml");
    std::fs::write(&file, GOOD).expect("write");
    let c = collector(dir.path()).await;
    let now = now_ms();
    fill(&c, now);

    let (_, list) = get(&c, "/api/v1/dashboards").await;
    assert_eq!(list["data"][0]["uid"], "test", "{list}");
    assert_eq!(list["data"][0]["title"], "Test board");
    assert!(list["data"][0]["error"].is_null(), "{list}");

    let (_, vars) = get(&c, "/api/v1/dashboards/test/variables").await;
    assert_eq!(
        vars["data"]["tier"]["values"],
        json!(["lb", "web"]),
        "{vars}"
    );
    assert_eq!(
        vars["data"]["tier"]["value"], "lb",
        "the first value by default"
    );

    let range = format!(
        "start={}&end={}&step=30",
        (now - 300_000) / 1000,
        now / 1000
    );
    let (status, d) = get(
        &c,
        &format!("/api/v1/dashboards/test/panels/0.0/data?{range}&var-tier=web"),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    let data = &d["data"];
    assert_eq!(data["type"], "series");
    assert_eq!(
        data["queries"][0], r#"sum by (tier) (rate(requests_total{tier="web"}[1m]))"#,
        "the variable is substituted"
    );
    let series = data["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{d}");
    assert_eq!(series[0]["name"], "web", "the legend template");
    let n = data["timestamps"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 11, "300 s at 30 s steps, both ends: {d}");
    let values: Vec<f64> = series[0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(values.len() >= 9, "values over the range: {d}");
    assert!(
        values.iter().all(|v| (v - 5.0).abs() < 0.01),
        "5/s: {values:?}"
    );

    // A large answer is gzipped for a client that accepts it.
    let gz = get_gzipped(&format!(
        "http://{}/api/v1/dashboards/test/panels/0.0/data?start={}&end={}&step=1&var-tier=web",
        c.api,
        (now - 600_000) / 1000,
        now / 1000
    ))
    .await;
    let v: Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(&gz[..])).expect("gzipped JSON");
    assert_eq!(v["data"]["timestamps"].as_array().map_or(0, Vec::len), 601);

    // An empty result is data with no series, for the page to say so.
    let (status, d) = get(
        &c,
        &format!("/api/v1/dashboards/test/panels/0.1/data?{range}"),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["data"]["series"], json!([]), "{d}");

    // A query that fails at run time is an error in words.
    let (status, d) = get(
        &c,
        &format!("/api/v1/dashboards/test/panels/0.2/data?{range}"),
    )
    .await;
    assert_eq!(status, 422, "{d}");
    assert!(
        d["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the reason: {d}"
    );

    // Unknown dashboards and panels are 404s that say which.
    let (status, d) = get(&c, "/api/v1/dashboards/test/panels/9.9/data").await;
    assert_eq!(status, 404);
    assert!(
        d["error"].as_str().is_some_and(|e| e.contains("9.9")),
        "{d}"
    );
    let (status, _) = get(&c, "/api/v1/dashboards/nope").await;
    assert_eq!(status, 404);
    // A bad time range is a 400.
    let (status, _) = get(&c, "/api/v1/dashboards/test/panels/0.0/data?start=10&end=5").await;
    assert_eq!(status, 400);

    // Broken: the error names the file and line, the last good version stays.
    rewrite(&file, &GOOD.replace("type: stat", "type: pie"), 5);
    let (_, list) = get(&c, "/api/v1/dashboards").await;
    let err = list["data"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("test.yaml:") && err.contains("pie"),
        "the error names the place and the value: {list}"
    );
    assert_eq!(list["data"][0]["title"], "Test board", "last good kept");
    let (status, d) = get(
        &c,
        &format!("/api/v1/dashboards/test/panels/0.0/data?{range}&var-tier=web"),
    )
    .await;
    assert_eq!(status, 200, "the last good version still answers: {d}");

    // Invalid in meaning (not syntax): every problem, each with its line.
    rewrite(
        &file,
        &GOOD
            .replace("width", "w")
            .replace("[1m]))", "[1m])")
            .replace("title: Nothing", "title: \"\""),
        10,
    );
    let (_, list) = get(&c, "/api/v1/dashboards").await;
    let err = list["data"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("2 problem(s)")
            && err.contains("rows[0].panels[0].queries[0].expr")
            && err.contains("rows[0].panels[1].title: must not be empty"),
        "{err}"
    );
    assert!(
        err.lines()
            .skip(1)
            .all(|l| l.trim_start().starts_with(&format!("{}:", file.display()))),
        "each problem with file:line: {err}"
    );

    // Fixed: the error goes away.
    rewrite(&file, &GOOD.replace("Test board", "Fixed board"), 15);
    let (_, list) = get(&c, "/api/v1/dashboards").await;
    assert_eq!(list["data"][0]["title"], "Fixed board", "{list}");
    assert!(list["data"][0]["error"].is_null(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_dashboards_load_when_no_directory_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = CollectorConfig {
        data_dir: dir.path().join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        // The default directory name, absent from the test's cwd-free temp dir.
        dashboards: "dashboards-that-do-not-exist".into(),
        ..CollectorConfig::default()
    };
    // A configured directory that is missing: no dashboards, no panic.
    let clock: SharedClock = Arc::new(SystemClock);
    let c = start(&config, clock.clone()).await.expect("starts");
    let (_, list) = get(&c, "/api/v1/dashboards").await;
    assert_eq!(list["data"], json!([]), "{list}");

    // The shipped files are valid and all panels type-check.
    for (name, text) in keel_dashboards::SHIPPED {
        let d: keel_dashboards::Dashboard =
            keel_core::config::parse_yaml(name, text).unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        keel_core::config::Validate::validate(&d, &mut problems);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
    let shipped_dir = CollectorConfig {
        data_dir: dir.path().join("data2"),
        ..CollectorConfig::default()
    };
    if !std::path::Path::new("dashboards").is_dir() {
        let d = shipped_dir.dashboards_dir();
        assert!(
            d.join("overview.yaml").is_file(),
            "written to {}",
            d.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panels_built_in_the_page_preview_and_export_as_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let now = now_ms();
    fill(&c, now);
    let http = reqwest::Client::new();
    let panel = json!({
        "title": "Built", "type": "timeseries", "unit": "reqps",
        "queries": [{"expr": "sum(rate(requests_total[1m]))", "legend": "all"}],
    });
    let r = http
        .post(format!(
            "http://{}/api/v1/panels/data?start={}&end={}&step=60",
            c.api,
            (now - 300_000) / 1000,
            now / 1000
        ))
        .json(&panel)
        .send()
        .await
        .expect("post");
    let v: Value = r.json().await.expect("json");
    let last = v["data"]["series"][0]["values"]
        .as_array()
        .and_then(|a| a.iter().rev().find_map(Value::as_f64));
    assert!(
        last.is_some_and(|x| (x - 7.0).abs() < 0.01),
        "5/s + 2/s: {v}"
    );
    let r = http
        .post(format!("http://{}/api/v1/panels/export", c.api))
        .json(&panel)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let yaml = r.text().await.expect("text");
    let back: keel_dashboards::model::Panel =
        keel_core::config::parse_yaml("export", &yaml).expect("the YAML reads back");
    assert_eq!(back.title, "Built");
    assert_eq!(back.queries[0].expr, "sum(rate(requests_total[1m]))");
    // An invalid panel says what is wrong.
    let r = http
        .post(format!("http://{}/api/v1/panels/export", c.api))
        .json(&json!({"title": "x", "type": "timeseries", "queries": [{"expr": "rate("}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("queries[0].expr")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_merges_alert_transitions_and_controller_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let (st, writer) = c.state.clone().expect("a state store by default");
    let now = now_ms();
    for (k, (at, kind, subject)) in [
        (now - 3000, "scale", "web"),
        (now - 2000, "decision", "web"),
        (now - 1000, "failover", "db"),
    ]
    .into_iter()
    .enumerate()
    {
        writer.send(keel_state::Op::Put {
            table: keel_state::Table::Events,
            key: format!("{at:016}-{k}"),
            at_ms: at,
            doc: json!({"at_ms": at, "kind": kind, "subject": subject, "explanation": format!("{subject}: {kind}")}).to_string(),
        });
    }
    writer.send(keel_state::Op::History {
        at_ms: now - 2500,
        key: "k".into(),
        doc: json!({"rule": "Down", "group": "g", "labels": {"alertname": "Down", "service": "shop-web"}, "severity": "P0", "from": "pending", "to": "firing", "value": 1.0}).to_string(),
    });
    writer.flush().await.expect("flush");
    drop(st);
    let range = format!(
        "start={}&end={}",
        (now - 60_000) / 1000,
        (now + 1000) / 1000
    );
    let (_, v) = get(&c, &format!("/api/v1/events?{range}")).await;
    let kinds: Vec<&str> = v["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["scale", "alert", "decision", "failover"], "{v}");
    let alert = &v["data"][1];
    assert_eq!(alert["state"], "firing");
    assert!(
        alert["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("Down") && e.contains("pending → firing")),
        "{alert}"
    );
    let (_, v) = get(&c, &format!("/api/v1/events?{range}&exclude=decision")).await;
    assert_eq!(v["data"].as_array().map_or(0, Vec::len), 3, "{v}");
    let (_, v) = get(&c, &format!("/api/v1/events?{range}&kind=failover,scale")).await;
    assert_eq!(v["data"].as_array().map_or(0, Vec::len), 2, "{v}");
    let (_, v) = get(&c, &format!("/api/v1/events?{range}&subject=db")).await;
    assert_eq!(v["data"][0]["kind"], "failover", "{v}");
    let (status, _) = get(&c, "/api/v1/events?limit=x").await;
    assert_eq!(status, 400);
    // Small answers go as they are, even to a client that accepts gzip.
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/events?{range}", c.api))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert!(r.headers().get("content-encoding").is_none());
    let v: Value = r.json().await.expect("plain JSON");
    assert_eq!(v["data"].as_array().map_or(0, Vec::len), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_are_served_from_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("http://{}/", c.api))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 307, "/ leads to the dashboard");
    for (path, ty) in [
        ("/ui/", "text/html"),
        ("/ui/d/overview", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/vendor/uPlot.esm.js", "text/javascript"),
    ] {
        let r = client
            .get(format!("http://{}{path}", c.api))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let t = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(t.starts_with(ty), "{path}: {t}");
    }
    let r = client
        .get(format!("http://{}/ui/nope.js", c.api))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    // Gzipped for a browser that accepts it, the same bytes once inflated.
    let plain = client
        .get(format!("http://{}/ui/vendor/uPlot.esm.js", c.api))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    let gz = get_gzipped(&format!("http://{}/ui/vendor/uPlot.esm.js", c.api)).await;
    assert!(
        gz.len() * 3 < plain.len(),
        "{} of {}",
        gz.len(),
        plain.len()
    );
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated)
        .expect("gunzip");
    assert_eq!(inflated, plain);
}

/// The committed uPlot is the version the lockfile names (the files in
/// vendor/ are the package's own distribution files, copied by
/// `npm run vendor`).
#[test]
fn the_vendored_chart_library_matches_the_lockfile() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/web");
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("package-lock.json")).expect("lockfile"),
    )
    .expect("lockfile JSON");
    let version = lock["packages"]["node_modules/uplot"]["version"]
        .as_str()
        .expect("uplot in the lockfile");
    let dist = std::fs::read_to_string(root.join("vendor/uPlot.esm.js")).expect("vendored");
    assert!(
        dist.contains(&format!("(v{version})")),
        "vendor/uPlot.esm.js is not uPlot {version}: run `npm ci && npm run vendor` in dashboards/web"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_api_gzips_for_clients_that_accept_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    let now = now_ms();
    fill(&c, now);
    let path = format!(
        "/api/v1/query_range?query=requests_total&start={}&end={}&step=1",
        (now - 600_000) / 1000,
        now / 1000
    );
    let (status, plain) = get(&c, &path).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["data"]["result"].as_array().map(Vec::len), Some(2));
    let gz = get_gzipped(&format!("http://{}{path}", c.api)).await;
    let inflated: Value =
        serde_json::from_reader(flate2::read::GzDecoder::new(&gz[..])).expect("gzipped JSON");
    assert_eq!(inflated, plain, "the same answer, compressed");
    assert!(gz.len() * 4 < serde_json::to_vec(&plain).expect("json").len());
}
