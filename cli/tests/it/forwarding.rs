//! Forwarding to a real VictoriaMetrics (Debian's `victoria-metrics`,
//! started here on loopback; `KEEL_TEST_VICTORIA=1`, which `.ci/run`
//! sets): every sample the collector stores arrives there, those sent
//! while it was stopped too, and a range older than local retention is
//! answered from it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, number_data_point};
use prost::Message;

use crate::common::*;

/// Debian's VictoriaMetrics on `port`, its data in `dir`.
async fn victoria(port: u16, dir: &std::path::Path) -> keel_testkit::victoria::Victoria {
    keel_testkit::victoria::Victoria::start(std::path::Path::new("victoria-metrics"), dir, port)
        .await
        .expect("VictoriaMetrics starts")
}

/// `fwd_test{batch=…}` samples `n` batches of 10 distinct times each,
/// over OTLP to the collector at `otlp`, batch numbers from `first`.
async fn send(otlp: &str, first: usize, n: usize) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let http = reqwest::Client::new();
    for b in first..first + n {
        let points = (0..10u64)
            .map(|j| NumberDataPoint {
                time_unix_nano: (now_ms - 60_000 + j) * 1_000_000,
                value: Some(number_data_point::Value::AsDouble(
                    (b * 10) as f64 + j as f64,
                )),
                attributes: vec![kv("batch", &b.to_string())],
                ..Default::default()
            })
            .collect();
        let req = gauge_request(None, "fwd_test", points);
        let r = http
            .post(format!("{otlp}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .expect("ingest");
        assert_eq!(r.status(), 200, "batch {b}");
    }
}

/// The samples VictoriaMetrics holds of `fwd_test`, by its export API
/// (every raw sample, no query semantics in the way).
async fn held(vm: &str) -> usize {
    // Recent writes are searchable once flushed.
    let _ = reqwest::get(format!("{vm}/internal/force_flush")).await;
    let Ok(r) = reqwest::get(format!("{vm}/api/v1/export?match[]=fwd_test")).await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["values"].as_array().map_or(0, Vec::len))
        .sum()
}

/// A collector forwarding to the VictoriaMetrics at `vm` (and asking it
/// for what is older than its one-hour retention).
fn forwarding_collector(dir: &std::path::Path, vm: &str) -> (Child, String, String) {
    std::fs::write(
        dir.join("keel.yaml"),
        format!(
            "collector:\n  retention: 1h\n  block_duration: 1h\n  forward:\n    remote_write:\n    - url: {vm}/api/v1/write\n      retry: {{initial: 50ms, max: 500ms, timeout: 5s}}\n    remote_query: {{url: \"{vm}\"}}\n"
        ),
    )
    .expect("config");
    let mut command = collector_command(&dir.join("keel.yaml"));
    command.stdin(Stdio::null());
    start_collector(command, dir)
}

/// A gauge of the collector's own `/metrics`, summed over its series.
async fn own(api: &str, name: &str) -> f64 {
    let (_, text) = get_text(&format!("{api}/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_reaches_victoria_metrics_across_its_outage_and_old_ranges_come_back_from_it()
{
    if std::env::var("KEEL_TEST_VICTORIA").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KEEL_TEST_VICTORIA=1 with Debian's victoria-metrics installed (.ci/run does)"
        );
        return;
    }
    let _turn = heavy().await;
    let (vm_dir, dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let port = keel_testkit::free_port().expect("port");
    let vm_url = format!("http://127.0.0.1:{port}");
    let vm = victoria(port, vm_dir.path()).await;
    let (child, otlp, api) = forwarding_collector(dir.path(), &vm_url);
    let _stop = StopOnDrop(child.id() as i32);

    // Up: every sample arrives.
    send(&otlp, 0, 50).await;
    eventually(
        "500 samples in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let vm = vm_url.clone();
            async move { (held(&vm).await == 500).then_some(()) }
        },
    )
    .await;

    // Down: what is stored meanwhile waits in the queue, and says so.
    vm.stop();
    send(&otlp, 50, 50).await;
    eventually(
        "the queue holds the backlog",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let queued = own(&api, "keel_forward_queued_batches").await;
                let failed = own(&api, "keel_forward_failed_sends_total").await;
                (queued > 0.0 && failed > 0.0).then_some(())
            }
        },
    )
    .await;
    let (_, status) = get_json(&format!("{api}/api/v1/status/keel")).await;
    let target = &status["data"]["forward"][0];
    assert_eq!(target["kind"], "remote_write", "{status}");
    assert!(target["queued_batches"].as_u64() > Some(0), "{status}");
    assert!(
        target["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("api/v1/write")),
        "names the target: {status}"
    );

    let out = Command::new(KEEL)
        .args(["status", "--url", &api])
        .output()
        .expect("keel status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("batches queued") && text.contains("s behind"),
        "keel status shows the lag: {text}"
    );

    // Back: the backlog drains, nothing lost, nothing twice.
    let vm = victoria(port, vm_dir.path()).await;
    eventually(
        "all 1000 samples in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let vm = vm_url.clone();
            async move { (held(&vm).await == 1000).then_some(()) }
        },
    )
    .await;
    eventually("the queue is empty", Duration::from_secs(30), || {
        let api = api.clone();
        async move { (own(&api, "keel_forward_queued_batches").await == 0.0).then_some(()) }
    })
    .await;
    assert_eq!(own(&api, "keel_forward_lag_seconds").await, 0.0);

    // Older than local retention (1 h): a series only VictoriaMetrics
    // has, two hours ago, joined with what the collector holds now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let old = now - 2 * 3600;
    let line = format!(
        "{{\"metric\":{{\"__name__\":\"fwd_test\",\"batch\":\"0\"}},\"values\":[7],\"timestamps\":[{}]}}\n",
        old * 1000
    );
    let r = reqwest::Client::new()
        .post(format!("{vm_url}/api/v1/import"))
        .body(line)
        .send()
        .await
        .expect("import");
    assert!(r.status().is_success());
    let _ = reqwest::get(format!("{vm_url}/internal/force_flush")).await;
    let (_, body) = get_json(&format!(
        "{api}/api/v1/query_range?query=fwd_test%7Bbatch%3D%220%22%7D&start={}&end={now}&step=60",
        old - 60
    ))
    .await;
    let series = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(series.len(), 1, "one series, both parts joined: {body}");
    let values = series[0]["values"].as_array().cloned().unwrap_or_default();
    let first = &values[0];
    assert_eq!(first[1], "7", "the old point, from VictoriaMetrics: {body}");
    assert!(
        (first[0].as_f64().unwrap_or(0.0) - old as f64).abs() < 61.0,
        "{body}"
    );
    assert!(
        values
            .iter()
            .any(|v| v[0].as_f64().unwrap_or(0.0) > (now - 3600) as f64),
        "and the recent points: {body}"
    );
    assert!(body.get("warnings").is_none(), "{body}");
    // Instant at a time before the cutoff: the remote answers it.
    let (_, at) = get_json(&format!(
        "{api}/api/v1/query?query=fwd_test%7Bbatch%3D%220%22%7D&time={}",
        old + 30
    ))
    .await;
    assert_eq!(at["data"]["result"][0]["value"][1], "7", "{at}");

    // The remote down: the local part, and a warning saying what is missing.
    vm.stop();
    let (_, body) = get_json(&format!(
        "{api}/api/v1/query_range?query=fwd_test%7Bbatch%3D%220%22%7D&start={}&end={now}&step=60",
        old - 60
    ))
    .await;
    assert_eq!(body["status"], "success", "{body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("older than local retention")),
        "{body}"
    );
}

