//! `keel up` under a load spike: the spike fires an alert and scales
//! the web tier up and back; the window is recorded with `keel incident
//! record`, and three replays print the same bytes and reproduce the
//! recorded alert changes, pages and scaling actions.

use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_spike_replays_identically_and_reproduces_what_happened() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("spike.yml"),
        r#"groups:
  - name: spike
    interval: 1s
    rules:
      - alert: WebRequestSpike
        expr: sum(rate(http_server_request_duration_seconds_count{tier="web"}[5s])) > 50
        for: 2s
        severity: P0
        labels: {job: shop-web}
"#,
    )
    .expect("rules");
    std::fs::write(
        dir.path().join("overlay.yaml"),
        format!(
            "{}collector:\n  rules:\n    files: [spike.yml]\n",
            fast_web_policy("8s")
        ),
    )
    .expect("overlay");
    let from = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let (mut child, lines) = keel_up(dir.path(), &["--config", "overlay.yaml"]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let events = printed_url(&lines, "controller events");
    let api = printed_url(&lines, "dashboard").replace("/ui/", "");
    let mut base = spawn_load(&lines, dir.path(), "steady", "20", "300s");
    let _base = StopOnDrop(base.id() as i32);
    let mut burst = spawn_load(&lines, dir.path(), "steady", "80", "300s");
    let burst_stop = StopOnDrop(burst.id() as i32);
    controller_event(&events, "scale", "the spike scales web up", |e| {
        e["read_back"].as_u64() >= Some(4)
    })
    .await;
    let alerts = format!("{api}/api/v1/alerts");
    eventually(
        "the spike alert fires",
        std::time::Duration::from_secs(90),
        || {
            let alerts = alerts.clone();
            async move {
                let (_, v) = get_json(&alerts).await;
                v["data"]["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == "WebRequestSpike" && a["state"] == "firing"
                    })
                    .cloned()
            }
        },
    )
    .await;
    drop(burst_stop);
    let _ = burst.wait();
    controller_event(&events, "scale", "web scales back to 2", |e| {
        e["read_back"].as_u64() == Some(2)
    })
    .await;
    let bundle = dir.path().join("spike.keelinc");
    let out = Command::new(KEEL)
        .args([
            "incident", "record", "--from", &from, "--to", "now", "--name", "spike",
        ])
        .args(["--url", &api, "--out"])
        .arg(&bundle)
        .output()
        .expect("keel incident record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child.kill().ok();
    drop(_base);
    let _ = base.wait();
    let run = || {
        let o = Command::new(KEEL)
            .arg("replay")
            .arg(&bundle)
            .output()
            .expect("keel replay");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (o.stdout, o.stderr)
    };
    let first = run();
    assert_eq!(run(), first, "the second replay differs");
    assert_eq!(run(), first, "the third replay differs");
    let text = String::from_utf8_lossy(&first.0);
    assert!(text.contains("alert    P0 WebRequestSpike"), "{text}");
    assert!(text.contains("scale    web 2 -> "), "{text}");
    let reproduced = text
        .lines()
        .find(|l| l.starts_with("reproduced: "))
        .unwrap_or_else(|| panic!("not reproduced:\n{text}"));
    // Alert changes, pages and scaling actions were recorded and
    // reproduced; no failover happened.
    let counts: Vec<u64> = reproduced
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        counts.len() == 4 && counts[..3].iter().all(|n| *n > 0) && counts[3] == 0,
        "{reproduced}"
    );
}

