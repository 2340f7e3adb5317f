//! Reading Keel's series out as a Prometheus server is read:
//!
//! - `GET /federate?match[]=…`: the newest sample (within the 5-minute
//!   lookback, stale series left out) of every matching series in the
//!   text exposition format — or, asked for it, Prometheus' protobuf
//!   format, which also carries native histograms ([`protobuf`]) — with
//!   the rules' external labels added where a series lacks them, for a
//!   Prometheus that scrapes Keel with `honor_labels: true`;
//! - `POST /api/v1/read`: remote read 1.0 (snappy protobuf
//!   `ReadRequest`, answered as `SAMPLES`), each request (all its
//!   queries) bounded by the collector's `query.max_samples`, as a
//!   federation is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keel_core::clock::SharedClock;
use keel_metricstore::{Matcher, Store};
use keel_promql::eval::LOOKBACK_MS;
use keel_series::labels::Labels;

use crate::ingest::remote_write::{Label, Sample};

pub mod protobuf;

/// What both read.
#[derive(Clone)]
pub struct ReadOut {
    /// The store.
    pub store: Arc<Store>,
    /// Now, for `/federate`.
    pub clock: SharedClock,
    /// Added to federated series that lack them.
    pub external_labels: Arc<BTreeMap<String, String>>,
    /// Most samples one remote-read request (all its queries) or one
    /// federation may load.
    pub max_samples: usize,
    /// Largest decompressed remote-read request.
    pub max_decoded: usize,
}

/// The routes.
pub fn routes(r: ReadOut) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/federate", get(federate))
        .route("/api/v1/read", post(remote_read))
        .map(|x| x.with_state(r))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A federated series' labels: its own but `__name__`, and each of the
/// `external` ones it lacks, in name order.
pub(crate) fn federated_labels<'a>(
    labels: &'a Labels,
    external: &'a BTreeMap<String, String>,
) -> BTreeMap<&'a str, &'a str> {
    let mut pairs: BTreeMap<&str, &str> =
        labels.pairs().filter(|(k, _)| *k != "__name__").collect();
    for (k, v) in external {
        pairs.entry(k).or_insert(v);
    }
    pairs
}

/// `labels` with the metric name given `suffix`.
fn classic_name(labels: &Labels, suffix: &str) -> Labels {
    labels.with("__name__", &format!("{}{suffix}", labels.get("__name__")))
}

/// A custom-bucket histogram's classic series: `_bucket{le}` a bound
/// and `+Inf`, `_count` and `_sum`.
fn classic_series(labels: &Labels, h: &keel_series::histogram::Histogram) -> Vec<(Labels, f64)> {
    let bucket = classic_name(labels, "_bucket");
    let mut out: Vec<(Labels, f64)> = h
        .cumulative()
        .into_iter()
        .map(|(bound, below)| (bucket.with("le", &keel_promql::format_value(bound)), below))
        .collect();
    out.push((classic_name(labels, "_count"), h.count));
    out.push((classic_name(labels, "_sum"), h.sum));
    out
}

/// The federation text of `series` (labels and their newest sample),
/// grouped by metric name with an `untyped` TYPE line each, as
/// Prometheus writes it.
pub fn federation_text(
    mut series: Vec<(Labels, (i64, f64))>,
    external: &BTreeMap<String, String>,
) -> String {
    series.sort_by(|a, b| {
        a.0.get("__name__")
            .cmp(b.0.get("__name__"))
            .then(a.0.cmp(&b.0))
    });
    let mut out = String::new();
    let mut last_name = "";
    for (labels, (t, v)) in &series {
        let name = labels.get("__name__");
        if name != last_name {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last_name = name;
        }
        let body: Vec<String> = federated_labels(labels, external)
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(
            out,
            "{name}{{{}}} {} {t}",
            body.join(","),
            keel_promql::format_value(*v)
        );
    }
    out
}

