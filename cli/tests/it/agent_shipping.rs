//! The agent against the real collector process: scrape failures are
//! `up 0` with a reason while other targets go on, and a collector outage
//! loses nothing the agent scraped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::urlencode;
use axum::Router;
use axum::routing::get;
use keel_agent::config::{AgentConfig, RetryConfig, ScrapeJob};
use keel_agent::run::Agent;
use keel_core::clock::{SharedClock, SystemClock};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Serve `app` on a free port; the address.
async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn job(name: &str, addr: SocketAddr, interval_ms: u64, timeout_ms: u64) -> ScrapeJob {
    ScrapeJob {
        job: name.into(),
        targets: vec![format!("http://{addr}/metrics")],
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        ..ScrapeJob::default()
    }
}

fn agent_config(dir: &std::path::Path, collector: &str, scrape: Vec<ScrapeJob>) -> AgentConfig {
    AgentConfig {
        collector: collector.into(),
        hostname: "test-host".into(),
        data_dir: dir.join("agent"),
        listen: "127.0.0.1:0".into(),
        otlp_receiver: "127.0.0.1:0".into(),
        retry: RetryConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        },
        scrape,
        ..AgentConfig::default()
    }
}

/// The value of an instant query that returns one series.
async fn scalar(api: &str, q: &str) -> Option<f64> {
    let (status, v) =
        crate::common::get_json(&format!("{api}/api/v1/query?query={}", urlencode(q))).await;
    if status != 200 {
        return None;
    }
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_hangs_answers_garbage_or_is_gone_is_up_0_and_others_go_on() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (collector, otlp, api) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _kill = KillOnDrop(collector);
    let good = serve(Router::new().route(
        "/metrics",
        get(|| async {
            "# TYPE reqs_total counter\nreqs_total{code=\"200\",job=\"inner\"} 41\nreqs_total{code=\"500\"} 1\n"
        }),
    ))
    .await;
    let hangs = serve(Router::new().route(
        "/metrics",
        get(|| async {
            std::future::pending::<()>().await;
            ""
        }),
    ))
    .await;
    let garbage =
        serve(Router::new().route("/metrics", get(|| async { "<html>\nnope\n</html>\n" }))).await;
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let config = agent_config(
        dir.path(),
        &otlp,
        vec![
            job("good", good, 100, 80),
            job("hangs", hangs, 100, 80),
            job("garbage", garbage, 100, 80),
            job("gone", gone, 100, 80),
        ],
    );
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");
    for (job, want) in [
        ("good", 1.0),
        ("hangs", 0.0),
        ("garbage", 0.0),
        ("gone", 0.0),
    ] {
        let q = format!("up{{job=\"{job}\"}}");
        let got = crate::common::eventually(&q, Duration::from_secs(20), || {
            let api = api.clone();
            let q = q.clone();
            async move { scalar(&api, &q).await }
        })
        .await;
        assert_eq!(got, want, "{job}");
    }
    // The good target's series, with Prometheus' collision rule.
    let v = crate::common::eventually("reqs_total", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            scalar(
                &api,
                "reqs_total{job=\"good\",exported_job=\"inner\",code=\"200\"}",
            )
            .await
        }
    })
    .await;
    assert_eq!(v, 41.0);
    // Exactly the labels Prometheus stores for it, and no target_info.
    let (_, v) = crate::common::get_json(&format!(
        "{api}/api/v1/series?match[]={}",
        urlencode("reqs_total{job=\"good\"}")
    ))
    .await;
    let mut names: Vec<&String> = v["data"][0].as_object().expect("a series").keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["__name__", "code", "exported_job", "instance", "job"],
        "{v}"
    );
    let (_, v) = crate::common::get_json(&format!("{api}/api/v1/query?query=target_info")).await;
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let status = agent.status();
    let reason = |job: &str| {
        status
            .targets
            .iter()
            .find(|t| t.job == job)
            .and_then(|t| t.error.clone())
            .unwrap_or_default()
    };
    assert!(reason("hangs").contains("timed out"), "{}", reason("hangs"));
    assert!(
        reason("garbage").contains("not the Prometheus text format"),
        "{}",
        reason("garbage")
    );
    assert!(
        reason("gone").contains("cannot connect"),
        "{}",
        reason("gone")
    );
    assert_eq!(reason("good"), "");
}

