//! No query takes the collector down: a query bomb is refused with
//! Prometheus' error at the sample limit or the timeout, through the
//! API, a dashboard panel and a rule alike, while OTLP ingest and the
//! other rules go on; ranges Prometheus refuses are refused in its words.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keel_alerting::rules::RulesConfig;
use keel_collector::server::{CollectorConfig, Running, start};
use keel_core::clock::{ManualClock, SharedClock};
use keel_promql::QueryLimits;
use keel_testkit::wait::until;
use prost::Message as _;
use serde_json::{Value, json};

use crate::common::{evaluated_at, gauge, kv, point, query, request, samples, x};

/// Loads a sample per millisecond for 1000 days: ~8.6 × 10^10.
const BOMB: &str = "count_over_time(vector(1)[1000d:1ms])";
const TOO_MANY: &str =
    "query processing would load too many samples into memory in subquery evaluation";

const RULES: &str = "groups:\n- name: g\n  interval: 10s\n  rules:\n  - alert: Bomb\n    expr: count_over_time(vector(1)[1000d:1ms]) > 0\n    severity: P1\n  - alert: High\n    expr: x > 1\n    severity: P0\n";

/// A collector on the manual clock with `query` limits, evaluating
/// `rules` (a group file's text) if any.
async fn collector(
    dir: &std::path::Path,
    clock: &ManualClock,
    query: QueryLimits,
    rules: Option<&str>,
) -> Running {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    if let Some(text) = rules {
        std::fs::write(dir.join("rules/g.yml"), text).expect("write rules");
    }
    let config = CollectorConfig {
        rules: RulesConfig {
            files: vec![dir.join("rules")],
            ..RulesConfig::default()
        },
        query,
        ..crate::common::config(&dir.join("data"))
    };
    let clock: SharedClock = Arc::new(clock.clone());
    start(&config, clock).await.expect("collector starts")
}