async fn federate(State(r): State<ReadOut>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let as_protobuf = protobuf::wanted(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let p = keel_http::params(q, &HeaderMap::new(), &Bytes::new());
    let sets = match crate::api::selectors(&p) {
        Ok(s) if s.is_empty() => return keel_http::bad("no match[] parameter provided".into()),
        Ok(s) => s,
        Err(e) => return keel_http::bad(e),
    };
    let now = r.clock.now_ms();
    let store = r.store.clone();
    let external = r.external_labels.clone();
    let max = r.max_samples;
    let answer = tokio::task::spawn_blocking(move || {
        let mut newest: BTreeMap<Labels, (i64, f64)> = BTreeMap::new();
        let mut histograms: BTreeMap<Labels, (i64, keel_series::histogram::Histogram)> =
            BTreeMap::new();
        let mut left = max;
        for ms in &sets {
            // Prometheus' lookback: a series with no sample in it is not federated.
            let series = store.select_bounded(ms, now - LOOKBACK_MS, now, left)?;
            for (labels, samples) in series {
                left = left.saturating_sub(samples.len());
                if let Some(&(t, v)) = samples.last()
                    && !keel_core::stale::is_stale(v)
                {
                    newest.insert(labels, (t, v));
                }
            }
            // Native histograms: one sample a series counts against the
            // limit.
            for (labels, (t, h)) in store.histograms().newest(ms, now - LOOKBACK_MS, now) {
                if !as_protobuf && !h.is_custom() {
                    continue;
                }
                left = left.checked_sub(1)?;
                if !h.is_stale() {
                    histograms.insert(labels, (t, h));
                }
            }
        }
        // A custom-bucket histogram whose classic series are federated
        // too (a scrape that kept both) is left to them: once is enough.
        histograms.retain(|labels, (_, h)| {
            !h.is_custom() || !newest.contains_key(&classic_name(labels, "_count"))
        });
        if !as_protobuf {
            // Text carries custom buckets as the classic histogram they
            // hold; exponential ones it cannot carry.
            for (labels, (t, h)) in std::mem::take(&mut histograms) {
                if h.is_custom() {
                    for (l, v) in classic_series(&labels, &h) {
                        newest.insert(l, (t, v));
                    }
                }
            }
        }
        Some(if as_protobuf {
            let series = newest
                .into_iter()
                .map(|(l, (t, v))| (l, protobuf::Newest::Float(t, v)))
                .chain(
                    histograms
                        .into_iter()
                        .map(|(l, (t, h))| (l, protobuf::Newest::Histogram(t, Box::new(h)))),
                )
                .collect();
            (
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
                protobuf::federation_body(series, &external),
            )
        } else {
            (
                "text/plain; version=0.0.4; charset=utf-8",
                federation_text(newest.into_iter().collect(), &external).into_bytes(),
            )
        })
    })
    .await
    .unwrap_or_default();
    match answer {
        // The answer's format follows the Accept header.
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::VARY, "Accept"),
            ],
            body,
        )
            .into_response(),
        None => read_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "federation would load more than {max} samples (collector.query.max_samples): narrow match[]"
            ),
        ),
    }
}

/// `prometheus.ReadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    /// The queries.
    #[prost(message, repeated, tag = "1")]
    pub queries: Vec<Query>,
    /// Response types the client takes (0: SAMPLES, 1: STREAMED_XOR_CHUNKS).
    #[prost(int32, repeated, tag = "2")]
    pub accepted_response_types: Vec<i32>,
}

/// `prometheus.Query`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// From (ms).
    #[prost(int64, tag = "1")]
    pub start_timestamp_ms: i64,
    /// To (ms).
    #[prost(int64, tag = "2")]
    pub end_timestamp_ms: i64,
    /// All must match.
    #[prost(message, repeated, tag = "3")]
    pub matchers: Vec<LabelMatcher>,
}

/// `prometheus.LabelMatcher`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelMatcher {
    /// 0 `=`, 1 `!=`, 2 `=~`, 3 `!~`.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Label name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Value or regex.
    #[prost(string, tag = "3")]
    pub value: String,
}

/// `prometheus.ReadResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadResponse {
    /// One a query.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<QueryResult>,
}

/// `prometheus.QueryResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResult {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<ReadSeries>,
}

/// `prometheus.TimeSeries` as remote read answers it: float samples and
/// native histogram samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<crate::forward::histograms::WireHistogram>,
}

/// A query's matchers as the store's; the first problem, named by its
/// place.
fn store_matchers(q: &Query, at: usize) -> Result<Vec<Matcher>, String> {
    q.matchers
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let re = || {
                keel_promql::eval::anchored_regex(&m.value).map_err(|e| {
                    format!("queries[{at}].matchers[{j}]: bad regex {:?}: {e}", m.value)
                })
            };
            Ok(match m.r#type {
                0 => Matcher::Equal(m.name.clone(), m.value.clone()),
                1 => Matcher::NotEqual(m.name.clone(), m.value.clone()),
                2 => Matcher::Regex(m.name.clone(), re()?),
                3 => Matcher::NotRegex(m.name.clone(), re()?),
                t => {
                    return Err(format!(
                        "queries[{at}].matchers[{j}]: unknown matcher type {t}"
                    ));
                }
            })
        })
        .collect()
}

fn read_error(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg + "\n",
    )
        .into_response()
}