/// A target whose counter is the number of times it was scraped.
async fn counting_target() -> (SocketAddr, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    let addr = serve(Router::new().route(
        "/metrics",
        get(move || {
            let c = c.clone();
            async move {
                let i = c.fetch_add(1, Ordering::SeqCst) + 1;
                format!("# TYPE scrapes_total counter\nscrapes_total {i}\n")
            }
        }),
    ))
    .await;
    (addr, n)
}

use keel_testkit::Reaped as KillOnDrop;

fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_outage_loses_no_scrape_and_doubles_none() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (collector, otlp, api) = crate::common::spawn_collector(&data, 0, 0);
    let mut collector = KillOnDrop(collector);
    let (target, scrapes) = counting_target().await;
    let config = agent_config(dir.path(), &otlp, vec![job("count", target, 50, 40)]);
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");
    let q = "count_over_time(scrapes_total{job=\"count\"}[1h])";
    crate::common::eventually("first scrapes arrive", Duration::from_secs(20), || {
        let api = api.clone();
        async move { scalar(&api, q).await.filter(|n| *n >= 3.0) }
    })
    .await;
    // The collector dies; the agent goes on scraping into its buffer.
    kill(Pid::from_raw(collector.0.id() as i32), Signal::SIGKILL).expect("kill");
    let _ = collector.0.wait();
    crate::common::eventually(
        "batches buffer during the outage",
        Duration::from_secs(20),
        || {
            let s = agent.status();
            async move { (s.buffered_batches >= 20).then_some(()) }
        },
    )
    .await;
    let (_, metrics) = crate::common::get_text(&format!("http://{}/metrics", agent.addr)).await;
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("keel_agent_send_failures_total{") && l.contains("signal=\"metrics\"}")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        failures > 0,
        "sends failed while the collector was down:\n{metrics}"
    );
    let (collector, _, api) = crate::common::spawn_collector(&data, port(&otlp), port(&api));
    let _collector = KillOnDrop(collector);
    crate::common::eventually("the backlog drains", Duration::from_secs(30), || {
        let s = agent.status();
        async move { (s.buffered_batches <= 1).then_some(()) }
    })
    .await;
    // Stop scraping, and ship what is left with a fresh agent.
    agent.stop().await;
    let served = scrapes.load(Ordering::SeqCst);
    let config = agent_config(dir.path(), &otlp, Vec::new());
    let clock: SharedClock = Arc::new(SystemClock);
    let drain = Agent::start(config, clock).await.expect("agent restarts");
    crate::common::eventually("the rest drains", Duration::from_secs(30), || {
        let s = drain.status();
        async move { (s.buffered_batches == 0).then_some(()) }
    })
    .await;
    // Every scrape the target served is in the collector exactly once:
    // its value i arrived once for every i (sum of 1..=n, count n).
    let count = scalar(&api, q).await.expect("count");
    let sum = scalar(&api, "sum_over_time(scrapes_total{job=\"count\"}[1h])")
        .await
        .expect("sum");
    // The last scrape may have been served but cut by the stop.
    let n = count as u64;
    assert!(
        n == served || n + 1 == served,
        "stored {n}, served {served}"
    );
    assert_eq!(sum as u64, n * (n + 1) / 2, "each value once, none twice");
}

