//! What the tiers emit (metrics, logs, spans: assert on real output) and
//! how they treat malformed requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Clone, Debug)]
struct Got {
    service: String,
    instance: String,
    span: Span,
}

/// A minimal OTLP/HTTP receiver: decodes protobuf trace exports.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let g2 = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let got = g2.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                let mut out = got.lock().expect("lock");
                for rs in req.resource_spans {
                    let attr = |k: &str| {
                        rs.resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|a| a.key == k))
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default()
                    };
                    let (service, instance) = (attr("service.name"), attr("service.instance.id"));
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            out.push(Got {
                                service: service.clone(),
                                instance: instance.clone(),
                                span,
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn find<'a>(spans: &'a [Got], service: &str, name: &str) -> &'a Got {
    spans
        .iter()
        .find(|g| g.service.contains(service) && g.span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} from {service}: {:?}",
                spans
                    .iter()
                    .map(|g| (&g.service, &g.span.name))
                    .collect::<Vec<_>>()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_spans_carry_the_semantic_convention_names_and_one_trace_spans_all_tiers()
{
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, got) = otlp_receiver().await;
    let mut config = test_config(dir.path());
    config.otlp_endpoint = Some(endpoint);
    config.otlp_flush_interval = Duration::from_millis(100);
    let (sup, ep) = start(config).await;
    let http = reqwest::Client::new();
    let lb = ep.lb;

    // One request, under a trace the caller started.
    let r = http
        .post(format!("http://{lb}/api/orders"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({ "product_id": 5, "quantity": 2 }))
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201);
    // Uncached reads round-robin over the replicas: every tier serves something.
    for id in 10..20 {
        let r = http
            .get(format!("http://{lb}/api/products/{id}"))
            .send()
            .await
            .expect("product");
        assert_eq!(r.status(), 200);
    }

    // Spans: lb → web → db, one trace, parent links intact.
    let spans = eventually("spans from lb, web and db", Duration::from_secs(10), || {
        let got = got.clone();
        async move {
            let spans: Vec<Got> = got
                .lock()
                .expect("lock")
                .iter()
                .filter(|g| hex(&g.span.trace_id) == TRACE_ID)
                .cloned()
                .collect();
            let has = |s: &str, n: &str| {
                spans
                    .iter()
                    .any(|g| g.service.contains(s) && g.span.name == n)
            };
            (has("shop-lb", "POST /*")
                && has("shop-lb", "proxy")
                && has("shop-web", "POST /api/orders")
                && has("shop-web", "db PUT")
                && has("shop-db", "PUT /kv/{key}"))
            .then_some(spans)
        }
    })
    .await;
    let lb_server = find(&spans, "shop-lb", "POST /*");
    let lb_client = find(&spans, "shop-lb", "proxy");
    let web_server = find(&spans, "shop-web", "POST /api/orders");
    let web_db = find(&spans, "shop-web", "db PUT");
    let db_server = find(&spans, "shop-db", "PUT /kv/{key}");
    assert_eq!(hex(&lb_server.span.parent_span_id), CALLER_SPAN);
    assert_eq!(lb_client.span.parent_span_id, lb_server.span.span_id);
    assert_eq!(web_server.span.parent_span_id, lb_client.span.span_id);
    assert_eq!(web_db.span.parent_span_id, web_server.span.span_id);
    assert_eq!(db_server.span.parent_span_id, web_db.span.span_id);
    assert!(
        db_server.instance.contains("db-1"),
        "{}",
        db_server.instance
    );
    let status_attr = web_server
        .span
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code");
    assert!(
        format!("{status_attr:?}").contains("201"),
        "{status_attr:?}"
    );

    // Metrics: RED histograms with the semantic-convention names and labels.
    let procs = sup.processes();
    for p in &procs {
        let text = reqwest::get(format!("http://{}/metrics", p.addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let red: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket{"))
            .collect();
        assert!(!red.is_empty(), "{}: no RED histogram in:\n{text}", p.name);
        for l in &red {
            for label in [
                "http_request_method=",
                "http_route=",
                "http_response_status_code=",
                "le=",
            ] {
                assert!(l.contains(label), "{}: {label} missing in {l}", p.name);
            }
            assert!(l.contains(&format!("tier=\"{}\"", p.tier)), "{l}");
            // job and instance are the scraper's, as for any target.
            for own in ["service=", "instance=", "job="] {
                assert!(!l.contains(own), "{}: exposes {own} in {l}", p.name);
            }
        }
        let tier_metric = match p.tier.as_str() {
            "lb" => "lb_backend_healthy{",
            "web" => "web_requests_in_flight{",
            "cache" => "cache_hits_total{",
            _ => "db_replication_lag_bytes{",
        };
        assert!(text.contains(tier_metric), "{}: no {tier_metric}", p.name);
    }
    let web_text: String = futures_text(&procs, "web").await;
    assert!(
        web_text.contains("http_route=\"/api/products/{id}\"")
            && web_text.contains("http_response_status_code=\"200\""),
        "web metrics lack the product route"
    );
    // The order's latency bucket points at its trace (an OpenMetrics
    // exemplar: the web tier's server span of this one request).
    let exemplar = format!(
        "# {{trace_id=\"{TRACE_ID}\",span_id=\"{}\"}}",
        hex(&web_server.span.span_id)
    );
    assert!(
        web_text.lines().any(
            |l| l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_route=\"/api/orders\"")
                && l.contains(&exemplar)
        ),
        "no bucket of the order with {exemplar} in:\n{web_text}"
    );
    let db_text = futures_text(&procs, "db").await;
    assert!(
        db_text.contains("db_replication_lag_seconds{"),
        "no lag in seconds"
    );

    // Logs: JSON lines with the trace id of the request that wrote them.
    let line = eventually(
        "web log line with the trace id",
        Duration::from_secs(5),
        || async {
            for p in procs.iter().filter(|p| p.tier == "web") {
                let text = std::fs::read_to_string(&p.log_file).unwrap_or_default();
                for l in text.lines() {
                    let v: serde_json::Value =
                        serde_json::from_str(l).expect("every log line is JSON");
                    if v["trace_id"] == TRACE_ID && v["message"] == "order created" {
                        return Some(v);
                    }
                }
            }
            None
        },
    )
    .await;
    assert_eq!(line["level"], "info");
    assert_eq!(line["service"], "shop-web");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert!(
        line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    sup.shutdown().await;
}

async fn futures_text(procs: &[keel_sampleapp::supervisor::ProcInfo], tier: &str) -> String {
    let mut all = String::new();
    for p in procs.iter().filter(|p| p.tier == tier) {
        all += &reqwest::get(format!("http://{}/metrics", p.addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_json_error_and_no_tier_goes_down() {
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sup, ep) = start(test_config(dir.path())).await;
    let http = reqwest::Client::new();
    let lb = ep.lb;
    let api = ep.supervisor;
    let procs = sup.processes();
    let addr = |n: &str| procs.iter().find(|p| p.name == n).expect("process").addr;
    let json = "application/json";
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            http.post(format!("http://{lb}/api/orders"))
                .header("content-type", json)
                .body("{\"product_id\":"),
            400,
        ),
        (
            http.post(format!("http://{lb}/api/orders"))
                .header("content-type", json)
                .body("{\"product_id\":1,\"quantity\":0}"),
            400,
        ),
        (
            http.post(format!("http://{lb}/api/orders"))
                .header("content-type", json)
                .body("{\"product_id\":1,\"quantity\":1,\"x\":1}"),
            400,
        ),
        (
            http.post(format!("http://{lb}/api/orders"))
                .header("content-type", json)
                .body(vec![0xff, 0xfe, 0x00]),
            400,
        ),
        (
            http.get(format!("http://{lb}/api/products/not-a-number")),
            400,
        ),
        (http.get(format!("http://{lb}/api/products/99999")), 404),
        (
            http.get(format!("http://{lb}/api/session"))
                .header("authorization", "Bearer zz"),
            400,
        ),
        (
            http.post(format!("http://{lb}/api/login"))
                .header("content-type", json)
                .body("[]"),
            400,
        ),
        (http.get(format!("http://{lb}/no/such/path")), 404),
        (
            http.put(format!("http://{api}/api/v1/scale/web"))
                .header("content-type", json)
                .body("{\"replicas\":0}"),
            400,
        ),
        (
            http.put(format!("http://{api}/api/v1/scale/web"))
                .header("content-type", json)
                .body("{\"replicas\":\"many\"}"),
            400,
        ),
        (
            http.put(format!("http://{api}/api/v1/web/capacity"))
                .header("content-type", json)
                .body("{\"error_rate\":2}"),
            400,
        ),
        (
            http.post(format!("http://{api}/api/v1/processes/web-1/explode")),
            400,
        ),
        // A page on another site cannot drive the supervisor.
        (
            http.post(format!("http://{api}/api/v1/processes/web-1/stop"))
                .header("origin", "https://evil.example"),
            403,
        ),
        (
            http.put(format!("http://{api}/api/v1/scale/web"))
                .header("sec-fetch-site", "cross-site")
                .header("content-type", json)
                .body("{\"replicas\":1}"),
            403,
        ),
        (
            http.post(format!("http://{api}/api/v1/processes/nobody/stop")),
            404,
        ),
        (
            http.post(format!("http://{api}/api/v1/db/promote"))
                .body("{nope"),
            400,
        ),
        (
            http.put(format!("http://{}/kv/k", addr("db-1")))
                .header("content-type", json)
                .body("{\"value\":1}"),
            400,
        ),
        (
            http.put(format!("http://{}/kv/k", addr("db-1")))
                .header("x-keel-epoch", "one")
                .header("content-type", json)
                .body("{\"value\":1}"),
            400,
        ),
        (
            http.get(format!("http://{}/repl/pull?from=x", addr("db-1"))),
            400,
        ),
        (
            http.post(format!("http://{}/-/promote", addr("db-2")))
                .header("content-type", json)
                .body("{\"epoch\":1}"),
            409,
        ),
        (
            http.put(format!("http://{}/cache/k?ttl_ms=-1", addr("cache")))
                .body("v"),
            400,
        ),
        (
            http.put(format!("http://{}/-/capacity", addr("web-1")))
                .header("content-type", json)
                .body("{\"max_concurrency\":0}"),
            400,
        ),
        (
            http.post(format!("http://{}/-/backends", ep.lb_admin))
                .header("content-type", json)
                .body("{\"name\":\"x\",\"addr\":\"nowhere\"}"),
            400,
        ),
        // Admin paths are not served on the shop port: neither the lb's
        // backend list nor a web instance's topology (proxied before).
        (http.get(format!("http://{lb}/-/backends")), 404),
        (
            http.put(format!("http://{lb}/-/topology"))
                .header("content-type", json)
                .body("{\"epoch\":99,\"primary\":\"127.0.0.1:1\",\"replicas\":[]}"),
            404,
        ),
        (
            http.put(format!("http://{lb}/-/capacity"))
                .header("content-type", json)
                .body("{\"error_rate\":1}"),
            404,
        ),
        (
            http.post(format!("http://{}/-/fence", addr("db-2")))
                .header("content-type", json)
                .body("{\"epoch\":0}"),
            409,
        ),
        (
            http.put(format!("http://{}/-/partition", addr("db-2")))
                .header("content-type", json)
                .body("{\"peers\":\"x\"}"),
            400,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        assert_eq!(status, want, "case {i}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("case {i}: not JSON ({e}): {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "case {i}: no error message: {body}"
        );
    }
    // A deposed leader of a collector pair, late, sends an older fencing
    // token than the newest seen: refused, and nothing changes.
    let n = sup.scale_status().replicas;
    let scale = |token: &str, n: u32| {
        http.put(format!("http://{api}/api/v1/scale/web"))
            .header(keel_core::fencing::LEASE_HEADER, "keel-leader")
            .header(keel_core::fencing::TOKEN_HEADER, token)
            .json(&serde_json::json!({ "replicas": n }))
    };
    for (token, replicas, want) in [
        ("7", n, 200),
        ("6", n + 1, 409),
        ("x", n + 1, 400),
        ("8", n, 200),
    ] {
        let r = scale(token, replicas).send().await.expect("scale");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, want, "token {token}: {body}");
        if want == 409 {
            assert!(body.contains("older than 7"), "{body}");
        }
        assert_eq!(sup.scale_status().replicas, n, "token {token}: unchanged");
    }

    // Random methods, paths and bodies at every process's real routes.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let routes = [
        "/api/products/",
        "/api/orders",
        "/api/orders/",
        "/api/login",
        "/api/session",
        "/cache/",
        "/kv/",
        "/repl/pull?from=",
        "/-/promote",
        "/-/follow",
        "/-/fence",
        "/-/partition",
        "/-/status",
        "/-/capacity",
        "/-/topology",
        "/-/backends",
        "/-/backends/",
        "/health",
        "/metrics",
    ];
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ];
    for _ in 0..400 {
        let p = &procs[rng.random_range(0..procs.len())];
        let suffix: String = (0..rng.random_range(0..12))
            .map(|_| format!("%{:02X}", rng.random::<u8>()))
            .collect();
        let url = format!(
            "http://{}{}{suffix}",
            p.addr,
            routes[rng.random_range(0..routes.len())]
        );
        let body: Vec<u8> = if rng.random_bool(0.5) {
            (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect()
        } else {
            // Plausible JSON with wrong shapes and types.
            serde_json::to_vec(&serde_json::json!({
                "value": rng.random::<f64>(), "epoch": rng.random::<i64>(), "replicas": rng.random::<i32>(),
                "max_concurrency": rng.random::<u32>() % 4, "error_rate": rng.random::<f64>() * 2.0,
                "primary": "127.0.0.1:1", "product_id": rng.random::<i64>(), "quantity": rng.random::<i32>(),
            }))
            .expect("json")
        };
        let r = http
            .request(methods[rng.random_range(0..methods.len())].clone(), &url)
            .header("content-type", json)
            .header("x-keel-epoch", rng.random::<u64>().to_string())
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = r {
            assert!(r.status().as_u16() < 600, "{url}: {}", r.status());
        }
    }

    // Nobody crashed on any of it.
    assert!(
        sup.processes()
            .iter()
            .all(|p| p.restarts == 0 && p.pid.is_some())
    );
    // The random bodies may have set legal but hostile knobs (an error
    // rate, say); restore them before checking the app still serves.
    sup.set_capacity(keel_sampleapp::config::Capacity::default())
        .await
        .expect("reset capacity");
    let r = http
        .get(format!("http://{lb}/api/products/1"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(r.status(), 200);
    sup.shutdown().await;
}