/// Answer one decoded request: every query's series, or the first
/// problem (a 400).
pub fn answer(
    store: &Store,
    req: &ReadRequest,
    max_samples: usize,
    external: &BTreeMap<String, String>,
) -> Result<ReadResponse, String> {
    if !req.accepted_response_types.is_empty() && !req.accepted_response_types.contains(&0) {
        return Err("only the SAMPLES response type is served".into());
    }
    let mut results = Vec::with_capacity(req.queries.len());
    let mut left = max_samples;
    for (i, q) in req.queries.iter().enumerate() {
        let mut ms = store_matchers(q, i)?;
        // A reader with these external labels asks for them (Prometheus'
        // `filter_external_labels`): every series here has them.
        ms.retain(|m| !matches!(m, Matcher::Equal(n, v) if external.get(n) == Some(v)));
        if ms.is_empty() {
            return Err(format!("queries[{i}]: no matchers but the external labels"));
        }
        let series = store
            .select_bounded(&ms, q.start_timestamp_ms, q.end_timestamp_ms, left)
            .ok_or_else(|| {
                format!("queries[{i}]: the request would load more than {max_samples} samples (collector.query.max_samples)")
            })?;
        left = left.saturating_sub(series.iter().map(|(_, s)| s.len()).sum());
        let histograms = store
            .histograms()
            .select(&ms, q.start_timestamp_ms, q.end_timestamp_ms);
        let n: usize = histograms.iter().map(|(_, s)| s.len()).sum();
        left = left.checked_sub(n).ok_or_else(|| {
            format!("queries[{i}]: the request would load more than {max_samples} samples (collector.query.max_samples)")
        })?;
        // Each series by its labels (the external ones added), its floats
        // — staleness markers too: the reader's lookback ends where the
        // series did — and its native histograms.
        let key = |labels: &Labels| -> Vec<(String, String)> {
            let mut pairs: BTreeMap<String, String> = labels
                .pairs()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            for (k, v) in external {
                pairs.entry(k.clone()).or_insert_with(|| v.clone());
            }
            pairs.into_iter().collect()
        };
        let mut timeseries: BTreeMap<Vec<(String, String)>, ReadSeries> = BTreeMap::new();
        fn at(
            map: &mut BTreeMap<Vec<(String, String)>, ReadSeries>,
            k: Vec<(String, String)>,
        ) -> &mut ReadSeries {
            map.entry(k.clone()).or_insert_with(|| ReadSeries {
                labels: k
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                ..ReadSeries::default()
            })
        }
        for (labels, samples) in series {
            at(&mut timeseries, key(&labels))
                .samples
                .extend(samples.into_iter().map(|(t, v)| Sample {
                    value: v,
                    timestamp: t,
                }));
        }
        for (labels, samples) in histograms {
            at(&mut timeseries, key(&labels)).histograms.extend(
                samples
                    .iter()
                    .map(|(t, h)| crate::forward::histograms::wire(*t, h)),
            );
        }
        results.push(QueryResult {
            timeseries: timeseries.into_values().collect(),
        });
    }
    Ok(ReadResponse { results })
}