#[test]
fn install_writes_a_loadable_config_and_a_unit_and_uninstall_removes_them() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("etc/keel/agent.yaml");
    let unit = dir.path().join("systemd/keel-agent.service");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(crate::common::KEEL)
            .args(args)
            .output()
            .expect("run keel");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let c = config.to_str().expect("utf-8");
    let u = unit.to_str().expect("utf-8");
    run(&[
        "agent",
        "install",
        "--config-file",
        c,
        "--unit-file",
        u,
        "--collector",
        "http://10.0.0.5:4318",
    ]);
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    // The lean binary built beside keel runs the agent.
    assert!(
        unit_text.contains(&format!("keel-agent --config {c} run")),
        "{unit_text}"
    );
    assert!(unit_text.contains("WantedBy=multi-user.target"));
    // The config loads as is, with the collector given.
    let effective = run(&["--config", c, "config"]);
    assert!(effective.contains("http://10.0.0.5:4318"), "{effective}");
    // A second install keeps an edited config.
    std::fs::write(&config, "agent:\n  hostname: edited\n").expect("edit");
    run(&["agent", "install", "--config-file", c, "--unit-file", u]);
    assert_eq!(
        std::fs::read_to_string(&config).expect("config"),
        "agent:\n  hostname: edited\n"
    );
    run(&["agent", "uninstall", "--unit-file", u, "--purge", c]);
    assert!(!unit.exists() && !config.exists());
}

