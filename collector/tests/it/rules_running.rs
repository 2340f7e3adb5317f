//! The collector runs its rules on the injected (manual) clock: pending
//! to firing exactly at `for`, resolution, templates, the rules and
//! alerts APIs, and reloads — by request and by file watch — where a bad
//! file leaves the last good rules running and its error visible.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{ManualClock, SharedClock};
use serde_json::Value;

use crate::common::{evaluated_at, get, x};

const RULES: &str = "groups:\n- name: shop\n  interval: 10s\n  rules:\n  - alert: High\n    expr: x > 1\n    for: 1m\n    severity: P0\n    annotations:\n      summary: '{{ $labels.instance }} at {{ $value }}'\n";

fn rule<'a>(rules: &'a Value, name: &str) -> &'a Value {
    rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name}: {rules}"))
}

async fn collector(dir: &std::path::Path, clock: &ManualClock, reload: Duration) -> Running {
    let config = CollectorConfig {
        data_dir: dir.join("data"),
        otlp_http_port: 0,
        otlp_grpc_port: 0,
        api_port: 0,
        rules: RulesConfig {
            files: vec![dir.join("rules")],
            reload_interval: reload,
            ..RulesConfig::default()
        },
        ..CollectorConfig::default()
    };
    let clock: SharedClock = Arc::new(clock.clone());
    start(&config, clock).await.expect("collector starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_pending_then_firing_at_for_and_resolve_on_the_manual_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/shop.yml"), RULES).expect("write");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let clock = ManualClock::new(t0);
    let c = collector(dir.path(), &clock, Duration::ZERO).await;
    // The first evaluation is at start, with no data: nothing.
    let rules = evaluated_at(c.api, t0).await;
    assert_eq!(rule(&rules, "High")["state"], "inactive");
    // Above the threshold from t0+10s: pending until 1m later, exactly.
    for step in 1..=7 {
        let t = t0 + Duration::from_secs(10 * step);
        x(&c, "a", t, 5.0 + step as f64);
        clock.set(t);
        let rules = evaluated_at(c.api, t).await;
        let r = rule(&rules, "High");
        let state = if step < 7 { "pending" } else { "firing" };
        assert_eq!(r["state"], state, "at {}s: {r}", 10 * step);
        assert_eq!(r["health"], "ok");
    }
    let alerts = get(c.api, "/api/v1/alerts").await;
    let a = &alerts["data"]["alerts"][0];
    assert_eq!(a["state"], "firing", "{alerts}");
    assert_eq!(a["labels"]["alertname"], "High");
    assert_eq!(a["labels"]["severity"], "P0");
    assert_eq!(a["annotations"]["summary"], "a at 12");
    assert_eq!(
        a["activeAt"],
        humantime::format_rfc3339_millis(t0 + Duration::from_secs(10)).to_string()
    );
    // Below the threshold: resolved, and gone from /api/v1/alerts.
    let t = t0 + Duration::from_secs(80);
    x(&c, "a", t, 0.5);
    clock.set(t);
    let rules = evaluated_at(c.api, t).await;
    assert_eq!(rule(&rules, "High")["state"], "inactive");
    let alerts = get(c.api, "/api/v1/alerts").await;
    assert_eq!(
        alerts["data"]["alerts"].as_array().map(Vec::len),
        Some(0),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_last_good_rules_and_a_good_one_keeps_alert_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    let file = dir.path().join("rules/shop.yml");
    std::fs::write(&file, RULES.replace("for: 1m", "for: 0s")).expect("write");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let clock = ManualClock::new(t0);
    let c = collector(dir.path(), &clock, Duration::from_secs(5)).await;
    x(&c, "a", t0, 5.0);
    let t1 = t0 + Duration::from_secs(10);
    clock.set(t1);
    let rules = evaluated_at(c.api, t1).await;
    assert_eq!(rule(&rules, "High")["state"], "firing");
    let active = rule(&rules, "High")["alerts"][0]["activeAt"].clone();

    // A broken file: refused with its place; the old rules go on.
    std::fs::write(
        &file,
        "groups:\n- name: shop\n  rules:\n  - alert: High\n    expr: x >\n    severity: P0\n",
    )
    .expect("write");
    let r = reqwest::Client::new()
        .post(format!("http://{}/-/reload", c.api))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 400);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("shop.yml:5:") && body.contains("expr"),
        "{body}"
    );
    let t2 = t1 + Duration::from_secs(10);
    clock.set(t2);
    let rules = evaluated_at(c.api, t2).await;
    assert_eq!(
        rule(&rules, "High")["state"],
        "firing",
        "still evaluated: {rules}"
    );
    assert_eq!(rules["data"]["reload"]["success"], false);
    assert!(
        rules["data"]["reload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("shop.yml:5:"))
    );

    // A good file, picked up by the file watch (every 5 s on the clock):
    // a new rule appears, and High's alert keeps its activeAt.
    std::fs::write(
        &file,
        format!(
            "{}  - alert: Low\n    expr: x < 100\n    severity: P2\n",
            RULES.replace("for: 1m", "for: 0s")
        ),
    )
    .expect("write");
    clock.set(t2 + Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rules = get(c.api, "/api/v1/rules").await;
        let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        if names == ["High", "Low"] && rules["data"]["reload"]["success"] == true {
            assert_eq!(
                rule(&rules, "High")["alerts"][0]["activeAt"],
                active,
                "state kept across the reload"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the changed file was not reloaded: {rules}"
        );
        // The watch task may have gone back to sleep only after the
        // clock moved (its deadline is then later): step the clock on
        // until it wakes (at most ~200 s, inside the 5 m lookback).
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn arrivals_evaluate_a_group_early_once_half_its_interval_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("shop.yml"), RULES).expect("write");
    let t0 = 1_796_000_000_000;
    let clock: SharedClock = Arc::new(ManualClock::new(keel_core::clock::from_unix_ms(t0)));
    let store = Arc::new(keel_metricstore::Store::in_memory(
        keel_metricstore::StoreConfig::default(),
    ));
    let m = keel_alerting::rules::RuleManager::new(
        RulesConfig {
            files: vec![dir.path().join("shop.yml")],
            ..RulesConfig::default()
        },
        Box::new(keel_alerting::rules::source::StoreSource::new(store, None)),
        clock,
    )
    .expect("rules load");
    let last = || m.with_groups(|g, _| g[0].health[0].at_ms);
    // The group's interval is 10s.
    assert_eq!(m.eval_due(t0), Some(t0 + 10_000));
    assert_eq!(last(), t0);
    // Samples 4s later: too soon to evaluate again; they are seen half
    // an interval after the last evaluation.
    assert_eq!(m.eval_arrived(t0 + 4_000), Some(t0 + 5_000));
    assert_eq!(last(), t0);
    assert_eq!(m.eval_due(t0 + 5_000), Some(t0 + 15_000));
    assert_eq!(last(), t0 + 5_000);
    // 6s after that: evaluated at once, the schedule starting again.
    assert_eq!(m.eval_arrived(t0 + 11_000), Some(t0 + 21_000));
    assert_eq!(last(), t0 + 11_000);
    // Without arrivals, the schedule holds.
    assert_eq!(m.eval_due(t0 + 15_000), Some(t0 + 21_000));
    assert_eq!(last(), t0 + 11_000);
    assert_eq!(m.eval_due(t0 + 21_000), Some(t0 + 31_000));
    assert_eq!(last(), t0 + 21_000);
}
