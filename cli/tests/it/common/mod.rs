//! Helpers shared by the integration tests: a fast-ticking sample-app
//! config, starting it from the real `keel` binary, and a load target that
//! records every outcome.
#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_sampleapp::config::SampleAppConfig;
use keel_sampleapp::load::{HttpTarget, Outcome, RequestKind, Target};
use keel_sampleapp::supervisor::{Endpoints, Supervisor};

use tokio::sync::watch;

/// The binary under test.
pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Tests that run a whole sample app take turns: on two cores, several at
/// once would make health-check timing meaningless. All the integration
/// tests are one binary, so the turn spans every file.
pub use keel_testkit::turn::{take as heavy, take_blocking as heavy_blocking};

/// Health interval used by the tests (the default is 1 s).
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// A config on free ports, in `dir`, with quick health checks.
pub fn test_config(dir: &Path) -> SampleAppConfig {
    let mut c = SampleAppConfig {
        data_dir: dir.to_path_buf(),
        ..SampleAppConfig::default()
    };
    c.lb.port = 0;
    c.supervisor.port = 0;
    c.supervisor.restart_backoff = Duration::from_millis(100);
    c.supervisor.stop_timeout = Duration::from_secs(10);
    c.lb.health.interval = HEALTH_INTERVAL;
    c.lb.health.timeout = Duration::from_millis(200);
    c
}

pub async fn start(config: SampleAppConfig) -> (Supervisor, Endpoints) {
    Supervisor::start(config, KEEL.into())
        .await
        .expect("sample app starts")
}

/// Poll `check` every 25 ms until it returns `Some`, or fail after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    keel_testkit::until(what, limit, async || check().await).await
}

/// Wraps the real HTTP target and records when each request was sent and
/// how it ended; `done` counts completions so tests can wait on progress.
pub struct Recording {
    inner: HttpTarget,
    pub log: Arc<Mutex<Vec<(Instant, Outcome)>>>,
    pub done: watch::Sender<u64>,
}

impl Recording {
    pub fn new(base: &str) -> Arc<Self> {
        Arc::new(Self {
            inner: HttpTarget::new(base, Duration::from_secs(10)),
            log: Arc::new(Mutex::new(Vec::new())),
            done: watch::Sender::new(0),
        })
    }

    /// Wait until at least `n` requests have completed.
    pub async fn wait_done(&self, n: u64) {
        let mut rx = self.done.subscribe();
        rx.wait_for(|d| *d >= n).await.expect("recorder alive");
    }

    pub fn outcomes(&self) -> Vec<(Instant, Outcome)> {
        self.log.lock().expect("log").clone()
    }
}

impl Target for Recording {
    fn send(&self, kind: RequestKind) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'static>> {
        let sent = Instant::now();
        let fut = self.inner.send(kind);
        let log = self.log.clone();
        let done = self.done.clone();
        Box::pin(async move {
            let o = fut.await;
            log.lock().expect("log").push((sent, o.clone()));
            done.send_modify(|d| *d += 1);
            o
        })
    }
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

/// The result of the instant query `expr` on the API at `api`, at `time`
/// (Unix seconds; the server's now without one): `data.result`, empty
/// when the query failed or found nothing.
pub async fn query(api: &str, expr: &str, time: Option<f64>) -> Vec<serde_json::Value> {
    let at = time.map(|t| format!("&time={t}")).unwrap_or_default();
    let (_, body) = get_json(&format!("{api}/api/v1/query?query={}{at}", urlencode(expr))).await;
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of an instant query's first series, 0 when there is none.
pub async fn query_value(api: &str, expr: &str, time: Option<f64>) -> f64 {
    query(api, expr, time)
        .await
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An agent that ships to `collector` (keeping its buffer under `dir`),
/// scraping `job` and nothing else: no host metrics, no OTLP receiver,
/// its own listener on a free port.
pub fn scraping_agent(
    dir: &Path,
    collector: String,
    job: keel_agent::config::ScrapeJob,
) -> keel_agent::config::AgentConfig {
    keel_agent::config::AgentConfig {
        collector,
        hostname: "test-host".into(),
        data_dir: dir.join("agent"),
        listen: "127.0.0.1:0".into(),
        otlp_receiver: String::new(),
        scrape: vec![job],
        host_metrics: keel_agent::config::HostMetricsConfig {
            enabled: false,
            ..Default::default()
        },
        ..keel_agent::config::AgentConfig::default()
    }
}

/// Percent-encode a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn get_text(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

/// Start `keel collector` (port 0: a free one) on `dir` and read the
/// OTLP/HTTP and API base URLs it prints.
pub fn spawn_collector(dir: &Path, otlp_port: u16, api_port: u16) -> (Child, String, String) {
    spawn_collector_under(&[], dir, otlp_port, api_port)
}

/// As [`spawn_collector`], run by `launcher` (e.g. `prlimit --fsize=…`).
pub fn spawn_collector_under(
    launcher: &[&str],
    dir: &Path,
    otlp_port: u16,
    api_port: u16,
) -> (Child, String, String) {
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(KEEL);
            c
        }
        None => Command::new(KEEL),
    };
    command.args([
        "collector",
        "--otlp-port",
        &otlp_port.to_string(),
        "--api-port",
        &api_port.to_string(),
        "--grpc-port",
        "0",
    ]);
    start_collector(command, dir)
}

/// `keel --config CONFIG collector` on free ports, for [`start_collector`].
pub fn collector_command(config: &Path) -> Command {
    collector_command_on(config, 0)
}

