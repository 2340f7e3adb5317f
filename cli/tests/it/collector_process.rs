//! The collector as a process: `kill -9` under ingest loses nothing
//! acknowledged, and `keel import` backfills history.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::KEEL;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, number_data_point};
use prost::Message;

const T0: u64 = 1_763_856_000_000;

/// Start `keel collector` on free ports and read the addresses it prints.
fn spawn(dir: &std::path::Path) -> (Child, String, String) {
    crate::common::spawn_collector(dir, 0, 0)
}

fn batch(writer: &str, i: u64) -> Vec<u8> {
    let point = NumberDataPoint {
        time_unix_nano: (T0 + i * 1000) * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(i as f64)),
        ..Default::default()
    };
    crate::common::gauge_request(Some(writer), "crash.probe", vec![point]).encode_to_vec()
}

/// Drive `writers` concurrent writers at a running collector, each
/// calling `send(writer, i)` for i = 0, 1, … until it fails; `send` answers
/// how many records the writer has had acknowledged after batch `i`, or
/// None when the batch was not acknowledged. Once every writer has had
/// `ready_at` batches acknowledged, SIGKILL the collector; returns each
/// writer's acknowledged count once all have stopped.
async fn kill_during_ingest<F, Fut>(
    child: Child,
    writers: usize,
    ready_at: u64,
    send: F,
) -> Vec<u64>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<u64>> + Send,
{
    let acked: Vec<Arc<AtomicU64>> = (0..writers).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(writers);
    let mut tasks = Vec::new();
    for (w, count) in acked.iter().enumerate() {
        let (count, ready, send) = (count.clone(), ready_tx.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let Some(n) = send(w, i).await else { return };
                count.store(n, Ordering::SeqCst);
                if i + 1 == ready_at {
                    let _ = ready.send(()).await;
                }
            }
        }));
    }
    for _ in 0..writers {
        ready_rx
            .recv()
            .await
            .expect("every writer reached its acknowledged batches");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("kill -9");
    for t in tasks {
        t.await.expect("writer");
    }
    let mut child = child;
    let _ = child.wait();
    acked.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_ingest_loses_no_acknowledged_sample() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, otlp, _) = spawn(dir.path());
    let writers = ["w1", "w2", "w3"];
    let http = reqwest::Client::new(); // one connection pool for all writers
    let acked = kill_during_ingest(child, writers.len(), 300, move |w, i| {
        let (otlp, w, http) = (otlp.clone(), writers[w], http.clone());
        async move {
            let r = http
                .post(format!("{otlp}/v1/metrics"))
                .header("content-type", "application/x-protobuf")
                .body(batch(w, i))
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            let body = r.bytes().await.ok()?;
            let resp = ExportMetricsServiceResponse::decode(body).expect("protobuf answer");
            assert!(resp.partial_success.is_none(), "{resp:?}");
            Some(i + 1) // samples 0..=i acknowledged
        }
    })
    .await;

    let (mut child, _, api) = spawn(dir.path());
    for (w, n) in writers.iter().zip(acked) {
        let at = (T0 + n * 1000) as f64 / 1000.0;
        let stored = crate::common::query_value(
            &api,
            &format!("count_over_time(crash_probe{{job=\"{w}\"}}[1d])"),
            Some(at),
        )
        .await;
        assert!(
            stored >= n as f64,
            "{w}: {n} samples acknowledged, {stored} found after kill -9"
        );
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_import_backfills_days_of_history_that_promql_then_reads() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let start = now - 3 * 86_400;
    let mut text = String::from(
        "# HELP backfill_requests_total Requests.\n# TYPE backfill_requests_total counter\n",
    );
    // Three days, every minute, two series, ending a day ago.
    for m in 0..(2 * 1440u64) {
        for (inst, step) in [("a", 1), ("b", 2)] {
            text.push_str(&format!(
                "backfill_requests_total{{instance=\"{inst}\"}} {} {}\n",
                m * step,
                start + m * 60
            ));
        }
    }
    text.push_str("# EOF\n");
    let file = dir.path().join("history.om");
    std::fs::write(&file, &text).expect("write");
    let out = Command::new(KEEL)
        .args(["import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("5760 samples of 2 series"), "{said}");

    let bad = dir.path().join("bad.om");
    std::fs::write(&bad, "ok_metric 1 1000\nbroken{x=1} 2 1000\n").expect("write");
    let out = Command::new(KEEL)
        .args(["import"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("import");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.om:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut child, _, api) = spawn(dir.path());
    // While the collector runs, its data dir cannot be imported into.
    let out = Command::new(KEEL)
        .args(["import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("import");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another Keel process"));
    let at = start + (2 * 1440 - 1) * 60;
    let v = crate::common::query_value(
        &api,
        "sum(increase(backfill_requests_total[1d]))",
        Some(at as f64),
    )
    .await;
    // 1440 minutes × (1 + 2) per minute, extrapolated over the window.
    assert!((v - 3.0 * 1440.0).abs() < 10.0, "found {v}");

    // keel query prints the same answer as a table, and as JSON.
    let expr = "backfill_requests_total";
    let out = Command::new(KEEL)
        .args(["query", expr, "--time", &at.to_string(), "--url", &api])
        .output()
        .expect("keel query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("SERIES"), "{table}");
    assert!(
        table.contains("backfill_requests_total{instance=\"a\"}  2879") && table.contains("5758"),
        "{table}"
    );
    let out = Command::new(KEEL)
        .args(["query", "nope(", "--url", &api])
        .output()
        .expect("keel query");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad_data"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Prometheus 3's annotations go to stderr, the table stays clean.
    let out = Command::new(KEEL)
        .args([
            "query",
            "quantile(2, backfill_requests_total)",
            "--time",
            &at.to_string(),
            "--url",
            &api,
        ])
        .output()
        .expect("keel query");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: PromQL warning: quantile value should be between 0 and 1, got 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SERIES"));
    let out = Command::new(KEEL)
        .args([
            "query",
            expr,
            "--time",
            &at.to_string(),
            "--url",
            &api,
            "--json",
        ])
        .output()
        .expect("keel query --json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["data"]["result"].as_array().map(Vec::len), Some(2));
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

/// A real Prometheus server, scraping itself, remote-writes to Keel; its
/// series come back through Keel's PromQL API with their labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_remote_writes_into_keel() {
    let _turn = crate::common::heavy().await;
    if std::env::var_os("KEEL_TEST_PROMETHEUS").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_PROMETHEUS=1 with Debian's prometheus installed (.ci/run does)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut keel, _, api) = spawn(dir.path());
    let prom = keel_testkit::server::Server::prometheus(
        dir.path(),
        |port| format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {api}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n"
        ),
        &[],
    )
    .await
    .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        if let Some(s) = crate::common::query(&api, "up{job=\"self\"}", None)
            .await
            .into_iter()
            .next()
        {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let prom_url = prom.url.clone();
    drop(prom);
    let _ = kill(Pid::from_raw(keel.id() as i32), Signal::SIGKILL);
    let _ = keel.wait();
    let s = found.unwrap_or_else(|| {
        panic!(
            "no remote-written series arrived: {}",
            std::fs::read_to_string(dir.path().join("prometheus.stderr")).unwrap_or_default()
        )
    });
    assert_eq!(s["value"][1], "1", "{s}");
    assert_eq!(
        s["metric"]["instance"],
        prom_url.trim_start_matches("http://"),
        "{s}"
    );
}

/// Matching log records in the last day, from the histogram API.
async fn log_count(api: &str, q: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}/api/v1/logs/histogram"))
        .query(&[
            ("q", q.to_owned()),
            ("start", format!("{:.3}", now - 86_400.0)),
            ("end", format!("{:.3}", now + 60.0)),
            ("step", "1d".to_owned()),
        ])
        .send()
        .await
        .expect("histogram")
        .json()
        .await
        .expect("json");
    body["data"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b[1].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_log_ingest_loses_no_acknowledged_record() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _, api) = spawn(dir.path());
    let writers = ["w1", "w2"];
    let http = reqwest::Client::new(); // one connection pool for all writers
    let acked = kill_during_ingest(child, writers.len(), 100, move |w, i| {
        let (api, w, http) = (api.clone(), writers[w], http.clone());
        async move {
            let body: String = (0..10)
                .map(|k| format!("{{\"level\":\"info\",\"message\":\"batch {i} line {k}\",\"writer\":\"{w}\"}}\n"))
                .collect();
            let r = http
                .post(format!("{api}/api/v1/logs"))
                .body(body)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some((i + 1) * 10)
        }
    })
    .await;

    let (mut child, _, api) = spawn(dir.path());
    for (w, n) in writers.iter().zip(acked) {
        // Replayed records are committed before the collector listens.
        let found = log_count(&api, &format!("attributes.writer:{w}")).await;
        assert!(
            found >= n,
            "{w}: {n} records acknowledged, {found} found after kill -9"
        );
        assert!(
            found <= n + 10,
            "{w}: {found} found, more than the {n} acknowledged + one batch in flight: records doubled?"
        );
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_logs_prints_matches_and_follow_streams_new_ones() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut collector, _, api) = spawn(dir.path());
    let http = reqwest::Client::new();
    let post = |line: &str| {
        http.post(format!("{api}/api/v1/logs"))
            .body(line.to_owned())
            .send()
    };
    let r = post("{\"level\":\"error\",\"service\":\"payment\",\"message\":\"card declined\",\"order\":42}\n{\"level\":\"info\",\"service\":\"payment\",\"message\":\"all good\"}\n").await.expect("post");
    assert_eq!(r.status(), 200);
    while log_count(&api, "*").await < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = Command::new(KEEL)
        .args(["logs", "level:error", "--since", "1h", "--url", &api])
        .output()
        .expect("keel logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ERROR payment card declined") && text.contains("order=42"),
        "{text}"
    );
    assert!(!text.contains("all good"), "{text}");
    let out = Command::new(KEEL)
        .args(["logs", "*", "--json", "--url", &api])
        .output()
        .expect("keel logs --json");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["message"], "card declined", "oldest first");
    // A bad query is an error naming the position.
    let out = Command::new(KEEL)
        .args(["logs", "level:", "--url", &api])
        .output()
        .expect("keel logs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position 6"));

    // --follow prints what was there, then what arrives.
    let mut follow = Command::new(KEEL)
        .args([
            "logs",
            "service:payment",
            "--follow",
            "--since",
            "1h",
            "--url",
            &api,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("keel logs --follow");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) => continue,
                Err(_) => panic!("keel logs --follow never printed {needle:?}"),
            }
        }
    };
    wait_for("all good");
    let r = post("{\"level\":\"warn\",\"service\":\"payment\",\"message\":\"retrying charge\"}\n")
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    wait_for("retrying charge");
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = kill(Pid::from_raw(collector.id() as i32), Signal::SIGKILL);
    let _ = collector.wait();
}