/// The repository's `incidents/` directory.
fn incidents() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../incidents")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shortest_scenario_runs_live_and_its_expectations_hold_live_and_in_replay() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, lines) = keel_up(dir.path(), &[]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let api = printed_url(&lines, "dashboard").replace("/ui/", "");
    let sup = printed_url(&lines, "supervisor API").replace("/api/v1/processes", "");
    let shop = printed_url(&lines, "shop API").replace("/api/products/1", "");
    let scenario = |file: &std::path::Path| {
        Command::new(KEEL)
            .args(["scenario", "run"])
            .arg(file)
            .args(["--url", &api, "--supervisor", &sup, "--shop", &shop])
            .arg("--supervisor-token-file")
            .arg(keel_sampleapp::supervisor::Supervisor::token_file(
                dir.path(),
            ))
            .current_dir(dir.path())
            .output()
            .expect("keel scenario run")
    };
    // A target the running app lacks stops the run before anything starts.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "load: {profile: steady, rps: 5, duration: 10s}\nfaults:\n  - {at: 1s, fault: kill, target: db-9}\n  - {at: 2s, fault: error_rate, target: cache, value: 0.5}\nexpect: [no failover]\n",
    )
    .expect("bad scenario");
    let o = scenario(&bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.yaml:3: target \"db-9\" is no process"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:4: error_rate applies to web processes, and \"cache\" is cache"),
        "{err}"
    );
    assert!(!err.contains("load done"), "nothing started: {err}");

    let sup_http = supervisor_client(dir.path());
    let (_, capacity_before) =
        get_json_with(&sup_http, &format!("{sup}/api/v1/web/capacity")).await;
    let o = scenario(&incidents().join("db-primary-crash.yaml"));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("kill db-1"), "the primary was killed: {err}");
    for expectation in [
        "failover within 5s",
        "alert DatabasePrimaryUnavailable does not fire",
        "no P0 page",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(expectation))
            .unwrap_or_else(|| panic!("{expectation} not reported:\n{out}"));
        assert!(
            line.contains("live ok") && line.contains("replay ok"),
            "{line}"
        );
    }
    let times = out
        .lines()
        .find(|l| l.contains("first corrective action"))
        .unwrap_or_else(|| panic!("no response times:\n{out}"));
    assert!(
        !times.contains("action (scale or failover) none"),
        "a failover is a corrective action: {times}"
    );
    // The db-1 killed is started again once the scenario ends.
    let (_, procs) = get_json_with(&sup_http, &format!("{sup}/api/v1/processes")).await;
    let db1 = procs
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "db-1"))
        .cloned()
        .unwrap_or_default();
    assert!(db1["pid"].is_u64(), "db-1 healed: {db1}");
    let (_, capacity_after) = get_json_with(&sup_http, &format!("{sup}/api/v1/web/capacity")).await;
    assert_eq!(capacity_after, capacity_before);

    // The bundle keeps warnings and errors (the failed requests'), no
    // spans, and says so.
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("collector/incidents"))
        .expect("incidents dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "keelinc"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let b = keel_incident::bundle::Bundle::read(&kept[0]).expect("bundle");
    assert_eq!(
        b.header.logs_query.as_deref(),
        Some("level:fatal OR level:error OR level:warn")
    );
    assert!(b.header.no_spans && b.spans.is_empty());
    // A bundle is shared: the supervisor's token is not in it, though
    // the controller's config it keeps is the one that carried it.
    let token = std::fs::read_to_string(keel_sampleapp::supervisor::Supervisor::token_file(
        dir.path(),
    ))
    .expect("token file");
    let controller = b
        .config
        .controller
        .as_ref()
        .expect("the controller's config");
    assert!(
        !controller.to_string().contains(token.trim()),
        "the token leaked into the bundle"
    );
    assert_eq!(
        controller["policies"][0]["actuator"]["token"], "<redacted>",
        "{controller}"
    );
    assert!(
        !b.logs.is_empty(),
        "the crash's warnings and errors are kept"
    );
    assert!(
        b.logs
            .iter()
            .all(|l| matches!(l.level.as_str(), "warn" | "error" | "fatal")),
        "only warnings and errors"
    );
    // A log search that does not parse is refused by name.
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/incidents"))
        .json(&serde_json::json!({"name": "bad-logs", "from_ms": 1, "to_ms": 2, "logs": "level:("}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let why = v["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("logs: \"level:(\": invalid query"), "{v}");
}

#[test]
fn every_shipped_scenario_replays_its_committed_bundle_with_its_expectations() {
    let _turn = crate::common::heavy_blocking();
    let root = incidents().join("..");
    let o = Command::new(KEEL)
        .args(["scenario", "replay"])
        .current_dir(&root)
        .output()
        .expect("keel scenario replay");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("scenario "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(
        names,
        [
            "cache-crash",
            "db-primary-crash",
            "lunch-spike",
            "replica-lag",
            "web-error-burst"
        ]
    );
    assert!(!out.contains("FAILED"), "{out}");

    // An expectation that does not hold fails the replay, naming the
    // scenario and what happened instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(incidents().join("db-primary-crash.yaml"))
        .expect("scenario")
        .replace("- failover within 5s", "- no failover");
    std::fs::write(dir.path().join("wrong.yaml"), text).expect("write");
    std::fs::copy(
        incidents().join("db-primary-crash.keelinc"),
        dir.path().join("wrong.keelinc"),
    )
    .expect("bundle");
    let o = Command::new(KEEL)
        .args(["scenario", "replay", "wrong.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("keel scenario replay");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("scenario wrong (wrong.yaml)")
            && err.contains("\"no failover\" live (shop-db failed over"),
        "{err}"
    );

    // A broken file: every problem with its line, before anything runs.
    std::fs::write(
        dir.path().join("broken.yaml"),
        "load:\n  profile: steady\nfaults:\n  - at: soon\n    fault: kill\n    target: web\nexpect:\n  - everything fine\n",
    )
    .expect("write");
    let o = Command::new(KEEL)
        .args(["scenario", "replay", "broken.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("keel scenario replay");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for want in [
        "broken.yaml:2: load.rps",
        "broken.yaml:4: faults[0].at",
        "broken.yaml:8: expect[0]",
    ] {
        assert!(err.contains(want), "{want} missing:\n{err}");
    }
}
