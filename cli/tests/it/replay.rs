//! `keel replay` on hand-built bundles: a tightened rule pages earlier
//! by the expected amount, a loosened one misses, the diff says so;
//! `--assert` fails naming the expectation; the output is the same byte
//! for byte on every run; damaged bundles are refused by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use keel_core::marks::Mark;
use keel_incident::bundle::{Bundle, Config, File, Header, Series};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
/// The window's start: 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn rule(threshold: f64) -> String {
    format!(
        "groups:\n- name: web\n  interval: 30s\n  rules:\n  - alert: ErrorsHigh\n    expr: err_ratio > {threshold}\n    for: 1m\n    severity: P0\n    annotations:\n      summary: errors {{{{ $value }}}}\n"
    )
}

/// Errors ramp from 0 at +10m to 0.2 at +20m (0.005 a 15 s scrape),
/// then drop back; requests jump from 150/s to 450/s at +10m.
fn bundle() -> Bundle {
    let mut errors = Vec::new();
    let mut requests = Vec::new();
    let mut marks = Vec::new();
    for k in 0..=(30 * 4) {
        let t = T0 + k * 15_000;
        let ramp = (k - 40).clamp(0, 40) as f64 * 0.005;
        errors.push((t, if k > 80 { 0.0 } else { ramp }));
        requests.push((t, if k >= 40 { 450.0 } else { 150.0 }));
        // The agent's batch arrives 100 ms after its scrape.
        marks.push(Mark::Arrival {
            at_ms: t + 100,
            sources: vec![("web".into(), "web-1".into(), t)],
        });
    }
    for k in 0..=(30 * 2) {
        marks.push(Mark::RuleEval {
            at_ms: T0 + k * 30_000 + 50,
            file: "/etc/keel/rules/shop.yml".into(),
            group: "web".into(),
        });
    }
    for k in 0..=(30 * 4) {
        marks.push(Mark::PolicyEval {
            at_ms: T0 + k * 15_000 + 20,
            policy: "web".into(),
            replicas: 2,
            instances: Vec::new(),
        });
    }
    marks.sort_by_key(Mark::at_ms);
    let labels = |name: &str| -> BTreeMap<String, String> {
        [("__name__", name), ("job", "web"), ("instance", "web-1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    Bundle {
        header: Header {
            name: "ramp".into(),
            from_ms: T0,
            to_ms: T0 + 30 * MIN,
            recorded_at_ms: T0 + 31 * MIN,
            reason: "manual".into(),
            service: None,
            incident_ms: None,
            lead_in_ms: 0,
            logs_query: None,
            no_spans: false,
            keel_version: "test".into(),
        },
        config: Config {
            rules: serde_json::to_value(keel_alerting::rules::RulesConfig::default())
                .expect("rules"),
            notify: serde_json::to_value(keel_alerting::notify::NotifyConfig::default())
                .expect("notify"),
            controller: Some(serde_json::json!({
                "interval": "15s",
                "policies": [{
                    "name": "web",
                    "actuator": {"type": "dry_run", "start": 2},
                    "min": 1, "max": 10,
                    "metrics": [{"name": "rate", "query": "sum(req_rate)", "average": 100.0}],
                }],
            })),
        },
        files: vec![File {
            kind: "rules".into(),
            name: "/etc/keel/rules/shop.yml".into(),
            text: rule(0.1),
        }],
        series: vec![
            Series {
                labels: labels("err_ratio"),
                samples: errors,
            },
            Series {
                labels: labels("req_rate"),
                samples: requests,
            },
        ],
        logs: Vec::new(),
        spans: Vec::new(),
        marks,
        events: Vec::new(),
        alerts: Vec::new(),
        pages: Vec::new(),
    }
}

fn keel(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(KEEL).args(args).output().expect("run keel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_rules(dir: &Path, name: &str, threshold: f64) -> String {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("shop.yml"), rule(threshold)).expect("write");
    d.display().to_string()
}

#[test]
fn replay_is_repeatable_and_times_the_alert_from_recorded_arrivals_and_ticks() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ramp.keelinc");
    bundle().write(&path).expect("write bundle");
    let p = path.display().to_string();
    let first = keel(&["replay", &p]);
    assert!(first.0, "replay failed: {}", first.2);
    for _ in 0..2 {
        assert_eq!(keel(&["replay", &p]), first, "replays differ");
    }
    // The 0.105 sample (+15:15) arrives at +15:15.100; the evaluation at
    // +15:30.050 makes it pending, the one a minute later fires and pages.
    let out = &first.1;
    assert!(
        out.contains("+15:30.050  2027-01-15T08:15:30.050Z  alert    P0 ErrorsHigh{instance=\"web-1\",job=\"web\"} inactive -> pending"),
        "{out}"
    );
    assert!(
        out.contains("+16:30.050  2027-01-15T08:16:30.050Z  alert    P0 ErrorsHigh{instance=\"web-1\",job=\"web\"} pending -> firing"),
        "{out}"
    );
    assert!(
        out.contains("+16:30.050  2027-01-15T08:16:30.050Z  notify   page P0 ErrorsHigh"),
        "{out}"
    );
    // Requests triple at +10m: the autoscaler (average 100 a replica)
    // scales 2 -> 5 at the first tick that sees 450/s.
    assert!(out.contains("scale    web 2 -> 5"), "{out}");
    // The bundle records no alerts, pages or scaling: the replay lists
    // each as a difference.
    assert!(out.contains("not reproduced exactly"), "{out}");
    // --stats is the only place wall-clock time appears, on stderr.
    let stats = keel(&["replay", &p, "--stats"]);
    assert_eq!(stats.1, first.1);
    assert!(
        stats.2.contains("recorded seconds per wall second"),
        "{}",
        stats.2
    );
    assert!(!first.2.contains("wall"), "{}", first.2);
}

#[test]
fn a_what_if_diff_shows_the_tightened_rule_earlier_and_the_loosened_one_missing() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ramp.keelinc");
    bundle().write(&path).expect("write bundle");
    let p = path.display().to_string();
    // 0.05 is crossed by the 0.055 sample at +12:45, 150 s earlier.
    let tight = write_rules(dir.path(), "tight", 0.05);
    let (ok, out, err) = keel(&["replay", &p, "--rules", &tight]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "first P0 page                +16:30.050       +14:00.050       2m 30s earlier"
        ),
        "{out}"
    );
    let loose = write_rules(dir.path(), "loose", 0.3);
    let (ok, out, err) = keel(&["replay", &p, "--rules", &loose]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "first P0 page                +16:30.050       -                no longer pages"
        ),
        "{out}"
    );
    assert!(
        out.contains("alert ErrorsHigh fired       1                0                missing (no longer fires)"),
        "{out}"
    );
    // A policy capped at 3 replicas scales less far.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "controller:\n  interval: 15s\n  policies:\n  - name: web\n    actuator: {type: dry_run, start: 2}\n    min: 1\n    max: 3\n    metrics:\n    - {name: rate, query: sum(req_rate), average: 100}\n",
    )
    .expect("policy");
    let (ok, out, err) = keel(&["replay", &p, "--policy", &policy.display().to_string()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("web: peak instances          5                3"),
        "{out}"
    );
}