/// POST one OTLP gauge point of `ingested` at `t_ms`; the HTTP status.
async fn ingest(c: &Running, t_ms: u64, v: f64) -> u16 {
    let req = request(
        "shop",
        vec![gauge(
            "ingested",
            "",
            vec![point(t_ms, v, vec![kv("n", "1")])],
        )],
    );
    reqwest::Client::new()
        .post(format!("http://{}/v1/metrics", c.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("ingest")
        .status()
        .as_u16()
}

fn rule<'a>(rules: &'a Value, name: &str) -> &'a Value {
    rules["data"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name}: {rules}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_bomb_is_refused_at_the_sample_limit_everywhere_while_ingest_and_rules_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let clock = ManualClock::new(t0);
    let limits = QueryLimits {
        max_samples: 300_000,
        max_concurrency: 2,
        ..QueryLimits::default()
    };
    let c = collector(dir.path(), &clock, limits, Some(RULES)).await;
    let t0_ms = keel_core::clock::unix_ms(t0) as u64;
    // Four bombs at once (two wait for a slot), and batches meanwhile.
    let bombs: Vec<_> = (0..4)
        .map(|_| tokio::spawn(query(c.api, BOMB, t0_ms)))
        .collect();
    for i in 0..20 {
        assert_eq!(ingest(&c, t0_ms + i * 1000, i as f64).await, 200);
    }
    for b in bombs {
        let a = b.await.expect("joins");
        assert_eq!(
            (&a["status"], &a["errorType"]),
            (&json!("error"), &json!("execution")),
            "{a}"
        );
        assert_eq!(a["error"], TOO_MANY);
    }
    // Every batch is there, and the collector still answers.
    let a = query(c.api, "count_over_time(ingested[1m])", t0_ms + 30_000).await;
    assert_eq!(samples(&a).first().map(|s| s.1), Some(20.0), "{a}");
    // A dashboard panel with the bomb gets the same refusal.
    let panel = json!({"title": "Bomb", "type": "timeseries", "queries": [{"expr": BOMB}]});
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/panels/data?start={}&end={}&step=60",
            c.api,
            t0_ms / 1000,
            t0_ms / 1000 + 60
        ))
        .json(&panel)
        .send()
        .await
        .expect("panel");
    let v: Value = r.json().await.expect("json");
    assert!(v.to_string().contains(TOO_MANY), "{v}");
    // The bomb rule is `err` with Prometheus' message; the rule after it
    // fires.
    let t = t0 + Duration::from_secs(10);
    x(&c, "a", t, 5.0);
    clock.set(t);
    let rules = evaluated_at(c.api, t).await;
    let bomb = rule(&rules, "Bomb");
    assert_eq!(
        (&bomb["health"], &bomb["lastError"]),
        (&json!("err"), &json!(TOO_MANY)),
        "{bomb}"
    );
    let high = rule(&rules, "High");
    assert_eq!(
        (&high["health"], &high["state"]),
        (&json!("ok"), &json!("firing")),
        "{high}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_timeout_is_a_503_and_ingest_goes_on_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let clock = ManualClock::new(t0);
    // Only the timeout can stop it.
    let limits = QueryLimits {
        timeout: Duration::from_secs(1),
        max_samples: usize::MAX,
        ..QueryLimits::default()
    };
    let c = collector(dir.path(), &clock, limits, None).await;
    let t0_ms = keel_core::clock::unix_ms(t0) as u64;
    let bomb = tokio::spawn(async move {
        reqwest::get(format!(
            "http://{}/api/v1/query?query={}&time={}",
            c.api,
            BOMB.replace('[', "%5B").replace(']', "%5D"),
            t0_ms / 1000
        ))
        .await
        .expect("query")
    });
    // Ingest while the bomb runs.
    until("the bomb to start", Duration::from_secs(20), async || {
        (running(&c).await == 1).then_some(())
    })
    .await;
    for i in 0..10 {
        assert_eq!(ingest(&c, t0_ms + i * 1000, 1.0).await, 200);
    }
    let r = bomb.await.expect("joins");
    assert_eq!(r.status(), 503);
    let a: Value = r.json().await.expect("json");
    assert_eq!(a["errorType"], "timeout", "{a}");
    assert_eq!(a["error"], "query timed out in subquery evaluation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_prometheus_refuses_are_400s_in_its_words_and_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000));
    let c = collector(dir.path(), &clock, QueryLimits::default(), None).await;
    for (range, error) in [
        (
            "start=0&end=100&step=0.0006",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "start=0&end=100&step=-5",
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ),
        (
            "start=-9e15&end=9e15&step=1",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ),
        (
            "start=100&end=0&step=1",
            "invalid parameter \"end\": end timestamp must not be before start time",
        ),
        (
            "start=1e300&end=1e301&step=1",
            "cannot parse \"1e300\" to a valid timestamp",
        ),
    ] {
        let r = reqwest::get(format!(
            "http://{}/api/v1/query_range?query=vector(1)&{range}",
            c.api
        ))
        .await
        .expect("range");
        assert_eq!(r.status(), 400, "{range}");
        let a: Value = r.json().await.expect("json");
        assert_eq!(a["errorType"], "bad_data", "{range}: {a}");
        assert!(
            a["error"].as_str().unwrap_or_default().starts_with(error),
            "{range}: {a}"
        );
    }
    // The widest range Prometheus allows, in few steps, answers.
    let r = reqwest::get(format!(
        "http://{}/api/v1/query_range?query=vector(1)&start=-9e15&end=9e15&step=9e12",
        c.api
    ))
    .await
    .expect("range");
    assert_eq!(r.status(), 200);
}

/// A query nested 30,000 deep (60 KB of brackets) overflowed the thread
/// that parsed it and aborted the collector; it is a 400 naming where,
/// and the collector answers the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_nested_too_deep_is_a_400_and_the_collector_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000));
    let c = collector(dir.path(), &clock, QueryLimits::default(), None).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/query", c.api);
    for deep in [
        format!("{}1{}", "(".repeat(30_000), ")".repeat(30_000)),
        vec!["vector(1)"; 30_000].join(" or "),
    ] {
        let r = client
            .post(&url)
            .form(&[("query", deep.as_str())])
            .send()
            .await
            .expect("query");
        assert_eq!(r.status(), 400);
        let a: Value = r.json().await.expect("json");
        assert_eq!(a["errorType"], "bad_data", "{a}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("nests deeper than 1000") && error.contains("at byte"),
            "{a}"
        );
    }
    let r = client
        .post(&url)
        .form(&[("query", "vector(1)")])
        .send()
        .await
        .expect("query");
    assert_eq!(r.status(), 200);
}

/// Queries running now, from the status API.
async fn running(c: &Running) -> u64 {
    let v = crate::common::get(c.api, "/api/v1/status/keel").await;
    v["data"]["queries"]["running"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_client_goes_away_is_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000));
    // Neither limit would stop the bomb for minutes.
    let limits = QueryLimits {
        max_samples: usize::MAX,
        timeout: Duration::from_secs(600),
        ..QueryLimits::default()
    };
    let c = collector(dir.path(), &clock, limits, None).await;
    let api = c.api;
    let client = tokio::spawn(async move {
        reqwest::get(format!(
            "http://{api}/api/v1/query?query={}",
            BOMB.replace('[', "%5B").replace(']', "%5D")
        ))
        .await
    });
    until("the bomb to start", Duration::from_secs(20), async || {
        (running(&c).await == 1).then_some(())
    })
    .await;
    // The client hangs up; the query stops long before its limits.
    client.abort();
    let _ = client.await;
    until(
        "the cancelled bomb to stop",
        Duration::from_secs(20),
        async || (running(&c).await == 0).then_some(()),
    )
    .await;
}
