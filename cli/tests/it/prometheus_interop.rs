//! Keel's Prometheus API as Grafana and promtool call it, beside a real
//! Prometheus holding the same data: Prometheus scrapes a fixed target
//! (two jobs) and remote-writes everything, metadata included, to a real
//! `keel collector`. Then
//!
//! - `promtool query labels` with `--match`, `--start` and `--end` prints
//!   the same values from both;
//! - every call Grafana's Prometheus data source makes (method, form
//!   body, `Accept-Encoding: gzip`) answers on Keel with Prometheus'
//!   shape, and where the data is the same (queries, labels, series,
//!   metadata, cardinality, formatting) with Prometheus' answer.
//!
//! Gated on `KEEL_TEST_PROMETHEUS` (Debian's `prometheus`, whose package
//! has `promtool`; `.ci/run` installs it and sets the variable).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

/// What the target exposes: two families with help and type.
const EXPOSITION: &str = "# HELP shop_requests_total Requests served.\n\
# TYPE shop_requests_total counter\n\
shop_requests_total{code=\"200\",path=\"/a\"} 10\n\
shop_requests_total{code=\"500\",path=\"/b\"} 1\n\
# HELP shop_temp_celsius Temperature of a room.\n\
# TYPE shop_temp_celsius gauge\n\
shop_temp_celsius{room=\"x\"} 21\n";

/// A histogram in OpenMetrics with an exemplar on one bucket (at a fixed
/// time, so each scrape states the same one).
fn openmetrics_with_exemplar(at_s: f64) -> String {
    format!(
        "# HELP shop_latency_seconds How long requests took.\n\
         # TYPE shop_latency_seconds histogram\n\
         shop_latency_seconds_bucket{{le=\"0.1\"}} 1\n\
         shop_latency_seconds_bucket{{le=\"1.0\"}} 3 # {{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"}} 0.5 {at_s:.3}\n\
         shop_latency_seconds_bucket{{le=\"+Inf\"}} 3\n\
         shop_latency_seconds_sum 1.2\n\
         shop_latency_seconds_count 3\n\
         # EOF\n"
    )
}