/// A trace of 10 spans whose id is derived from (writer, i).
fn trace_batch(writer: u8, i: u64) -> (String, Vec<u8>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let mut trace_id = vec![writer, 0xee, 0, 0, 0, 0, 0, 0];
    trace_id.extend_from_slice(&(i + 1).to_be_bytes());
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    let t = T0 * 1_000_000 + i * 1_000_000;
    let spans = (0..10u8)
        .map(|s| Span {
            trace_id: trace_id.clone(),
            span_id: vec![1, 0, 0, 0, 0, 0, 0, s + 1],
            parent_span_id: if s == 0 {
                Vec::new()
            } else {
                vec![1, 0, 0, 0, 0, 0, 0, 1]
            },
            name: format!("op {s}"),
            start_time_unix_nano: t,
            end_time_unix_nano: t + 1_000,
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (hex, req.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_span_ingest_loses_no_acknowledged_span() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, otlp, _) = spawn(dir.path());
    let writers = [1u8, 2u8];
    let http = reqwest::Client::new(); // one connection pool for all writers
    let acked = kill_during_ingest(child, writers.len(), 100, move |w, i| {
        let (otlp, w, http) = (otlp.clone(), writers[w], http.clone());
        async move {
            let (_, body) = trace_batch(w, i);
            let r = http
                .post(format!("{otlp}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(i + 1)
        }
    })
    .await;

    let (mut child, _, api) = spawn(dir.path());
    let http = reqwest::Client::new();
    for (w, n) in writers.iter().zip(acked) {
        for i in 0..n {
            let (id, _) = trace_batch(*w, i);
            let body: serde_json::Value = http
                .get(format!("{api}/api/v1/traces/{id}"))
                .send()
                .await
                .expect("trace")
                .json()
                .await
                .expect("json");
            let spans = body["data"]["spans"].as_array().map_or(0, Vec::len);
            assert_eq!(
                spans, 10,
                "writer {w}, trace {i} of {n} acknowledged: {body}"
            );
        }
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
}