#[test]
fn a_failed_expectation_fails_the_replay_naming_it() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ramp.keelinc");
    bundle().write(&path).expect("write bundle");
    let p = path.display().to_string();
    let (ok, out, err) = keel(&[
        "replay",
        &p,
        "--assert",
        "P0 within 17m",
        "--assert",
        "P0 within 15m",
        "--assert",
        "no P1 page",
        "--assert",
        "at most 0 scaling actions",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("assert ok: P0 within 17m"), "{out}");
    assert!(out.contains("assert ok: no P1 page"), "{out}");
    assert!(
        err.contains("2 expectation(s) failed: \"P0 within 15m\" (the first P0 page came 16m 30s 50ms after the start"),
        "{err}"
    );
    assert!(
        err.contains("\"at most 0 scaling actions\" (1 scaling action(s))"),
        "{err}"
    );
    let (ok, _, err) = keel(&["replay", &p, "--assert", "P0 eventually"]);
    assert!(!ok);
    assert!(
        err.contains("--assert \"P0 eventually\": not understood"),
        "{err}"
    );
}

#[test]
fn damaged_bundles_and_missing_rules_are_refused_by_name() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("ramp.keelinc");
    bundle().write(&good).expect("write bundle");
    let bytes = std::fs::read(&good).expect("read");
    let cut = dir.path().join("cut.keelinc");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let (ok, out, err) = keel(&["replay", &cut.display().to_string()]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("cut.keelinc: truncated") || err.contains("cut.keelinc: corrupt"),
        "{err}"
    );
    let future = dir.path().join("future.keelinc");
    let mut v = b"keel-incident 2\n".to_vec();
    v.extend_from_slice(&bytes[16..]);
    std::fs::write(&future, v).expect("write");
    let (ok, _, err) = keel(&["replay", &future.display().to_string()]);
    assert!(!ok);
    assert!(
        err.contains("future.keelinc: incident bundle format version 2; this keel reads version 1"),
        "{err}"
    );
    let mut b = bundle();
    b.marks.push(Mark::RuleEval {
        at_ms: T0 + 5 * MIN,
        file: "/etc/keel/rules/db.yml".into(),
        group: "db".into(),
    });
    let missing = dir.path().join("missing.keelinc");
    b.write(&missing).expect("write");
    let (ok, out, err) = keel(&["replay", &missing.display().to_string()]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("the recording evaluated rules from /etc/keel/rules/db.yml, which the bundle does not hold"),
        "{err}"
    );
    // As the message says: --rules stands in for the missing files.
    let rules = write_rules(dir.path(), "all", 0.1);
    let (ok, out, err) = keel(&["replay", &missing.display().to_string(), "--rules", &rules]);
    assert!(ok, "{err}");
    assert!(
        out.contains("first P0 page                +16:30.050       +16:30.050       same time"),
        "{out}"
    );
}