/// Serve [`EXPOSITION`] at `/metrics` and [`openmetrics_with_exemplar`]
/// at `/exemplars` on a free port; its address.
async fn target() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let at_s = now_s() - 10.0;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    EXPOSITION,
                )
            }),
        )
        .route(
            "/exemplars",
            axum::routing::get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    openmetrics_with_exemplar(at_s),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Whether the real Prometheus is here to compare with (say so if not).
fn gated() -> bool {
    let on = std::env::var_os("KEEL_TEST_PROMETHEUS").is_some();
    if !on {
        eprintln!(
            "skipped: set KEEL_TEST_PROMETHEUS=1 with Debian's prometheus installed (.ci/run does)"
        );
    }
    on
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One call as Grafana makes it: GET with the parameters in the URL, or
/// POST with them as a form body; gzip accepted. Status and JSON body.
async fn call(base: &str, method: &str, path: &str, params: &[(&str, String)]) -> (u16, Json) {
    let http = reqwest::Client::new();
    let url = format!("{base}{path}");
    let req = if method == "POST" {
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded_pairs(params))
    } else {
        http.get(&url).query(params)
    };
    let resp = req
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let gzipped = resp
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let bytes = resp.bytes().await.expect("body");
    let mut text = String::new();
    if gzipped {
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .expect("gunzip");
    } else {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    (status, json)
}

/// `params` as a form body.
fn serde_urlencoded_pairs(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::common::urlencode(k),
                crate::common::urlencode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether `keel` has every key `prom` has, with values of the same
/// shape, recursively (the first element of arrays both have; a number
/// where Prometheus has a number). Paths in `maps` are objects keyed by
/// data (label names, metric names): only their values' shapes count.
/// Keys in `absent` may be missing on Keel (Go runtime details). The
/// first difference, by path.
fn covers(
    keel: &Json,
    prom: &Json,
    at: &str,
    maps: &[&str],
    absent: &[&str],
) -> Result<(), String> {
    match (keel, prom) {
        (Json::Object(k), Json::Object(p)) if maps.contains(&at) => {
            match (k.values().next(), p.values().next()) {
                (Some(kv), Some(pv)) => covers(kv, pv, &format!("{at}.*"), maps, absent),
                (None, Some(_)) => Err(format!("{at}: Prometheus has entries, Keel none")),
                _ => Ok(()),
            }
        }
        (Json::Object(k), Json::Object(p)) => {
            for (key, pv) in p {
                let path = format!("{at}.{key}");
                match k.get(key) {
                    Some(kv) => covers(kv, pv, &path, maps, absent)?,
                    None if absent.contains(&path.as_str()) => {}
                    None => return Err(format!("{path}: Prometheus has it, Keel does not")),
                }
            }
            Ok(())
        }
        (Json::Array(k), Json::Array(p)) => match (k.first(), p.first()) {
            (Some(kv), Some(pv)) => covers(kv, pv, &format!("{at}[]"), maps, absent),
            // An empty answer has no shape to compare: where Prometheus
            // has items, Keel must too.
            (None, Some(_)) => Err(format!("{at}: Prometheus has items, Keel none")),
            _ => Ok(()),
        },
        (k, p) if std::mem::discriminant(k) == std::mem::discriminant(p) => Ok(()),
        // Prometheus writes an absent optional as null where Keel may
        // give a value, and the other way round.
        (Json::Null, _) | (_, Json::Null) => Ok(()),
        (k, p) => Err(format!("{at}: Keel has {k}, Prometheus {p}")),
    }
}

/// `promtool query labels` of `name` against `server`, its lines.
fn promtool_labels(server: &str, name: &str, args: &[String]) -> BTreeSet<String> {
    let out = std::process::Command::new("promtool")
        .args(["query", "labels"])
        .args(args)
        .arg(server)
        .arg(name)
        .output()
        .expect("KEEL_TEST_PROMETHEUS is set but promtool does not run");
    assert!(
        out.status.success(),
        "promtool query labels {args:?} {server} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_and_promtool_get_prometheus_answers_from_keel() {
    if !gated() {
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (keel_child, _, keel) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _keel = keel_testkit::Reaped(keel_child);
    let target = target().await;
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['{target}']\n  - job_name: other\n    static_configs:\n      - targets: ['{target}']\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: shop_temp_celsius\n        action: drop\n  - job_name: ex\n    metrics_path: /exemplars\n    static_configs:\n      - targets: ['{target}']\nremote_write:\n  - url: {keel}/api/v1/write\n    send_exemplars: true\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 1s\n"
    );
    let prom = keel_testkit::server::Server::prometheus(
        dir.path(),
        |_| config,
        &["--enable-feature=exemplar-storage"],
    )
    .await
    .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    let prom = prom.url.clone();
    let started = now_s();
    // Both hold a few scrapes of both jobs, and Keel the metadata.
    keel_testkit::until(
        "both hold five scrapes and Keel the metadata",
        Duration::from_secs(60),
        async || {
            for base in [&keel, &prom] {
                let v = crate::common::query_value(
                    base,
                    "count_over_time(up{job=\"other\"}[1m])",
                    None,
                )
                .await;
                if v.is_nan() || v < 5.0 {
                    return None;
                }
            }
            let (_, m) = call(&keel, "GET", "/api/v1/metadata", &[]).await;
            m["data"].get("shop_temp_celsius")?;
            let (_, e) = call(
                &keel,
                "GET",
                "/api/v1/query_exemplars",
                &[("query", "shop_latency_seconds_bucket".into())],
            )
            .await;
            e["data"].get(0).map(|_| ())
        },
    )
    .await;
    let now = now_s();
    // Inside what both hold (Keel's newest may lag a batch), and before it.
    let (inside_start, inside_end) = (started + 2.0, now - 2.0);
    let (before_start, before_end) = (started - 3600.0, started - 3000.0);

    // promtool, as a user runs it.
    let rfc = |t: f64| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("__name__", vec![]),
        ("__name__", vec!["--match={job=\"other\"}".into()]),
        ("job", vec!["--match=shop_temp_celsius".into()]),
        (
            "code",
            vec![
                "--match=shop_requests_total".into(),
                "--match={room=\"x\"}".into(),
            ],
        ),
        ("room", vec!["--match={job=\"other\"}".into()]),
        (
            "job",
            vec![
                format!("--start={}", rfc(inside_start)),
                format!("--end={}", rfc(inside_end)),
            ],
        ),
        (
            "__name__",
            vec![
                "--match={job=\"shop\"}".into(),
                format!("--start={}", rfc(inside_start)),
                format!("--end={}", rfc(inside_end)),
            ],
        ),
        (
            "__name__",
            vec![
                format!("--start={}", rfc(before_start)),
                format!("--end={}", rfc(before_end)),
            ],
        ),
        (
            "job",
            vec![
                "--match=up".into(),
                format!("--start={}", rfc(before_start)),
                format!("--end={}", rfc(before_end)),
            ],
        ),
    ];
    for (name, args) in &cases {
        let from_keel = promtool_labels(&keel, name, args);
        let from_prom = promtool_labels(&prom, name, args);
        assert_eq!(
            from_keel, from_prom,
            "promtool query labels {args:?} {name}"
        );
    }
    // The cases tell apart what they claim to (not all answers alike).
    let other_names = promtool_labels(&keel, "__name__", &["--match={job=\"other\"}".into()]);
    assert!(
        other_names.contains("shop_requests_total") && !other_names.contains("shop_temp_celsius"),
        "{other_names:?}"
    );
    assert!(promtool_labels(&keel, "__name__", &cases[7].1).is_empty());

    // Grafana's calls.
    let t = format!("{:.3}", now - 5.0);
    let range = vec![
        ("query", "shop_temp_celsius".to_owned()),
        ("start", format!("{:.3}", now - 10.0)),
        ("end", t.clone()),
        ("step", "1".to_owned()),
    ];
    let inside = |extra: Vec<(&'static str, String)>| {
        let mut v = extra;
        v.push(("start", format!("{inside_start:.3}")));
        v.push(("end", format!("{inside_end:.3}")));
        v
    };
    // (method, path, parameters, whether the data must be equal, maps, absent)
    type Call<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        bool,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    let calls: Vec<Call<'_>> = vec![
        (
            "POST",
            "/api/v1/query",
            vec![("query", "1+1".into()), ("time", t.clone())],
            true,
            vec![],
            vec![],
        ),
        (
            "POST",
            "/api/v1/query",
            vec![
                ("query", "shop_temp_celsius".into()),
                ("time", t.clone()),
                ("timeout", "30s".into()),
            ],
            true,
            vec![],
            vec![],
        ),
        (
            "POST",
            "/api/v1/query",
            vec![
                ("query", "sum by (job) (shop_requests_total)".into()),
                ("time", t.clone()),
            ],
            true,
            vec![],
            vec![],
        ),
        ("POST", "/api/v1/query_range", range, true, vec![], vec![]),
        (
            "GET",
            "/api/v1/status/buildinfo",
            vec![],
            false,
            vec![],
            vec![],
        ),
        (
            "POST",
            "/api/v1/labels",
            inside(vec![("match[]", "{job=\"other\"}".into())]),
            true,
            vec![],
            vec![],
        ),
        ("GET", "/api/v1/labels", vec![], true, vec![], vec![]),
        (
            "POST",
            "/api/v1/series",
            inside(vec![("match[]", "shop_requests_total".into())]),
            true,
            vec![".data[]"],
            vec![],
        ),
        (
            "GET",
            "/api/v1/series",
            vec![
                ("match[]", "{__name__=~\"shop_.*\"}".into()),
                ("limit", "1".into()),
            ],
            false,
            vec![".data[]"],
            vec![],
        ),
        (
            "GET",
            "/api/v1/label/__name__/values",
            inside(vec![("match[]", "{job=\"shop\"}".into())]),
            true,
            vec![],
            vec![],
        ),
        (
            "GET",
            "/api/v1/label/job/values",
            vec![],
            true,
            vec![],
            vec![],
        ),
        (
            "GET",
            "/api/v1/metadata",
            vec![],
            true,
            vec![".data"],
            vec![],
        ),
        (
            "GET",
            "/api/v1/metadata",
            vec![("metric", "shop_requests_total".into())],
            true,
            vec![".data"],
            vec![],
        ),
        (
            "POST",
            "/api/v1/format_query",
            vec![("query", "sum(rate(shop_requests_total[5m]))by(job)".into())],
            true,
            vec![],
            vec![],
        ),
        // The exemplar the OpenMetrics target gave, as Prometheus keeps it
        // and remote-writes it to Keel (`send_exemplars`).
        (
            "POST",
            "/api/v1/query_exemplars",
            vec![
                (
                    "query",
                    "histogram_quantile(0.9, rate(shop_latency_seconds_bucket[1m]))".into(),
                ),
                ("start", format!("{:.3}", started - 60.0)),
                ("end", format!("{now:.3}")),
            ],
            true,
            vec![],
            vec![],
        ),
        ("GET", "/api/v1/alerts", vec![], true, vec![], vec![]),
        (
            "GET",
            "/api/v1/rules",
            vec![("type", "alert".into())],
            false,
            vec![],
            vec![],
        ),
        (
            "GET",
            "/api/v1/status/config",
            vec![],
            false,
            vec![],
            vec![],
        ),
        (
            "GET",
            "/api/v1/status/flags",
            vec![],
            false,
            vec![".data"],
            vec![],
        ),
        (
            "GET",
            "/api/v1/status/runtimeinfo",
            vec![],
            false,
            vec![],
            vec![
                ".data.goroutineCount",
                ".data.corruptionCount",
                ".data.GOGC",
                ".data.GODEBUG",
                ".data.GOMEMLIMIT",
            ],
        ),
        ("GET", "/api/v1/status/tsdb", vec![], false, vec![], vec![]),
        (
            "GET",
            "/api/v1/targets",
            vec![("state", "active".into())],
            false,
            vec![
                ".data.activeTargets[].discoveredLabels",
                ".data.activeTargets[].labels",
            ],
            vec![],
        ),
    ];
    for (method, path, params, same, maps, absent) in &calls {
        let (ks, kv) = call(&keel, method, path, params).await;
        let (ps, pv) = call(&prom, method, path, params).await;
        let what = format!("{method} {path} {params:?}");
        assert_eq!(
            (ks, &kv["status"]),
            (ps, &pv["status"]),
            "{what}: Keel {kv}, Prometheus {pv}"
        );
        assert_eq!(ks, 200, "{what}: {kv}");
        if let Err(e) = covers(&kv, &pv, "", maps, absent) {
            panic!("{what}: {e}\nKeel: {kv}\nPrometheus: {pv}");
        }
        if *same {
            assert_eq!(kv["data"], pv["data"], "{what}");
        }
    }
    // What is the same data, where the shape alone would not say.
    let data = |base: &str, path: &'static str| {
        let base = base.to_owned();
        async move { call(&base, "GET", path, &[]).await.1["data"].clone() }
    };
    let (kt, pt) = (
        data(&keel, "/api/v1/status/tsdb").await,
        data(&prom, "/api/v1/status/tsdb").await,
    );
    // Ties come in no set order in Prometheus' answer.
    let counts = |v: &Json| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{}={}", c["name"], c["value"]))
            .collect()
    };
    assert_eq!(
        counts(&kt["seriesCountByMetricName"]),
        counts(&pt["seriesCountByMetricName"]),
        "tsdb: series by metric name"
    );
    assert_eq!(
        kt["headStats"]["numSeries"], pt["headStats"]["numSeries"],
        "tsdb: head series"
    );
    let flags = data(&keel, "/api/v1/status/flags").await;
    let prom_flags = data(&prom, "/api/v1/status/flags").await;
    for (k, _) in flags.as_object().expect("flags") {
        assert!(
            prom_flags.get(k).is_some(),
            "flag {k} is not one of Prometheus'"
        );
    }
    let targets = data(&keel, "/api/v1/targets").await;
    let jobs: BTreeSet<&str> = targets["activeTargets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["health"] == "up")
        .filter_map(|t| t["scrapePool"].as_str())
        .collect();
    assert_eq!(jobs, BTreeSet::from(["ex", "other", "shop"]), "{targets}");
    let (_, limited) = call(
        &keel,
        "GET",
        "/api/v1/series",
        &[
            ("match[]", "{__name__=~\"shop_.*\"}".into()),
            ("limit", "1".into()),
        ],
    )
    .await;
    assert_eq!(
        limited["data"].as_array().map(Vec::len),
        Some(1),
        "{limited}"
    );
    assert_eq!(
        limited["warnings"][0], "results truncated due to limit",
        "{limited}"
    );
    // Gzip where the client accepts it (answers over 1 KiB).
    let resp = reqwest::Client::new()
        .post(format!("{keel}/api/v1/query_range"))
        .header("accept-encoding", "gzip")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded_pairs(&[
            ("query", "{__name__=~\"shop_.*|up\"}".into()),
            ("start", format!("{inside_start:.3}")),
            ("end", format!("{inside_end:.3}")),
            ("step", "0.5".into()),
        ]))
        .send()
        .await
        .expect("query");
    assert_eq!(
        resp.headers().get("content-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    // Probes answer without a login.
    for probe in ["/-/healthy", "/-/ready"] {
        let r = reqwest::get(format!("{keel}{probe}")).await.expect("probe");
        assert_eq!(r.status(), 200, "{probe}");
    }
    let config = data(&keel, "/api/v1/status/config").await;
    assert!(
        config["yaml"]
            .as_str()
            .is_some_and(|y| y.contains("retention")),
        "{config}"
    );
}

/// Gauge points of `name` (service `keel-only`) at `times` (ms), value
/// `t / 1000`, sent to Keel over OTLP/HTTP.
async fn send_points(otlp: &str, name: &str, times: &[u64]) {
    use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, number_data_point};
    use prost::Message as _;
    let points = times
        .iter()
        .map(|t| NumberDataPoint {
            time_unix_nano: t * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(*t as f64 / 1000.0)),
            ..Default::default()
        })
        .collect();
    let body = crate::common::gauge_request(Some("keel-only"), name, points).encode_to_vec();
    let r = reqwest::Client::new()
        .post(format!("{otlp}/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("otlp");
    assert_eq!(r.status(), 200);
}

/// A real Prometheus reads series only Keel holds: one by federating
/// (`/federate`, `honor_labels`), one by remote read, and gets Keel's
/// samples back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_federates_and_remote_reads_from_keel() {
    if !gated() {
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (keel_child, otlp, keel) = crate::common::spawn_collector(dir.path(), 0, 0);
    let _keel = keel_testkit::Reaped(keel_child);
    let now_ms = (now_s() * 1000.0) as u64;
    // Ten minutes of a point every 30 s, the newest just now.
    let times: Vec<u64> = (0..20).map(|i| now_ms - 1000 - (19 - i) * 30_000).collect();
    send_points(&otlp, "fed.metric", &times).await;
    send_points(&otlp, "remote.metric", &times).await;
    // Federation text, as a scraper reads it.
    let (status, text) = crate::common::get_text(&format!(
        "{keel}/federate?match[]={}",
        crate::common::urlencode("{__name__=\"fed_metric\"}")
    ))
    .await;
    assert_eq!(status, 200, "{text}");
    let newest = times[times.len() - 1];
    assert_eq!(
        text,
        format!(
            "# TYPE fed_metric untyped\nfed_metric{{job=\"keel-only\"}} {} {newest}\n",
            keel_promql::format_value(newest as f64 / 1000.0)
        )
    );
    let host = keel.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{__name__=\"fed_metric\"}}']\n    static_configs:\n      - targets: ['{host}']\nremote_read:\n  - url: {keel}/api/v1/read\n    read_recent: true\n    required_matchers:\n      __name__: remote_metric\n"
    );
    let prom = keel_testkit::server::Server::prometheus(dir.path(), |_| config, &[])
        .await
        .expect("KEEL_TEST_PROMETHEUS is set but prometheus does not start");
    // Federated: Keel's series under its own job, its newest value.
    let fed = keel_testkit::until(
        "Prometheus federated fed_metric from Keel",
        Duration::from_secs(60),
        async || {
            let r = crate::common::query(&prom.url, "fed_metric", None).await;
            r.into_iter().next()
        },
    )
    .await;
    assert_eq!(fed["metric"]["job"], "keel-only", "{fed}");
    assert_eq!(fed["metric"]["instance"], host, "scraped, not read: {fed}");
    assert_eq!(
        fed["value"][1],
        keel_promql::format_value(newest as f64 / 1000.0),
        "{fed}"
    );
    // Remote read: every one of Keel's samples over the ten minutes.
    let count =
        crate::common::query_value(&prom.url, "count_over_time(remote_metric[11m])", None).await;
    assert_eq!(count, times.len() as f64, "samples read back from Keel");
    let first =
        crate::common::query_value(&prom.url, "remote_metric", Some(times[0] as f64 / 1000.0))
            .await;
    assert_eq!(first, times[0] as f64 / 1000.0);
}
