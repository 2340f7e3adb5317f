//! The `keel` binary as users run it: `keel up` and Ctrl-C, bad config,
//! bad profiles.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_up_prints_its_urls_and_ctrl_c_leaves_no_process_behind() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, lines) = keel_up(dir.path(), &[]).await;
    let _stop_on_panic = StopOnDrop(child.id() as i32);
    let url = |label: &str| printed_url(&lines, label);
    let shop = url("shop API");
    let processes_url = url("supervisor API");
    let (s, _) = get_json(&shop).await;
    assert_eq!(s, 200, "the printed shop URL serves");
    // Keel's own /metrics (the agent's, the collector's) are clean to
    // promtool. (The sample app's processes serve OpenMetrics, from the
    // prometheus-client crate, which `promtool check metrics` does not
    // read.)
    if std::env::var_os("KEEL_TEST_PROMETHEUS").is_some() {
        let pages = [
            url("agent status").replace("/status", "/metrics"),
            format!("{}/metrics", url("dashboard").replace("/ui/", "")),
        ];
        for page in pages {
            let (status, text) = get_text(&page).await;
            assert_eq!(status, 200, "{page}");
            if let Err(e) = promtool_check_metrics(&text) {
                panic!("promtool check metrics {page}: {e}");
            }
        }
    }
    // The controller runs the shipped web policy and explains its first
    // evaluation (the count read back from the supervisor: 2).
    let events = url("controller events");
    eventually(
        "the controller's first decision",
        Duration::from_secs(20),
        || {
            let events = events.clone();
            async move {
                let (_, v) = get_json(&events).await;
                let e = v["data"].as_array()?.first()?.clone();
                assert_eq!(e["subject"], "web", "{e}");
                let line = e["explanation"].as_str()?.to_owned();
                assert!(
                    line.starts_with("web: keep 2") || line.starts_with("web: scale 2"),
                    "{e}"
                );
                Some(())
            }
        },
    )
    .await;
    // keel up watches the sample db for failover by default; `keel
    // failover status` shows its primary and members.
    let failover = url("failover");
    let base = failover.trim_end_matches("/api/v1/failover").to_owned();
    let status = eventually(
        "the failover target probed",
        Duration::from_secs(20),
        || {
            let failover = failover.clone();
            async move {
                let (_, v) = get_json(&failover).await;
                let t = v["data"].as_array()?.first()?.clone();
                (t["state"] == "healthy" && t["members"].as_object()?.len() == 3).then_some(t)
            }
        },
    )
    .await;
    assert_eq!(
        (&status["name"], &status["primary"]),
        (&"shop-db".into(), &"db-1".into()),
        "{status}"
    );
    let out = Command::new(KEEL)
        .args(["failover", "status", "--url", &base])
        .output()
        .expect("keel failover status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("shop-db: primary db-1 at epoch 1 — healthy"),
        "{text}"
    );
    assert_eq!(text.matches("reaches the primary").count(), 2, "{text}");
    let promql = url("PromQL API");
    let (s, v) = get_json(&format!("{promql}?query=vector(1)")).await;
    assert_eq!(s, 200, "the printed collector API answers PromQL: {v}");
    // The request above was traced from the lb through web; its spans
    // reach the collector keel up started.
    let traces = url("trace search");
    // The lb and web export their spans in their own batches, so a trace
    // may first show only the lb's half: wait for one that spans both.
    eventually("a trace across lb and web", Duration::from_secs(20), || {
        let (traces, shop) = (traces.clone(), shop.clone());
        async move {
            let (_, v) = get_json(&traces).await;
            let ids: Vec<String> = v["data"]["traces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["trace_id"].as_str().map(str::to_owned))
                .collect();
            for id in ids {
                let (_, tree) = get_json(&traces.replace("search?service=shop-lb", &id)).await;
                let services: Vec<&str> = tree["data"]["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str())
                    .collect();
                // The spans came through the agent's receiver, which
                // tags them with the host.
                let via_agent = tree["data"]["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|s| s["attributes"]["host.name"].is_string());
                if services.contains(&"shop-lb") && services.contains(&"shop-web") {
                    assert!(via_agent, "spans carry the agent's host.name: {tree}");
                    return Some(());
                }
            }
            let _ = get_json(&shop).await;
            None
        }
    })
    .await;
    // The agent keel up started scrapes every tier into the collector:
    // each tier's job is up, and the lb and web RED histograms are there
    // (the first scrape is at start, well within two 10 s intervals).
    for tier in ["lb", "web", "cache", "db"] {
        let v = value_within(&promql, &format!("min(up{{job=\"shop-{tier}\"}})")).await;
        assert_eq!(v, "1", "{tier} is up");
    }
    for tier in ["lb", "web"] {
        let q = format!("count(http_server_request_duration_seconds_bucket{{tier=\"{tier}\"}})");
        value_within(&promql, &q).await;
        // The same requests, counted from the access log by the agent's
        // log-to-metrics rule.
        let q =
            format!("sum(shop_access_requests_total{{tier=\"{tier}\",job=\"shop-{tier}\"}}) > 0");
        value_within(&promql, &q).await;
    }
    // No series carries a label Prometheus would not give it: no
    // `exported_*` from a collision, no `service` from the OTLP mapping.
    for q in [
        r#"count({__name__=~".+", exported_tier!=""})"#,
        r#"count({__name__=~".+", service!=""})"#,
    ] {
        let (s, v) = get_json(&format!("{promql}?query={}", urlencode(q))).await;
        assert_eq!(
            (s, &v["data"]["result"]),
            (200, &serde_json::json!([])),
            "{q}: {v}"
        );
    }
    // Host metrics, under node_exporter's names.
    for q in [
        "node_load1",
        "count(node_cpu_seconds_total{mode=\"idle\"})",
        "node_memory_MemAvailable_bytes",
    ] {
        value_within(&promql, q).await;
    }
    // The sample app's JSON logs, tailed by the agent, are searchable.
    let search = url("log search");
    let web_logs = search.replace("q=level:error", "q=service:shop-web");
    eventually("shop-web log lines", Duration::from_secs(20), || {
        let url = web_logs.clone();
        async move {
            let (_, v) = get_json(&url).await;
            v["data"]["records"]
                .as_array()
                .filter(|r| !r.is_empty())
                .map(|_| ())
        }
    })
    .await;
    // The shipped rules run against the live data: every rule is
    // evaluated without error (the sample app is healthy, so none fires).
    let rules = url("alert rules");
    eventually(
        "the shipped rules evaluated",
        Duration::from_secs(30),
        || {
            let rules = rules.clone();
            async move {
                let (_, v) = get_json(&rules).await;
                let all: Vec<&serde_json::Value> = v["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                    .collect();
                let bad: Vec<&serde_json::Value> = all
                    .iter()
                    .copied()
                    .filter(|r| r["health"] == "err")
                    .collect();
                assert!(bad.is_empty(), "rules failing on live data: {bad:?}");
                (all.len() == 11 && all.iter().all(|r| r["health"] == "ok")).then_some(())
            }
        },
    )
    .await;
    // Every process, found in the supervisor's targets file.
    let agent = url("agent status");
    eventually(
        "the agent scrapes all 7 processes",
        Duration::from_secs(20),
        || {
            let agent = agent.clone();
            async move {
                let (_, status) = get_json(&agent).await;
                (status["targets"].as_array().map(Vec::len) == Some(7)).then_some(())
            }
        },
    )
    .await;
    let stderr = std::fs::read_to_string(dir.path().join("keel-up.stderr")).unwrap_or_default();
    assert!(
        !stderr.contains("unparseable lines"),
        "the sample app's metrics parse: {stderr}"
    );
    // The supervisor takes only the token keel up made for it (and
    // handed to the controller, whose decisions above read through it).
    let (s, v) = get_json(&processes_url).await;
    assert_eq!(s, 401, "no token, no process list: {v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("sampleapp.supervisor.token")),
        "{v}"
    );
    let wrong = reqwest::Client::new()
        .put(processes_url.replace("processes", "scale/web"))
        .bearer_auth("not-the-token")
        .json(&serde_json::json!({"replicas": 1}))
        .send()
        .await
        .expect("scale");
    assert_eq!(wrong.status().as_u16(), 401, "a wrong token scales nothing");
    let sup = supervisor_client(dir.path());
    let (s, procs) = get_json_with(&sup, &processes_url).await;
    assert_eq!(s, 200, "{procs}");
    let pids: Vec<i32> = procs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    assert_eq!(pids.len(), 7, "lb, 2 web, cache, 3 db: {procs}");
    // Failed requests are logged at error level, with the error: the
    // `level:error` search keel up prints finds them.
    let capacity = processes_url.replace("processes", "web/capacity");
    let (_, mut c) = get_json_with(&sup, &capacity).await;
    c["error_rate"] = serde_json::json!(1.0);
    let r = sup.put(&capacity).json(&c).send().await.expect("capacity");
    assert!(r.status().is_success(), "{}", r.status());
    let shop = url("shop API");
    for _ in 0..5 {
        let s = reqwest::get(&shop).await.expect("shop").status();
        assert!(s.is_server_error(), "{s}");
    }
    let failed = eventually(
        "failed requests at error level",
        Duration::from_secs(20),
        || {
            let url = search.clone();
            async move {
                let (_, v) = get_json(&url).await;
                v["data"]["records"]
                    .as_array()?
                    .iter()
                    .find(|r| {
                        r["service"] == "shop-web"
                            && r["message"] == "request failed"
                            && r["attributes"]["error"]
                                .as_str()
                                .is_some_and(|e| e.contains("injected"))
                    })
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(failed["level"], "error", "{failed}");
    let access = eventually(
        "the access line of a 500 at error level",
        Duration::from_secs(20),
        || {
            let url = search.clone();
            async move {
                let (_, v) = get_json(&url).await;
                v["data"]["records"]
                    .as_array()?
                    .iter()
                    .find(|r| r["message"] == "request" && r["attributes"]["status"] == 500)
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(access["level"], "error", "{access}");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("ctrl-c");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "keel up exited with {status}");
    for pid in pids {
        assert_eq!(
            kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH),
            "process {pid} outlived keel up"
        );
    }
}

/// The value of instant query `q` at the PromQL endpoint `promql`, once
/// it has one (within 20 s).
async fn value_within(promql: &str, q: &str) -> String {
    eventually(q, Duration::from_secs(20), || {
        let url = format!("{promql}?query={}", urlencode(q));
        async move {
            let (_, v) = get_json(&url).await;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        }
    })
    .await
}

fn keel(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(KEEL)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run keel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_config_fails_at_start_naming_file_line_and_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("typo.yaml"),
        "sampleapp:\n  lb:\n    prot: 80\n",
    )
    .expect("write");
    let (ok, err) = keel(&["up", "--config", "typo.yaml"], dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("typo.yaml:3:") && err.contains("prot"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("bad.yaml"),
        "sampleapp:\n  web:\n    instances: 0\n  db:\n    replication: sync\n    sync_replicas: 5\n",
    )
    .expect("write");
    let (ok, err) = keel(&["up", "--config", "bad.yaml"], dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("bad.yaml") && err.contains("2 problem(s)"),
        "{err}"
    );
    assert!(
        err.contains("sampleapp.web.instances") && err.contains("sampleapp.db.sync_replicas"),
        "{err}"
    );

    // A failover section: every problem, each at its line.
    std::fs::write(
        dir.path().join("failover.yaml"),
        "controller:\n  failover:\n    - name: db\n      driver: {type: sample}\n      members: [{name: a}, {name: a}]\n      failure_threshold: 0\n      mode: synchronous\n      synchronous_replicas: 2\n      repoint: [cache]\n",
    )
    .expect("write");
    let (ok, err) = keel(&["up", "--config", "failover.yaml"], dir.path(), &[]);
    assert!(!ok);
    for want in [
        "4 problem(s)",
        "failover.yaml:5: controller.failover[0].members[1].name: \"a\" is listed twice",
        "failover.yaml:6: controller.failover[0].failure_threshold: must be at least 1",
        "failover.yaml:8: controller.failover[0].synchronous_replicas",
        "failover.yaml:9: controller.failover[0].repoint[0]: \"cache\" is not a tier",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }

    let (ok, err) = keel(
        &["config"],
        dir.path(),
        &[("KEEL_SAMPLEAPP__WEB__INSTANCEZ", "3")],
    );
    assert!(!ok);
    assert!(
        err.contains("KEEL_SAMPLEAPP__WEB__INSTANCEZ") && err.contains("unknown key"),
        "{err}"
    );
    let (ok, err) = keel(
        &["config"],
        dir.path(),
        &[("KEEL_SAMPLEAPP__WEB__INSTANCES", "3")],
    );
    assert!(ok, "{err}");

    // Safe by default: a collector other machines reach refuses to start
    // unless the config accepts that in so many words.
    for host in ["0.0.0.0", "192.0.2.10"] {
        let (ok, err) = keel(
            &["collector"],
            dir.path(),
            &[("KEEL_COLLECTOR__HOST", host)],
        );
        assert!(!ok, "{host}");
        assert!(
            err.contains(&format!(
                "collector.host: {host} is reachable from other machines"
            )) && err.contains("collector.insecure: true")
                && [
                    "collector.auth.login: true",
                    "collector.tls",
                    "collector.auth.senders"
                ]
                .iter()
                .all(|m| err.contains(m)),
            "{err}"
        );
    }
    let (ok, err) = keel(
        &["config"],
        dir.path(),
        &[
            ("KEEL_COLLECTOR__HOST", "0.0.0.0"),
            ("KEEL_COLLECTOR__INSECURE", "true"),
        ],
    );
    assert!(ok, "{err}");
    let (ok, err) = keel(
        &["config"],
        dir.path(),
        &[("KEEL_COLLECTOR__HOST", "127.0.0.2")],
    );
    assert!(ok, "loopback needs no word: {err}");
}

#[test]
fn invalid_profile_fails_at_start_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.yaml"),
        "segments:\n  - duration: 5s\n    rps: -1\n",
    )
    .expect("write");
    let (ok, err) = keel(&["load", "--profile", "p.yaml"], dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("p.yaml") && err.contains("line 2: segments[0]"),
        "{err}"
    );
    let (ok, err) = keel(&["load", "--profile", "steady"], dir.path(), &[]);
    assert!(!ok && err.contains("needs --rps and --duration"), "{err}");
    let (ok, err) = keel(&["load", "--profile", "nonsense"], dir.path(), &[]);
    assert!(!ok && err.contains("no such file"), "{err}");
}

#[test]
fn keel_load_reports_a_summary_as_json() {
    let _turn = crate::common::heavy_blocking();
    // Against a port nothing listens on: every request fails to connect,
    // and the summary says so instead of hanging or crashing.
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let out = Command::new(KEEL)
        .args([
            "load",
            "--profile",
            "steady",
            "--rps",
            "50",
            "--duration",
            "1s",
            "--json",
            "--target",
        ])
        .arg(format!("http://127.0.0.1:{port}"))
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(v["sent"], 50);
    assert_eq!(v["errors"], 50);
    assert_eq!(v["errors_by_kind"]["connect"], 50);
    for k in ["p50", "p95", "p99", "max"] {
        assert!(v["latency_ms"][k].is_number(), "{v}");
    }
}

#[test]
fn rules_check_reports_every_problem_with_file_line_column_and_rules_test_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.yml"),
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x[5m]\n    severity: P0\n  - alert: B\n    expr: up == 0\n",
    )
    .expect("write");
    let (ok, err) = keel(&["rules", "check", "."], dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("bad.yml:5:11: expr:"), "{err}");
    assert!(
        err.contains("bad.yml:7:") && err.contains("no severity"),
        "{err}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (ok, err) = keel(&["rules", "check", "rules"], &root, &[]);
    assert!(ok, "{err}");
    let (ok, err) = keel(&["rules", "test", "rules/tests/shop.test.yml"], &root, &[]);
    assert!(ok, "{err}");
}

#[test]
fn silences_are_made_listed_and_expired_from_the_command_line() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut collector, _, api) = spawn_collector(dir.path(), 0, 0);
    let run = |args: &[&str]| {
        let out = Command::new(KEEL)
            .args(args)
            .args(["--url", &api])
            .output()
            .expect("run keel");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "silence",
        "add",
        r#"alertname="ShopTierDown""#,
        r#"job=~"shop-.*""#,
        "--for",
        "2h",
        "--comment",
        "deploy",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("silence 1 until "), "{out}");
    let (ok, out, _) = run(&["silence", "list"]);
    assert!(
        ok && out.contains(r#"alertname="ShopTierDown", job=~"shop-.*""#) && out.contains("deploy"),
        "{out}"
    );
    let (ok, _, err) = run(&["silence", "add", "not a matcher"]);
    assert!(!ok && err.contains("not a matcher"), "{err}");
    let (ok, _, err) = run(&["silence", "expire", "9"]);
    assert!(!ok && err.contains("no silence 9"), "{err}");
    let (ok, out, err) = run(&["silence", "expire", "1"]);
    assert!(ok && out.contains("expired"), "{err}");
    let (_, v) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(get_json(&format!("{api}/api/v1/silences")));
    let s = &v["data"][0];
    assert!(
        s["ends_at_ms"].as_i64() <= Some(s["starts_at_ms"].as_i64().unwrap_or(0) + 60_000),
        "ended now: {s}"
    );
    let (ok, out, err) = run(&["ack", "alertname=ShopTierDown"]);
    assert!(ok && out.contains("0 alert(s) acknowledged"), "{err}");
    let _ = collector.kill();
    let _ = collector.wait();
}
