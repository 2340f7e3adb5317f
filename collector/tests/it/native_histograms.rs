//! Native histograms end to end: OTLP exponential histograms and remote
//! write (1.0 and 2.0) histograms in, Prometheus' JSON out, queried with
//! its functions; bad histograms refused by name, the rest kept.

use crate::common::*;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, metric::Data,
};
use prost::Message;

const T0: u64 = 1_763_856_000_000;

/// An exponential histogram at scale 0: `pos` counts from OTLP bucket 0
/// ((1, 2], (2, 4], …), cumulative.
fn exponential(t_ms: u64, count: u64, sum: f64, pos: Vec<u64>) -> Metric {
    Metric {
        name: "payload.size".into(),
        unit: "By".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: vec![kv("route", "/a")],
                time_unix_nano: t_ms * 1_000_000,
                count,
                sum: Some(sum),
                scale: 0,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: pos,
                }),
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    }
}

async fn post_otlp(c: &keel_collector::server::Running, m: Metric) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/metrics", c.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request("shop", vec![m]).encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exponential_histograms_are_stored_and_queried_natively() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    post_otlp(&c, exponential(T0, 4, 10.0, vec![1, 2, 1])).await;
    post_otlp(&c, exponential(T0 + 60_000, 10, 25.0, vec![2, 5, 3])).await;

    let v = query(c.api, "payload_size_bytes", T0 + 60_000).await;
    let r = &v["data"]["result"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(r[0]["metric"]["route"], "/a");
    // Prometheus' shape: count and sum as strings, each bucket
    // [boundary rule, lower, upper, count]; OTLP bucket 0 is (1, 2].
    let h = &r[0]["histogram"][1];
    assert_eq!(h["count"], "10", "{v}");
    assert_eq!(h["sum"], "25");
    assert_eq!(
        h["buckets"],
        serde_json::json!([[0, "1", "2", "2"], [0, "2", "4", "5"], [0, "4", "8", "3"]]),
        "{v}"
    );
    // No classic series were made of it.
    assert!(samples(&query(c.api, "payload_size_bytes_bucket", T0 + 60_000).await).is_empty());

    let one = |expr: &str| {
        let expr = expr.to_owned();
        let api = c.api;
        async move {
            let s = samples(&query(api, &expr, T0 + 60_000).await);
            assert_eq!(s.len(), 1, "{expr}: {s:?}");
            s[0].1
        }
    };
    assert_eq!(one("histogram_count(payload_size_bytes)").await, 10.0);
    assert_eq!(one("histogram_sum(payload_size_bytes)").await, 25.0);
    assert_eq!(one("histogram_avg(payload_size_bytes)").await, 2.5);
    // Rank 5 of 10 (reverse from the top): 3 in (4, 8], then 2 of the 5
    // in (2, 4]: 2^(1 + 3/5) by exponential interpolation.
    let p50 = one("histogram_quantile(0.5, payload_size_bytes)").await;
    assert!((p50 - 2f64.powf(1.6)).abs() < 1e-9, "{p50}");
    assert_eq!(
        one("histogram_fraction(0, 4, payload_size_bytes)").await,
        0.7
    );
    // One minute of increase, 6 observations, extrapolated over the 2 m
    // window: to its end (0 s) and back to where the count would have
    // been zero (60 s × 4/6 = 40 s, sooner than the window's start), as
    // Prometheus 3's extrapolatedRate cuts histograms: 6 × 100/60.
    let inc = one("histogram_count(increase(payload_size_bytes[2m]))").await;
    assert!((inc - 10.0).abs() < 1e-9, "{inc}");
    let q = one("histogram_quantile(0.9, sum(rate(payload_size_bytes[2m])))").await;
    assert!(q > 4.0 && q <= 8.0, "{q}");

    // A range query carries "histograms" instead of "values".
    let r: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/query_range", c.api))
        .query(&[
            ("query", "payload_size_bytes".to_owned()),
            ("start", format!("{}", T0 as f64 / 1000.0)),
            ("end", format!("{}", (T0 + 60_000) as f64 / 1000.0)),
            ("step", "60".to_owned()),
        ])
        .send()
        .await
        .expect("query_range")
        .json()
        .await
        .expect("json");
    let series = &r["data"]["result"][0];
    assert!(series.get("values").is_none(), "{r}");
    let counts: Vec<&serde_json::Value> = series["histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .map(|p| &p[1]["count"])
        .collect();
    assert_eq!(counts, ["4", "10"], "{r}");

    // A float function over a histogram is refused by name, not a silent
    // empty answer.
    let e = query(c.api, "abs(payload_size_bytes)", T0 + 60_000).await;
    assert_eq!(e["status"], "error", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("native histogram"),
        "{e}"
    );
}

mod rw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    /// `prometheus.Histogram`: integer counts, delta-encoded buckets.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, tag = "1")]
        pub count_int: u64,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(uint64, tag = "6")]
        pub zero_count_int: u64,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<Span>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
        #[prost(double, repeated, tag = "16")]
        pub custom_values: Vec<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }
}