async fn remote_read(State(r): State<ReadOut>, body: Bytes) -> Response {
    let raw = match crate::ingest::remote_write::decompress(&body, r.max_decoded) {
        Ok(raw) => raw,
        Err(e) => return read_error(StatusCode::BAD_REQUEST, e),
    };
    let req = match <ReadRequest as prost::Message>::decode(&raw[..]) {
        Ok(req) => req,
        Err(e) => {
            return read_error(
                StatusCode::BAD_REQUEST,
                format!("malformed ReadRequest: {e}"),
            );
        }
    };
    let store = r.store.clone();
    let max = r.max_samples;
    let external = r.external_labels.clone();
    match tokio::task::spawn_blocking(move || answer(&store, &req, max, &external)).await {
        Ok(Ok(resp)) => {
            let encoded = prost::Message::encode_to_vec(&resp);
            match snap::raw::Encoder::new().compress_vec(&encoded) {
                Ok(body) => (
                    [
                        (header::CONTENT_TYPE, "application/x-protobuf"),
                        (header::CONTENT_ENCODING, "snappy"),
                    ],
                    body,
                )
                    .into_response(),
                Err(e) => read_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Ok(Err(e)) => read_error(StatusCode::BAD_REQUEST, e),
        Err(e) => read_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_text_groups_by_name_and_adds_missing_external_labels() {
        let l = |pairs: &[(&str, &str)]| Labels::new(pairs.to_vec());
        let text = federation_text(
            vec![
                (
                    l(&[("__name__", "up"), ("job", "b"), ("region", "own")]),
                    (2000, 0.0),
                ),
                (l(&[("__name__", "a_total"), ("path", "x\"y")]), (1000, 1.5)),
                (l(&[("__name__", "up"), ("job", "a")]), (2000, 1.0)),
            ],
            &BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        );
        assert_eq!(
            text,
            "# TYPE a_total untyped\na_total{path=\"x\\\"y\",region=\"eu\"} 1.5 1000\n# TYPE up untyped\nup{job=\"a\",region=\"eu\"} 1 2000\nup{job=\"b\",region=\"own\"} 0 2000\n"
        );
    }

    #[test]
    fn remote_read_answers_native_histograms_as_remote_write_writes_them() {
        let store = Store::in_memory(keel_metricstore::StoreConfig::default());
        let lat = Labels::new(vec![("__name__", "lat"), ("job", "api")]);
        let h = |k: f64| keel_series::histogram::Histogram {
            schema: 1,
            zero_threshold: 1e-128,
            count: 3.0 * k,
            sum: k,
            positive: vec![(0, k), (2, 2.0 * k)],
            ..Default::default()
        };
        store
            .append_histograms(vec![(lat.clone(), vec![(1000, h(1.0)), (2000, h(2.0))])])
            .expect("append");
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: 0,
                end_timestamp_ms: 1500,
                matchers: vec![LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "lat".into(),
                }],
            }],
            accepted_response_types: vec![],
        };
        let external = BTreeMap::from([("dc".to_owned(), "eu".to_owned())]);
        let got = answer(&store, &req, 1000, &external).expect("answer");
        // A query result's series are laid out as a write request's:
        // the collector's own remote write decoder reads them back.
        let raw = prost::Message::encode_to_vec(&got.results[0]);
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("snappy");
        let decoded = crate::ingest::remote_write::decode(&body, 1 << 20).expect("decodes");
        let (_, _, histograms) =
            decoded.into_parts(|keys| keys.map(Labels::from_encoded).collect());
        let with_dc = Labels::new(vec![("__name__", "lat"), ("dc", "eu"), ("job", "api")]);
        assert_eq!(histograms, vec![(with_dc, vec![(1000, h(1.0))])]);
        assert!(
            answer(&store, &req, 0, &external)
                .unwrap_err()
                .contains("max_samples")
        );
    }

    #[test]
    fn remote_read_answers_each_query_and_refuses_bad_ones_by_place() {
        let store = Store::in_memory(keel_metricstore::StoreConfig::default());
        let s = |job: &str| Labels::new(vec![("__name__", "x"), ("job", job)]);
        store
            .append(vec![
                (s("a"), vec![(1000, 1.0), (2000, 2.0)]),
                (s("b"), vec![(1000, 5.0)]),
            ])
            .expect("append");
        let q = |t: i32, v: &str| Query {
            start_timestamp_ms: 0,
            end_timestamp_ms: 1500,
            matchers: vec![
                LabelMatcher {
                    r#type: 0,
                    name: "__name__".into(),
                    value: "x".into(),
                },
                LabelMatcher {
                    r#type: t,
                    name: "job".into(),
                    value: v.into(),
                },
            ],
        };
        let req = ReadRequest {
            queries: vec![q(0, "a"), q(2, "a|b")],
            accepted_response_types: vec![],
        };
        let got = answer(&store, &req, 1000, &BTreeMap::new()).expect("answer");
        assert_eq!(got.results[0].timeseries.len(), 1);
        assert_eq!(
            got.results[0].timeseries[0].samples.len(),
            1,
            "within the range"
        );
        assert_eq!(got.results[1].timeseries.len(), 2);
        assert!(
            answer(&store, &req, 1, &BTreeMap::new())
                .unwrap_err()
                .contains("max_samples")
        );
        let bad = ReadRequest {
            queries: vec![q(0, "a"), q(2, "(")],
            accepted_response_types: vec![],
        };
        assert!(
            answer(&store, &bad, 1000, &BTreeMap::new())
                .unwrap_err()
                .starts_with("queries[1].matchers[1]")
        );
        // A reader's external labels: its matcher dropped, the labels added.
        let ext = BTreeMap::from([("region".to_owned(), "eu".to_owned())]);
        let mut with_ext = q(0, "a");
        with_ext.matchers.push(LabelMatcher {
            r#type: 0,
            name: "region".into(),
            value: "eu".into(),
        });
        let req_ext = ReadRequest {
            queries: vec![with_ext],
            accepted_response_types: vec![],
        };
        let got = answer(&store, &req_ext, 1000, &ext).expect("answer");
        let labels = &got.results[0].timeseries[0].labels;
        assert!(
            labels.iter().any(|l| l.name == "region" && l.value == "eu"),
            "{labels:?}"
        );
        assert!(
            answer(&store, &req_ext, 1000, &BTreeMap::new())
                .expect("answer")
                .results[0]
                .timeseries
                .is_empty()
        );
        let chunks_only = ReadRequest {
            queries: vec![q(0, "a")],
            accepted_response_types: vec![1],
        };
        assert!(answer(&store, &chunks_only, 1000, &BTreeMap::new()).is_err());
    }
}