/// db-1 leads until +6:00, then stops answering (its replicas' pulls
/// fail too); the recording's controller (threshold 3, probes every 1 s)
/// failed over to db-2 on the probe at +6:02.
fn failover_bundle() -> Bundle {
    let mut b = bundle();
    let ctl = b.config.controller.as_mut().expect("controller");
    ctl["failover"] = serde_json::json!([failover_target(3)]);
    let replica = |epoch: u64, ok: bool| {
        serde_json::json!({"answered": {"role": "replica", "epoch": epoch, "last_lsn": 100, "wal_bytes": 1000,
            "primary_ok": ok, "lag_ms": 0, "primary_head_lsn": 100, "primary_head_bytes": 1000}})
    };
    let primary = |epoch: u64| serde_json::json!({"answered": {"role": "primary", "epoch": epoch, "last_lsn": 100, "wal_bytes": 1000}});
    let down = serde_json::json!({"failed": "connection refused"});
    for s in 300..420 {
        let at = T0 + s * 1000;
        let (watch, members) = if s < 363 {
            let up = s < 360;
            (
                serde_json::json!({"primary": "db-1", "epoch": 1, "failures": 0, "first_failure_ms": null,
                    "last_failover_ms": null, "primary_lsn": 100, "primary_bytes": 1000}),
                serde_json::json!({"db-1": if up { primary(1) } else { down.clone() },
                    "db-2": replica(1, up), "db-3": replica(1, up)}),
            )
        } else {
            (
                serde_json::json!({"primary": "db-2", "epoch": 2, "failures": 0, "first_failure_ms": null,
                    "last_failover_ms": T0 + 362_000, "primary_lsn": 100, "primary_bytes": 1000}),
                serde_json::json!({"db-1": down.clone(), "db-2": primary(2), "db-3": replica(2, true)}),
            )
        };
        b.marks.push(Mark::Probe {
            at_ms: at,
            target: "db".into(),
            watch,
            observation: serde_json::json!({"at_ms": at, "members": members}),
        });
    }
    b.marks.sort_by_key(Mark::at_ms);
    b.events.push(serde_json::json!({
        "at_ms": T0 + 362_150, "kind": "failover.detected", "subject": "db",
        "explanation": "db: primary lost", "read_back": null,
        "decision": {"primary": "db-1", "epoch": 1, "automatic": true, "detection_ms": 2000, "first_failure_ms": T0 + 360_000},
    }));
    b
}

