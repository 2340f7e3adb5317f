//! The collector as a process under faults reached on purpose: a file
//! size limit (a full disk, as the kernel says it) under ingest, and
//! named crash points around a page sent to a real SMTP server.

use std::process::{Child, Command};

use crate::common::{collector_command, kv};
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, number_data_point};
use prost::Message;

const T0: u64 = 1_763_856_000_000;

/// Batch `i` of the fault test: 50 points of `filled` labelled `i`, `k`.
fn fill_batch(i: u64) -> Vec<u8> {
    let points = (0..50)
        .map(|k| NumberDataPoint {
            attributes: vec![kv("i", &i.to_string()), kv("k", &k.to_string())],
            time_unix_nano: (T0 + i) * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(k as f64)),
            ..Default::default()
        })
        .collect();
    crate::common::gauge_request(Some("fill"), "filled", points).encode_to_vec()
}

/// `prlimit` on a running process: its file size limit, soft and hard.
fn set_fsize(pid: u32, limit: &str) {
    let out = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}")])
        .output()
        .expect("prlimit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_loses_nothing_acknowledged_and_ingest_resumes_by_itself() {
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Every file the collector writes may grow to 256 KiB ("the disk is
    // full" as the kernel says it: EFBIG, part-way through a write).
    let (child, otlp, api) = crate::common::spawn_collector_under(
        &["prlimit", "--fsize=262144:unlimited"],
        dir.path(),
        0,
        0,
    );
    let http = reqwest::Client::new();
    let send = |i: u64| {
        let (http, otlp) = (http.clone(), otlp.clone());
        async move {
            http.post(format!("{otlp}/v1/metrics"))
                .header("content-type", "application/x-protobuf")
                .body(fill_batch(i))
                .send()
                .await
                .expect("the collector answers")
        }
    };
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    while refused < 5 {
        assert!(i < 5_000, "the file size limit was never met");
        let r = send(i).await;
        match r.status().as_u16() {
            200 => acked.push(i),
            503 => {
                refused += 1;
                assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
                let body = r.bytes().await.expect("body");
                let message = String::from_utf8_lossy(&body).to_string();
                assert!(message.contains("File too large"), "{message}");
            }
            s => panic!("batch {i}: HTTP {s}"),
        }
        i += 1;
    }
    assert!(acked.len() > 10, "some batches fit before the limit");
    // Space returns: ingest goes on by itself, behind no torn record.
    set_fsize(child.id(), "unlimited:unlimited");
    for _ in 0..10 {
        assert_eq!(
            send(i).await.status(),
            200,
            "batch {i} after space returned"
        );
        acked.push(i);
        i += 1;
    }
    // kill -9, then a fresh collector on the same data: every
    // acknowledged batch is there, whole, and no refused one.
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, _, api2) = crate::common::spawn_collector(dir.path(), 0, 0);
    drop(api);
    let result = crate::common::query(
        &api2,
        "count by (i) (last_over_time(filled[1d]))",
        Some((T0 + i) as f64 / 1000.0),
    )
    .await;
    let mut stored: Vec<(u64, f64)> = result
        .iter()
        .map(|s| {
            let i = s["metric"]["i"].as_str().and_then(|v| v.parse().ok());
            let n = s["value"][1].as_str().and_then(|v| v.parse().ok());
            (i.unwrap_or(u64::MAX), n.unwrap_or(0.0))
        })
        .collect();
    stored.sort_by_key(|s| s.0);
    let want: Vec<(u64, f64)> = acked.iter().map(|i| (*i, 50.0)).collect();
    assert_eq!(
        stored, want,
        "stored batches (i, series) = the acknowledged ones"
    );
    let _ = child.kill();
    let _ = child.wait();
}

const PAGE_RULES: &str = "groups:\n- name: g\n  interval: 200ms\n  rules:\n  - alert: Down\n    expr: crash_x > 1\n    severity: P0\n    annotations: {summary: 'crash_x is up'}\n";

/// `keel collector` on `dir` paging the SMTP server on `smtp_port` while
/// `crash_x > 1`, aborting at crash point `crash_at` if any.
fn paging_collector(
    dir: &std::path::Path,
    smtp_port: u16,
    crash_at: Option<&str>,
) -> (Child, String, String) {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    std::fs::write(dir.join("rules/g.yml"), PAGE_RULES).expect("rules");
    std::fs::write(
        dir.join("keel.yaml"),
        format!(
            "collector:\n  rules: {{files: [rules]}}\n  notify:\n    email: {{smtp_port: {smtp_port}, from: keel@example.com, to: [oncall@example.com]}}\n    p0_group_wait: 0s\n    retry_initial: 100ms\n    retry_max: 200ms\n"
        ),
    )
    .expect("config");
    let mut command = collector_command(std::path::Path::new("keel.yaml"));
    match crash_at {
        Some(point) => command.env("KEEL_CRASH_AT", point),
        None => command.env_remove("KEEL_CRASH_AT"),
    };
    crate::common::start_collector(command, dir)
}