/// `req`, snappy-compressed, to the collector's remote write path.
async fn post_remote_write(
    c: &keel_collector::server::Running,
    req: &rw::WriteRequest,
) -> reqwest::Response {
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    reqwest::Client::new()
        .post(format!("http://{}/api/v1/write", c.api))
        .body(body)
        .send()
        .await
        .expect("post")
}

fn rw_series(name: &str, h: rw::Histogram) -> rw::TimeSeries {
    rw::TimeSeries {
        labels: vec![
            rw::Label {
                name: "__name__".into(),
                value: name.into(),
            },
            rw::Label {
                name: "job".into(),
                value: "api".into(),
            },
        ],
        histograms: vec![h],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_histograms_are_stored_with_custom_buckets_and_bad_bounds_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path()).await;
    // Schema 1, buckets at indices 0, 1 and 4 holding 2, 3 and 1: spans
    // (0, 2) and, two empty buckets on, (2, 1); counts delta-encoded 2,
    // +1, -2.
    let good = rw::Histogram {
        count_int: 7,
        sum: 9.5,
        schema: 1,
        zero_threshold: 1e-128,
        zero_count_int: 1,
        positive_spans: vec![
            rw::Span {
                offset: 0,
                length: 2,
            },
            rw::Span {
                offset: 2,
                length: 1,
            },
        ],
        positive_deltas: vec![2, 1, -2],
        timestamp: T0 as i64,
        custom_values: vec![],
    };
    // Custom buckets: 2 up to 0.1, 3 in (0.1, 1], 1 above 1.
    let custom = rw::Histogram {
        count_int: 6,
        schema: -53,
        zero_threshold: 0.0,
        zero_count_int: 0,
        positive_spans: vec![rw::Span {
            offset: 0,
            length: 3,
        }],
        custom_values: vec![0.1, 1.0],
        ..good.clone()
    };
    let descending = rw::Histogram {
        custom_values: vec![1.0, 0.1],
        ..custom.clone()
    };
    let req = rw::WriteRequest {
        timeseries: vec![
            rw_series("rw_latency", good),
            rw_series("rw_bad_bounds", descending),
            rw_series("rw_custom", custom.clone()),
        ],
    };
    let r = post_remote_write(&c, &req).await;
    assert_eq!(r.status(), 400);
    let why = r.text().await.expect("text");
    assert!(
        why.contains("timeseries[1]") && why.contains("strictly ascending"),
        "{why}"
    );
    // The good series of the same request is stored.
    let v = query(c.api, "rw_latency", T0).await;
    let h = &v["data"]["result"][0]["histogram"][1];
    assert_eq!(h["count"], "7", "{v}");
    // Bounds print as Prometheus' API prints floats (an exponent below
    // 1e-6: `-1e-128`); a bound is 2^(i/2), correctly rounded (√2/2 ends
    // in …476; Prometheus' table of bounds has …475, one unit in the last
    // place below, so its API can differ from Keel's in the last digit).
    let f = keel_promql::format_api;
    assert_eq!(f(-1e-128), "-1e-128");
    let b = 2f64.sqrt();
    assert_eq!(
        h["buckets"],
        serde_json::json!([
            [3, f(-1e-128), f(1e-128), "1"],
            [0, f(b / 2.0), "1", "2"],
            [0, "1", f(b), "3"],
            [0, f(2.0 * b), "4", "1"]
        ]),
        "{v}"
    );
    assert!(
        query(c.api, "rw_bad_bounds", T0).await["data"]["result"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    // The custom-bucket series after the refused one is stored, its
    // buckets printed with the bounds Prometheus prints (the first closed
    // from -Inf, the last open to +Inf).
    let v = query(c.api, "rw_custom", T0).await;
    let h = &v["data"]["result"][0]["histogram"][1];
    assert_eq!(h["count"], "6", "{v}");
    assert_eq!(
        h["buckets"],
        serde_json::json!([
            [3, "-Inf", "0.1", "2"],
            [0, "0.1", "1", "3"],
            [0, "1", "+Inf", "1"]
        ]),
        "{v}"
    );
    // Linear within (0.1, 1]: the median is a third of the way in.
    let q = query_value(c.api, "histogram_quantile(0.5, rw_custom)", T0).await;
    assert!((q - 0.4).abs() < 1e-12, "{q}");
    // Federated as text (a sample within the lookback of now): the
    // classic histogram it holds.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let recent = rw::Histogram {
        timestamp: now_ms,
        ..custom
    };
    let req = rw::WriteRequest {
        timeseries: vec![rw_series("rw_recent", recent)],
    };
    let r = post_remote_write(&c, &req).await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let text = reqwest::Client::new()
        .get(format!("http://{}/federate", c.api))
        .query(&[("match[]", "rw_recent")])
        .send()
        .await
        .expect("federate")
        .text()
        .await
        .expect("text");
    for line in [
        r#"rw_recent_bucket{job="api",le="0.1"} 2"#,
        r#"rw_recent_bucket{job="api",le="1"} 5"#,
        r#"rw_recent_bucket{job="api",le="+Inf"} 6"#,
        r#"rw_recent_count{job="api"} 6"#,
        r#"rw_recent_sum{job="api"} 9.5"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

/// An OTLP explicit-bucket histogram is classic `le` series by default,
/// one custom-bucket histogram with `convert_histograms_to_nhcb`, and
/// both answer `histogram_quantile` alike (linear in a bucket). Not
/// over `rate`: each `le` series' rate is extrapolated on its own, a
/// histogram's as one, so those differ, in Prometheus too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_explicit_histograms_become_custom_buckets_when_asked_and_agree_with_classic() {
    let bounds = vec![0.05, 0.1, 0.25, 0.5, 1.0];
    let points = [
        (T0, vec![3, 10, 4, 2, 1, 0], 1.9),
        (T0 + 60_000, vec![9, 31, 15, 6, 2, 1], 6.7),
    ];
    let mut answers = Vec::new();
    for nhcb in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path());
        config.otlp.convert_histograms_to_nhcb = nhcb;
        let clock: keel_core::clock::SharedClock =
            std::sync::Arc::new(keel_core::clock::SystemClock);
        let c = keel_collector::server::start(&config, clock)
            .await
            .expect("starts");
        for (t, counts, sum) in &points {
            post_otlp(
                &c,
                histogram(
                    "rpc.duration",
                    "s",
                    *t,
                    bounds.clone(),
                    counts.clone(),
                    *sum,
                ),
            )
            .await;
        }
        let t = T0 + 60_000;
        let stored = query(c.api, "rpc_duration_seconds", t).await;
        let classic = query(c.api, "rpc_duration_seconds_bucket", t).await;
        let series = |v: &serde_json::Value| v["data"]["result"].as_array().map_or(0, Vec::len);
        let expr = if nhcb {
            assert_eq!(series(&classic), 0, "no le series: {classic}");
            let h = &stored["data"]["result"][0]["histogram"][1];
            assert_eq!(h["count"], "64", "{stored}");
            assert_eq!(h["buckets"][0], serde_json::json!([3, "-Inf", "0.05", "9"]));
            assert_eq!(h["buckets"][5], serde_json::json!([0, "1", "+Inf", "1"]));
            "histogram_quantile({q}, rpc_duration_seconds)"
        } else {
            assert_eq!(series(&classic), 6, "{classic}");
            assert_eq!(series(&stored), 0, "{stored}");
            "histogram_quantile({q}, rpc_duration_seconds_bucket)"
        };
        let mut got = Vec::new();
        for q in ["0.1", "0.5", "0.9", "0.99"] {
            got.push(query_value(c.api, &expr.replace("{q}", q), t).await);
        }
        answers.push(got);
    }
    for (classic, native) in answers[0].iter().zip(&answers[1]) {
        assert!(
            (classic - native).abs() <= 1e-12 * classic.abs().max(1.0),
            "classic {classic} vs custom buckets {native}: {answers:?}"
        );
    }
    // The 0.99 quantile falls in the +Inf bucket: its lower bound.
    assert_eq!(answers[1][3], 1.0, "{answers:?}");
}