/// How many log records of `service` the collector holds, per message.
async fn messages(api: &str, service: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{api}/api/v1/logs/search?q=service:{service}&start=0&end=99999999999&limit=1000"
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (_, v) = crate::common::get_json(&url).await;
        for r in v["data"]["records"].as_array().into_iter().flatten() {
            *out.entry(r["message"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        match v["data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// How many log records match `q` (the histogram's total).
async fn count(api: &str, q: &str) -> u64 {
    let (_, v) = crate::common::get_json(&format!(
        "{api}/api/v1/logs/histogram?q={}&start=0&end=99999999999&step=99999999999",
        urlencode(q)
    ))
    .await;
    v["data"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b[1].as_u64())
        .sum()
}

fn append(path: &std::path::Path, lines: std::ops::Range<u32>) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for i in lines {
        writeln!(f, "{{\"level\":\"info\",\"message\":\"line {i}\"}}").expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailed_lines_arrive_exactly_once_across_rotation_truncation_and_restarts() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (collector, otlp, api) = crate::common::spawn_collector(&data, 0, 0);
    let _collector = KillOnDrop(collector);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("tailme.log");
    let config = || {
        let mut c = agent_config(dir.path(), &otlp, Vec::new());
        c.logs = vec![keel_agent::config::LogSource {
            path: logs.join("*.log").display().to_string(),
            service: String::new(),
            multiline_start: None,
            metrics: Vec::new(),
        }];
        c.log_poll_interval = Duration::from_millis(20);
        c
    };
    let start = || async {
        let clock: SharedClock = Arc::new(SystemClock);
        Agent::start(config(), clock).await.expect("agent starts")
    };
    let until = |n: usize| {
        let api = api.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let m = messages(&api, "tailme").await;
                if m.len() >= n {
                    return m;
                }
                if std::time::Instant::now() > deadline {
                    let missing: Vec<u32> = (0..n as u32)
                        .filter(|i| !m.contains_key(&format!("line {i}")))
                        .collect();
                    panic!("{n} distinct lines expected; missing {missing:?}");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    append(&log, 0..100);
    let agent = start().await;
    until(100).await;
    // Appends, then a restart with lines written while stopped.
    append(&log, 100..150);
    until(150).await;
    agent.stop().await;
    append(&log, 150..200);
    let agent = start().await;
    until(200).await;
    // Rotation (rename + create) while running; the old file gets more.
    std::fs::rename(&log, logs.join("tailme.log.1")).expect("rotate");
    append(&logs.join("tailme.log.1"), 200..210);
    append(&log, 210..260);
    until(260).await;
    // Rotation while stopped, then truncation.
    agent.stop().await;
    append(&log, 260..270);
    std::fs::rename(&log, logs.join("tailme.log.2")).expect("rotate");
    append(&log, 270..300);
    let agent = start().await;
    until(300).await;
    std::fs::write(&log, "").expect("truncate");
    append(&log, 300..320);
    let m = until(320).await;
    agent.stop().await;
    assert_eq!(m.len(), 320);
    let twice: Vec<_> = m.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "lines not exactly once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_agent_mid_send_and_mid_write_loses_and_doubles_nothing() {
    let _turn = crate::common::heavy().await;
    use rand::Rng;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("collector");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (collector, otlp, api) = crate::common::spawn_collector(&data, 0, 0);
    let _collector = KillOnDrop(collector);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("crashy.log");
    let config = dir.path().join("keel.yaml");
    std::fs::write(
        &config,
        format!(
            "agent:\n  collector: {otlp}\n  data_dir: {}\n  listen: 127.0.0.1:0\n  otlp_receiver: 127.0.0.1:0\n  host_metrics:\n    enabled: false\n  log_poll_interval: 5ms\n  retry:\n    initial: 10ms\n    max: 50ms\n  logs:\n    - path: {}\n",
            dir.path().join("agent").display(),
            logs.join("*.log").display()
        ),
    )
    .expect("config");
    let spawn = || {
        std::process::Command::new(crate::common::KEEL)
            .args(["--config", config.to_str().expect("utf-8"), "agent", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.stderr")).expect("stderr"))
            .spawn()
            .expect("spawn keel agent")
    };
    let mut written = 0u32;
    let mut rng = rand::rng();
    for _ in 0..12 {
        append(&log, written..written + 3_000);
        written += 3_000;
        let mut agent = spawn();
        // Kill it at a random moment: reading, writing its buffer, or
        // with a request to the collector in flight.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..250))).await;
        kill(Pid::from_raw(agent.id() as i32), Signal::SIGKILL).expect("kill");
        let _ = agent.wait();
    }
    let agent = KillOnDrop(spawn());
    // Wait on the count (cheap), then read every record once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&api, "service:crashy").await < u64::from(written)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = messages(&api, "crashy").await;
    drop(agent);
    let missing: Vec<u32> = (0..written)
        .filter(|i| !m.contains_key(&format!("line {i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<_> = m.iter().filter(|(_, n)| **n != 1).take(10).collect();
    assert!(twice.is_empty(), "lines stored twice: {twice:?}");
    assert_eq!(m.len(), written as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_export_otlp_to_the_local_receiver_and_it_reaches_the_collector_with_the_host() {
    let _turn = crate::common::heavy().await;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let (collector, otlp, api) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _collector = KillOnDrop(collector);
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(agent_config(dir.path(), &otlp, Vec::new()), clock)
        .await
        .expect("agent starts");
    let receiver = format!("http://{}", agent.otlp_addr.expect("receiver runs"));
    let s = |v: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: s("recv"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now_ns,
                    body: s("via the agent, protobuf"),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{receiver}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let json = serde_json::json!({"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "recv"}}]}, "scopeLogs": [{"logRecords": [{"timeUnixNano": now_ns.to_string(), "body": {"stringValue": "via the agent, JSON"}}]}]}]});
    let r = client
        .post(format!("{receiver}/v1/logs"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = client
        .post(format!("{receiver}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400, "malformed input is refused, not buffered");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&api, "service:recv AND host:test-host").await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both records reach the collector with host.name"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_become_request_error_and_duration_series_at_the_collector() {
    let _turn = crate::common::heavy().await;
    use keel_agent::config::{DurationUnit, LogMetricsRule, LogSource};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("c");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (collector, otlp, api) = crate::common::spawn_collector(&data, 0, 0);
    let _collector = KillOnDrop(collector);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let rule = |name: &str| LogMetricsRule {
        name: name.into(),
        regex: None,
        filter: None,
        status_field: "status".into(),
        duration_field: Some("duration".into()),
        duration_unit: DurationUnit::Ms,
        error_status: 500,
        labels: vec!["method".into()],
        buckets: vec![0.1, 1.0],
        interval: Duration::from_millis(50),
    };
    let mut config = agent_config(dir.path(), &otlp, Vec::new());
    config.log_poll_interval = Duration::from_millis(20);
    config.logs = vec![
        // JSON access lines among other lines: a filter picks them.
        LogSource {
            path: logs.join("app.log").display().to_string(),
            service: String::new(),
            multiline_start: None,
            metrics: vec![LogMetricsRule {
                filter: Some("\"access\"".into()),
                ..rule("app_http")
            }],
        },
        // Plain text lines read by a regex.
        LogSource {
            path: logs.join("edge.log").display().to_string(),
            service: "edge".into(),
            multiline_start: None,
            metrics: vec![LogMetricsRule {
                regex: Some(
                    r#"^(?P<method>[A-Z]+) \S+ (?P<status>\d{3}) (?P<duration>[0-9.]+)ms$"#.into(),
                ),
                ..rule("edge_http")
            }],
        },
    ];
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(config, clock).await.expect("agent starts");
    let mut app = String::new();
    let mut edge = String::new();
    // 300 requests: every 10th a 503; durations 50 ms or 500 ms.
    for i in 0..300 {
        let status = if i % 10 == 0 { 503 } else { 200 };
        let ms = if i % 2 == 0 { 50 } else { 500 };
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        app += &format!(
            "{{\"target\":\"access\",\"service\":\"shop\",\"method\":\"{method}\",\"status\":{status},\"duration\":{ms}}}\n"
        );
        app += "{\"target\":\"app\",\"message\":\"not a request\"}\n";
        edge += &format!("{method} /x {status} {ms}ms\n");
    }
    edge += "garbage that is no request\n";
    std::fs::write(logs.join("app.log"), app).expect("write");
    std::fs::write(logs.join("edge.log"), edge).expect("write");
    for (prefix, job) in [("app_http", "shop"), ("edge_http", "edge")] {
        let want = [
            (format!("sum({prefix}_requests_total)"), 300.0),
            (
                format!("sum({prefix}_requests_total{{code=\"503\"}})"),
                30.0,
            ),
            (
                format!("sum({prefix}_errors_total{{job=\"{job}\",instance=\"test-host\"}})"),
                30.0,
            ),
            (
                format!("{prefix}_requests_total{{method=\"POST\",code=\"200\"}}"),
                90.0,
            ),
            (
                format!("sum({prefix}_request_duration_seconds_bucket{{le=\"0.1\"}})"),
                150.0,
            ),
            (
                format!("sum({prefix}_request_duration_seconds_count)"),
                300.0,
            ),
            (format!("sum({prefix}_request_duration_seconds_sum)"), 82.5),
        ];
        for (q, v) in want {
            crate::common::eventually(&q, Duration::from_secs(20), || {
                let (api, q) = (api.clone(), q.clone());
                async move { scalar(&api, &q).await.filter(|got| (got - v).abs() < 1e-6) }
            })
            .await;
        }
    }
    let (_, own) = crate::common::get_text(&format!("http://{}/metrics", agent.addr)).await;
    assert!(
        own.contains("keel_agent_log_metrics_unmatched_total 1\n"),
        "the one garbage line is counted, the filtered lines are not: {own}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_targets_are_scraped_when_listed_and_dropped_when_gone() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("c");
    std::fs::create_dir_all(&data).expect("mkdir");
    let (collector, otlp, api) = crate::common::spawn_collector(&data, 0, 0);
    let _collector = KillOnDrop(collector);
    let (a, _) = counting_target().await;
    let (b, b_scrapes) = counting_target().await;
    let sd = dir.path().join("targets.json");
    let write = |text: String| {
        let tmp = dir.path().join("targets.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &sd).expect("rename");
    };
    write(format!(
        r#"[{{"targets":["{a}"],"labels":{{"job":"sd-a","team":"x"}}}}]"#
    ));
    let job = ScrapeJob {
        job: "sd".into(),
        file_sd: vec![dir.path().join("*.json").display().to_string()],
        refresh_interval: Duration::from_millis(50),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        ..ScrapeJob::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let agent = Agent::start(agent_config(dir.path(), &otlp, vec![job]), clock)
        .await
        .expect("agent starts");
    let jobs = |agent: &Agent| -> Vec<String> {
        let mut j: Vec<String> = agent
            .status()
            .targets
            .iter()
            .map(|t| format!("{} {}", t.job, t.url))
            .collect();
        j.sort();
        j
    };
    crate::common::eventually(
        "the listed target is scraped",
        Duration::from_secs(20),
        || {
            let api = api.clone();
            async move { scalar(&api, "up{job=\"sd-a\",team=\"x\"} == 1").await }
        },
    )
    .await;
    // A second target appears, under the scrape job's own name.
    write(format!(
        r#"[{{"targets":["{a}"],"labels":{{"job":"sd-a","team":"x"}}}},{{"targets":["{b}"]}}]"#
    ));
    crate::common::eventually("the new target is scraped", Duration::from_secs(20), || {
        let api = api.clone();
        async move { scalar(&api, &format!("up{{job=\"sd\",instance=\"{b}\"}} == 1")).await }
    })
    .await;
    assert_eq!(
        jobs(&agent),
        vec![
            format!("sd http://{b}/metrics"),
            format!("sd-a http://{a}/metrics")
        ]
    );
    // A half-written file keeps the last good targets.
    write("[{\"targets\": [".into());
    // Nothing to await for "nothing changes": give the agent six
    // refreshes to (wrongly) drop them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jobs(&agent).len(), 2, "a broken file drops no target");
    // b is gone from the file: no longer scraped, no longer in the status.
    write(format!(
        r#"[{{"targets":["{a}"],"labels":{{"job":"sd-a","team":"x"}}}}]"#
    ));
    crate::common::eventually("b leaves the status", Duration::from_secs(20), || {
        let j = jobs(&agent);
        async move { (j.len() == 1).then_some(()) }
    })
    .await;
    // Its series are stale at once (Prometheus' end-of-run markers), not
    // answering for the 5-minute lookback.
    crate::common::eventually("b's series are stale", Duration::from_secs(20), || {
        let api = api.clone();
        async move {
            let q = format!("up{{job=\"sd\",instance=\"{b}\"}}");
            let (_, v) =
                crate::common::get_json(&format!("{api}/api/v1/query?query={}", urlencode(&q)))
                    .await;
            (v["data"]["result"] == serde_json::json!([])).then_some(())
        }
    })
    .await;
    assert_eq!(
        scalar(&api, "up{job=\"sd-a\",team=\"x\"}").await,
        Some(1.0),
        "a is still up"
    );
    let after = b_scrapes.load(Ordering::SeqCst);
    // Four scrape intervals in which b must not be scraped (one already
    // in flight may finish).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b_scrapes.load(Ordering::SeqCst) <= after + 1,
        "a dropped target is not scraped again"
    );
    agent.stop().await;
}

/// A collector that requires a sender token: the agent with the token
/// (from a file) ships; one without is refused, says why in its status,
/// and keeps what it scraped buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_ships_with_its_sender_token_and_one_without_is_refused() {
    const TOKEN: &str = "agent-fleet-token-5d2b8e";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cc = keel_collector::server::CollectorConfig {
        data_dir: dir.path().join("collector"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..Default::default()
    };
    cc.auth.senders = vec![keel_auth::SenderToken {
        name: "fleet".into(),
        token: keel_core::secret::Secret::new(TOKEN),
        ..Default::default()
    }];
    let clock: SharedClock = Arc::new(SystemClock);
    let c = keel_collector::server::start(&cc, clock.clone())
        .await
        .expect("collector starts");
    let (otlp, api) = (
        format!("http://{}", c.otlp_http),
        format!("http://{}", c.api),
    );
    let (target, _) = counting_target().await;

    let token_file = dir.path().join("fleet.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let mut with = agent_config(
        &dir.path().join("a"),
        &otlp,
        vec![job("with", target, 50, 40)],
    );
    with.collector_token_file = token_file;
    let without = agent_config(
        &dir.path().join("b"),
        &otlp,
        vec![job("without", target, 50, 40)],
    );
    let with = Agent::start(with, clock.clone())
        .await
        .expect("agent starts");
    let without = Agent::start(without, clock).await.expect("agent starts");

    crate::common::eventually(
        "the agent with the token ships",
        Duration::from_secs(20),
        || {
            let api = api.clone();
            async move {
                scalar(&api, "count_over_time(scrapes_total{job=\"with\"}[1h])")
                    .await
                    .filter(|n| *n >= 3.0)
            }
        },
    )
    .await;
    let refused = crate::common::eventually(
        "the agent without one is refused, and says so",
        Duration::from_secs(20),
        || {
            let s = without.status();
            async move {
                s.last_send_error
                    .filter(|e| e.contains("401"))
                    .filter(|_| s.buffered_batches > 0)
            }
        },
    )
    .await;
    assert!(refused.contains("sender token"), "{refused}");
    assert_eq!(
        scalar(&api, "count(scrapes_total{job=\"without\"}) or vector(0)").await,
        Some(0.0),
        "nothing of the refused agent is stored"
    );
    with.stop().await;
    without.stop().await;
}

/// Mutual TLS (`collector.tls.client_ca_file`): an agent presenting a
/// certificate the CA signed ships; one without a certificate fails the
/// handshake and says so in its status, keeping its batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_its_client_certificate_ships_and_one_without_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = keel_testkit::https::Pki::new(dir.path()).expect("certificates");
    let mut cc = keel_collector::server::CollectorConfig {
        data_dir: dir.path().join("collector"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        ..Default::default()
    };
    cc.tls = keel_tls::server::ServerTlsConfig {
        cert_file: pki.cert_file.clone(),
        key_file: pki.key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let c = keel_collector::server::start(&cc, clock.clone())
        .await
        .expect("collector starts");
    let otlp = format!("https://{}", c.otlp_http);
    let (target, _) = counting_target().await;
    let mut with = agent_config(
        &dir.path().join("a"),
        &otlp,
        vec![job("with", target, 50, 40)],
    );
    with.collector_tls = keel_tls::TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(pki.client_cert_file.clone()),
        key_file: Some(pki.client_key_file.clone()),
    };
    let mut without = agent_config(
        &dir.path().join("b"),
        &otlp,
        vec![job("without", target, 50, 40)],
    );
    without.collector_tls = keel_tls::TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..Default::default()
    };
    let with = Agent::start(with, clock.clone())
        .await
        .expect("agent starts");
    let without = Agent::start(without, clock).await.expect("agent starts");
    crate::common::eventually(
        "the agent with its certificate ships",
        Duration::from_secs(20),
        || {
            let jobs = c.store.label_values("job");
            async move { jobs.iter().any(|j| j == "with").then_some(()) }
        },
    )
    .await;
    let refused = crate::common::eventually(
        "the agent without one is refused, and says so",
        Duration::from_secs(20),
        || {
            let s = without.status();
            async move { s.last_send_error.filter(|_| s.buffered_batches > 0) }
        },
    )
    .await;
    // The server's CertificateRequired alert, or (TLS 1.3 lets the client
    // send first) the connection it closed.
    assert!(refused.contains("/v1/metrics"), "{refused}");
    assert!(
        !c.store.label_values("job").iter().any(|j| j == "without"),
        "nothing of the refused agent is stored"
    );
    with.stop().await;
    without.stop().await;
}