/// `crash_x` = 5 now, over OTLP.
async fn raise(otlp: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let req = crate::common::gauge_request(
        None,
        "crash_x",
        vec![NumberDataPoint {
            time_unix_nano: now * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(5.0)),
            ..Default::default()
        }],
    );
    let r = reqwest::Client::new()
        .post(format!("{otlp}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status(), 200);
}

/// The `Message-ID` of every page the SMTP server received.
fn pages(smtp: &keel_testkit::smtp::Smtp) -> Vec<String> {
    smtp.text()
        .lines()
        .filter_map(|l| l.strip_prefix("Message-ID: "))
        .map(str::to_owned)
        .collect()
}

/// Wait for `child` to end by itself (a crash point aborts it).
async fn crashed(mut child: Child) {
    let status = keel_testkit::until(
        "the crash point",
        std::time::Duration::from_secs(60),
        async || child.try_wait().expect("wait"),
    )
    .await;
    assert!(!status.success(), "aborted at the crash point: {status}");
}

/// Wait until every notification the collector at `api` holds is
/// delivered and its rules have run for two more seconds: by then a page
/// it would send again has been sent.
async fn settled(api: &str) {
    let from = std::time::SystemTime::now();
    keel_testkit::until(
        "notifications delivered",
        std::time::Duration::from_secs(60),
        async || {
            let v: serde_json::Value = reqwest::get(format!("{api}/api/v1/notifications"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let all = v["data"].as_array()?;
            (!all.is_empty() && all.iter().all(|d| !d["delivered_at_ms"].is_null())).then_some(())
        },
    )
    .await;
    let want =
        humantime::format_rfc3339_millis(from + std::time::Duration::from_secs(2)).to_string();
    keel_testkit::until(
        "two more seconds of evaluations",
        std::time::Duration::from_secs(60),
        async || {
            let v: serde_json::Value = reqwest::get(format!("{api}/api/v1/rules"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let last = v["data"]["groups"][0]["rules"][0]["lastEvaluation"]
                .as_str()?
                .to_owned();
            (last >= want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_survives_a_crash_at_every_point_and_is_sent_twice_only_as_the_same_message() {
    if std::env::var("KEEL_TEST_SMTP").as_deref() != Ok("1") {
        eprintln!("skipped: set KEEL_TEST_SMTP=1 (needs `pip install aiosmtpd`)");
        return;
    }
    let _turn = crate::common::heavy().await;
    // (crash point, pages received when it crashed, pages after restart)
    for (point, at_crash, after) in [
        ("after_page_intent", 0, 1),
        ("after_smtp_accept", 1, 2),
        ("after_page_recorded", 1, 1),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let smtp = keel_testkit::smtp::Smtp::start(keel_testkit::free_port().expect("port"))
            .await
            .expect("aiosmtpd starts");
        let (child, otlp, _) = paging_collector(dir.path(), smtp.port, Some(point));
        raise(&otlp).await;
        crashed(child).await;
        let stderr =
            std::fs::read_to_string(dir.path().join("collector.stderr")).unwrap_or_default();
        assert!(
            stderr.contains(&format!("KEEL_CRASH_AT={point}")),
            "{point}: {stderr}"
        );
        if at_crash > 0 {
            // aiosmtpd prints a message once it has taken all of it.
            keel_testkit::until(
                "the page before the crash",
                std::time::Duration::from_secs(20),
                async || (pages(&smtp).len() >= at_crash).then_some(()),
            )
            .await;
        }
        assert_eq!(
            pages(&smtp).len(),
            at_crash,
            "{point}: pages when it crashed"
        );
        let (mut child, _, api) = paging_collector(dir.path(), smtp.port, None);
        settled(&api).await;
        let got = pages(&smtp);
        assert_eq!(
            got.len(),
            after,
            "{point}: pages after the restart: {got:?}"
        );
        assert!(
            got.iter().all(|id| *id == got[0]),
            "{point}: one message, whatever was sent twice: {got:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