/// A sender's ingestion rate counts native histogram samples as it
/// counts float samples: six histograms spend a burst of five, so the
/// next request is refused, retryable (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_are_charged_to_the_senders_rate() {
    const TOKEN: &str = "edge-token-3f9c1a7e";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.auth = keel_auth::AuthConfig {
        senders: vec![keel_auth::SenderToken {
            name: "edge".into(),
            token: keel_core::secret::Secret::new(TOKEN),
            limits: keel_core::quota::QuotaLimits {
                max_series: 100,
                ingestion_rate: 5.0,
                ingestion_burst: 5.0,
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let t0 = std::time::SystemTime::now();
    let clock = std::sync::Arc::new(keel_core::clock::ManualClock::new(t0));
    let c = keel_collector::server::start(&cfg, clock)
        .await
        .expect("collector starts");
    let t = keel_core::clock::unix_ms(t0) as u64;
    let pods = |n: usize| {
        let mut m = exponential(t, 4, 10.0, vec![1, 2, 1]);
        if let Some(Data::ExponentialHistogram(h)) = m.data.as_mut() {
            let p = h.data_points[0].clone();
            h.data_points = (0..n)
                .map(|i| ExponentialHistogramDataPoint {
                    attributes: vec![kv("pod", &format!("p{i}"))],
                    ..p.clone()
                })
                .collect();
        }
        m
    };
    let send = |n: usize| {
        reqwest::Client::new()
            .post(format!("http://{}/v1/metrics", c.otlp_http))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(TOKEN)
            .body(request("edge", vec![pods(n)]).encode_to_vec())
            .send()
    };
    // The bucket holds 5: six histograms are taken (it goes 1 into
    // debt, as for float samples)...
    let r = send(6).await.expect("post");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        samples(&query(c.api, "histogram_count(payload_size_bytes)", t).await).len(),
        6
    );
    // ...and the next is refused, retryable: the histograms were charged.
    let r = send(1).await.expect("post");
    assert_eq!(r.status(), 429, "{:?}", r.text().await);
}