fn failover_target(threshold: u32) -> serde_json::Value {
    serde_json::json!({
        "name": "db", "driver": {"type": "sample"}, "mode": "asynchronous",
        "failure_threshold": threshold, "probe_interval": "1s",
        "members": [{"name": "db-1"}, {"name": "db-2"}, {"name": "db-3"}],
    })
}

#[test]
fn failover_is_decided_again_from_the_recorded_probe_rounds() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.keelinc");
    failover_bundle().write(&path).expect("write bundle");
    let p = path.display().to_string();
    let (ok, out, err) = keel(&["replay", &p, "--assert", "failover within 6m3s"]);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains("+06:02.000  2027-01-15T08:06:02.000Z  failover db: db-1 lost, promote db-2 at epoch 2 (detected after 2s)"),
        "{out}"
    );
    // The recorded failover is matched (alerts and pages were not recorded).
    assert!(!out.contains("failover db ("), "{out}");
    let policy = |threshold: u32| {
        let f = dir.path().join(format!("policy-{threshold}.json"));
        let c = serde_json::json!({
            "interval": "15s",
            "policies": [{"name": "web", "actuator": {"type": "dry_run", "start": 2}, "min": 1, "max": 10,
                "metrics": [{"name": "rate", "query": "sum(req_rate)", "average": 100.0}]}],
            "failover": [failover_target(threshold)],
        });
        std::fs::write(&f, serde_json::to_string(&c).expect("json")).expect("write");
        f.display().to_string()
    };
    let (ok, out, err) = keel(&["replay", &p, "--policy", &policy(2)]);
    assert!(ok, "{err}");
    assert!(
        out.contains("failover db                  +06:02.000 (2s)  +06:01.000 (1s)  1s earlier"),
        "{out}"
    );
    let (ok, out, err) = keel(&[
        "replay",
        &p,
        "--policy",
        &policy(5),
        "--assert",
        "no failover",
    ]);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains("failover db                  +06:02.000 (2s)  -                no failover"),
        "{out}"
    );
    assert!(
        out.contains(
            "failover db: the what-if had not decided when the recording failed over at +06:03.000"
        ),
        "{out}"
    );
}

#[test]
fn score_says_which_incidents_a_rule_caught_and_how_early() {
    let _turn = crate::common::heavy_blocking();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = bundle();
    // The outage began at +16:00.
    b.header.incident_ms = Some(T0 + 16 * MIN);
    let path = dir.path().join("ramp.keelinc");
    b.write(&path).expect("write bundle");
    let tight = write_rules(dir.path(), "tight", 0.05);
    let (ok, out, err) = keel(&[
        "incident",
        "score",
        "--rules",
        &tight,
        &path.display().to_string(),
    ]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("ErrorsHigh"))
        .unwrap_or_else(|| panic!("{out}"));
    // Fired at +14:00.050: 1m 59.95s ahead of the outage; no flapping.
    assert!(row.contains("1/1"), "{row}");
    assert!(row.contains("1m 59s 950ms"), "{row}");
    assert!(row.trim_end().ends_with("0  ramp"), "{row}");
    let loose = write_rules(dir.path(), "loose", 0.3);
    let (ok, out, _) = keel(&[
        "incident",
        "score",
        "--rules",
        &loose,
        &path.display().to_string(),
    ]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ErrorsHigh") && l.contains("0/1")),
        "{out}"
    );
}