/// A plain collector on `dir` with OTLP/HTTP on `otlp_port` (its config
/// `yaml`): the child, its OTLP and API base URLs.
fn collector_on(dir: &std::path::Path, otlp_port: u16, yaml: &str) -> (Child, String, String) {
    std::fs::write(dir.join("keel.yaml"), yaml).expect("config");
    start_collector(collector_command_on(&dir.join("keel.yaml"), otlp_port), dir)
}

/// One log record of service `fwd` saying `message`, as OTLP/JSON.
async fn log(otlp: &str, message: &str) {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    let json = serde_json::json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fwd"}}]}, "scopeLogs": [{"logRecords": [{"timeUnixNano": now_ns.to_string(), "body": {"stringValue": message}}]}]}]});
    let r = reqwest::Client::new()
        .post(format!("{otlp}/v1/logs"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// The messages of service `fwd` the collector at `api` holds.
async fn fwd_messages(api: &str) -> Vec<String> {
    let (_, v) = get_json(&format!(
        "{api}/api/v1/logs/search?q=service:fwd&start=0&end=99999999999&limit=1000"
    ))
    .await;
    let mut out: Vec<String> = v["data"]["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["message"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// Logs (and spans) forwarded over OTLP to another collector, through a
/// queue that holds them while it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_on_to_another_collector_over_otlp_across_its_restart() {
    let _turn = heavy().await;
    let (up_dir, down_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let down_port = keel_testkit::free_port().expect("port");
    let (down, _, down_api) = collector_on(down_dir.path(), down_port, "collector: {}\n");
    let _stop_down = StopOnDrop(down.id() as i32);
    let (up, up_otlp, up_api) = collector_on(
        up_dir.path(),
        0,
        &format!(
            "collector:\n  forward:\n    otlp:\n    - url: http://127.0.0.1:{down_port}\n      signals: [logs]\n      retry: {{initial: 50ms, max: 500ms, timeout: 5s}}\n"
        ),
    );
    let _stop_up = StopOnDrop(up.id() as i32);
    log(&up_otlp, "first").await;
    eventually("the first record goes on", Duration::from_secs(30), || {
        let api = down_api.clone();
        async move { (fwd_messages(&api).await == ["first"]).then_some(()) }
    })
    .await;
    // Kept here too, searchable at the next commit of the local index
    // (which may come after the forward).
    eventually(
        "the first record stays here",
        Duration::from_secs(30),
        || {
            let api = up_api.clone();
            async move { (fwd_messages(&api).await == ["first"]).then_some(()) }
        },
    )
    .await;

    // Downstream stops; what comes meanwhile waits in the queue.
    let mut down = down;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(down.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = down.wait();
    log(&up_otlp, "second").await;
    eventually("the queue holds it", Duration::from_secs(30), || {
        let api = up_api.clone();
        async move {
            let (failed, queued) = (
                own(&api, "keel_forward_failed_sends_total").await,
                own(&api, "keel_forward_queued_batches").await,
            );
            (failed > 0.0 && queued == 1.0).then_some(())
        }
    })
    .await;
    let (down, _, down_api) = collector_on(down_dir.path(), down_port, "collector: {}\n");
    let _stop_down = StopOnDrop(down.id() as i32);
    eventually(
        "the second record goes on after the restart",
        Duration::from_secs(30),
        || {
            let api = down_api.clone();
            async move { (fwd_messages(&api).await == ["first", "second"]).then_some(()) }
        },
    )
    .await;
}