/// As [`collector_command`], OTLP/HTTP on `otlp_port` (a restart keeps
/// the address its senders know).
pub fn collector_command_on(config: &Path, otlp_port: u16) -> Command {
    let mut command = Command::new(KEEL);
    command
        .arg("--config")
        .arg(config)
        .args([
            "collector",
            "--api-port",
            "0",
            "--grpc-port",
            "0",
            "--otlp-port",
        ])
        .arg(otlp_port.to_string())
        .stdin(Stdio::null());
    command
}

/// Spawn `command` (a `keel collector` and its flags) on `dir` and read
/// the OTLP/HTTP and API base URLs it prints.
pub fn start_collector(mut command: Command, dir: &Path) -> (Child, String, String) {
    let mut child = command
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("collector.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn keel collector");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Lines before (the controller's, a follower's) are passed over.
    let mut url = |label: &str| -> String {
        let line = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "keel collector exited: {}",
                    std::fs::read_to_string(dir.join("collector.stderr")).unwrap_or_default()
                );
            };
            if line.contains(label) {
                break line;
            }
        };
        let u = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("url")
            .to_owned();
        u.split('/').take(3).collect::<Vec<_>>().join("/")
    };
    let otlp = url("OTLP/HTTP");
    let api = url("PromQL API");
    (child, otlp, api)
}

/// Ctrl-C for a process when dropped (a no-op once it has exited).
pub struct StopOnDrop(pub i32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGINT,
        );
    }
}

/// `keel up` in `dir` on free ports (its stderr in `dir/keel-up.stderr`),
/// with `args` added; the child and what it printed up to "Press Ctrl-C".
pub async fn keel_up(dir: &Path, args: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(KEEL)
        .args(args)
        .args([
            "up",
            "--lb-port",
            "0",
            "--supervisor-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .current_dir(dir)
        .envs(keel_testkit::free_ports::ENV)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("keel-up.stderr")).expect("stderr"))
        .spawn()
        .expect("spawn keel up");
    // A failed assertion must not leave keel up and its sample app running
    // (they would load the machine for every later test).
    let guard = StopOnDrop(child.id() as i32);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("keel up ready in time")
        .expect("output");
    std::mem::forget(guard);
    (child, lines)
}

/// A client carrying the token `keel up` made for its supervisor (in
/// its data directory `dir`), as the controller and `keel scenario` do.
pub fn supervisor_client(dir: &Path) -> reqwest::Client {
    let path = keel_sampleapp::supervisor::Supervisor::token_file(dir);
    let token = keel_core::secret::Secret::default()
        .token_or_file(&path, "token")
        .expect("keel up's supervisor token");
    reqwest::Client::builder()
        .default_headers(keel_tls::bearer(token.as_deref()).expect("token header"))
        .build()
        .expect("client")
}

/// GET `url` with `client`: the status and the JSON body.
pub async fn get_json_with(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = client.get(url).send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

/// The URL printed on the line starting with `label`.
pub fn printed_url(lines: &[String], label: &str) -> String {
    lines
        .iter()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap_or_else(|| panic!("no {label} URL in {lines:#?}"))
        .to_owned()
}

/// A `controller` section for `keel up` with short windows: the web tier
/// between 2 and 5 instances at 60 requests/s each, evaluated every 1 s,
/// panic on a 3 s window, scaling down after `scale_down_window` (also
/// its memory of bursts: the windows are compressed).
pub fn fast_web_policy(scale_down_window: &str) -> String {
    format!(
        r#"controller:
  interval: 1s
  policies:
    - name: web
      actuator: {{type: supervisor}}
      min: 2
      max: 5
      metrics:
        - name: web request rate
          query: sum(rate(http_server_request_duration_seconds_count{{tier="web"}}[5s]))
          average: 15
      warm_up: 1s
      panic: {{demand: 'sum(rate(http_server_request_duration_seconds_count{{tier="web"}}[3s]))', per_instance: 15}}
      behavior:
        scale_up: {{stabilization_window: 0s, policies: [{{type: Pods, value: 4, period: 1s}}]}}
        scale_down: {{stabilization_window: {scale_down_window}, burst_memory: {scale_down_window}, policies: [{{type: Percent, value: 100, period: 1s}}]}}
"#
    )
}

/// The first event of `kind` (`scale`, `decision`, …) at the
/// controller's `events` URL that `want` holds for, awaited for up to
/// 90 s (`what` names it when it never comes).
#[allow(dead_code)]
pub async fn controller_event(
    events: &str,
    kind: &str,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let want = &want;
    eventually(what, Duration::from_secs(90), || async move {
        let (_, v) = get_json(&format!("{events}?limit=10000")).await;
        v["data"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == kind && want(e))
            .cloned()
    })
    .await
}

/// `keel load --profile <profile> --rps <rps> --duration <duration>`
/// against the shop API printed in `lines`, quietly, in `dir`.
pub fn spawn_load(lines: &[String], dir: &Path, profile: &str, rps: &str, duration: &str) -> Child {
    let shop = printed_url(lines, "shop API").replace("/api/products/1", "");
    Command::new(KEEL)
        .args([
            "load",
            "--profile",
            profile,
            "--rps",
            rps,
            "--duration",
            duration,
            "--target",
        ])
        .arg(&shop)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keel load")
}

/// An OTLP string attribute.
pub fn kv(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An OTLP metrics export of one gauge `name` with `points`, its
/// resource's `service.name` set when `service` is given.
pub fn gauge_request(
    service: Option<&str>,
    name: &str,
    points: Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, ResourceMetrics, ScopeMetrics, metric::Data,
    };
    opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: service.map(|s| opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", s)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `promtool check metrics` on an exposition: its complaints, if any
/// (promtool from Debian's `prometheus`; the callers are gated on it).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool does not run: {e}"))?;
    check
        .stdin
        .take()
        .ok_or("promtool's stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = check.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
