//! OTLP/HTTP receivers, per the OTLP specification: protobuf or JSON
//! bodies, optional gzip, partial success on partly rejected data, 400
//! with a `Status` for malformed requests, 503 + `Retry-After` when the
//! collector is overloaded or cannot write ahead.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tokio::sync::Semaphore;

use keel_core::clock::SharedClock;
use keel_core::quota::Quota;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

use keel_http::workers::Workers;
use keel_logindex::logs::LogStore;
use keel_logindex::traces::SpanStore;
use keel_logindex::traces::red::SpanMetrics;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::otlp;
use keel_metricstore::Store;

/// `google.rpc.Status`, the body of OTLP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// gRPC status code (3 = invalid argument, 14 = unavailable).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Limits of the receivers.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest request body accepted, as sent.
    pub max_body_bytes: usize,
    /// Largest body after decompression.
    pub max_decoded_bytes: usize,
    /// Batches processed at once; beyond, 503 with Retry-After.
    pub max_concurrent_batches: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_concurrent_batches: 64,
        }
    }
}

/// Counters of what was received.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Samples stored.
    pub samples_accepted: AtomicU64,
    /// Data points or samples refused.
    pub samples_rejected: AtomicU64,
    /// Requests refused as malformed.
    pub bad_requests: AtomicU64,
    /// Batches dropped because one with the same `Keel-Batch-Id` was
    /// stored already (a sender's retry after a lost acknowledgement).
    pub duplicate_batches: AtomicU64,
    /// Samples refused by `collector.limits` (series, labels).
    pub samples_over_limits: AtomicU64,
    /// Exemplars kept.
    pub exemplars_appended: AtomicU64,
    /// Exemplars refused: older than their series' newest.
    pub exemplars_out_of_order: AtomicU64,
    /// Exemplars refused: label sets over 128 characters.
    pub exemplars_too_long: AtomicU64,
    /// Exemplars refused: their series is not in the store (its samples
    /// were refused).
    pub exemplars_refused_no_series: AtomicU64,
    /// Batches of exemplars the exemplar log could not take.
    pub exemplars_not_logged: AtomicU64,
}

/// The `Keel-Batch-Id` of a request ([`keel_metricstore::batch_ids::from_header`]).
pub fn batch_id(headers: &HeaderMap) -> Result<Option<u128>, String> {
    keel_metricstore::batch_ids::from_header(
        headers
            .get(keel_metricstore::batch_ids::HEADER)
            .map(|v| v.as_bytes()),
    )
}

#[derive(Clone)]
struct Ingest {
    store: Arc<Store>,
    limits: IngestLimits,
    permits: Arc<Semaphore>,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
}

/// Where logs and spans go, and the clock that stamps what has no time.
#[derive(Clone)]
pub struct Telemetry {
    /// The log store.
    pub logs: Arc<LogStore>,
    /// The span store.
    pub spans: Arc<SpanStore>,
    /// RED metrics derived from spans.
    pub span_metrics: Arc<SpanMetrics>,
    /// The injected clock.
    pub clock: SharedClock,
    /// How OTLP resource attributes become labels.
    pub translation: Arc<otlp::Translation>,
    /// What one log record or span may hold.
    pub records: keel_logindex::limits::RecordLimits,
    /// Where stored logs and spans are forwarded (`collector.forward.otlp`).
    pub forward: Arc<crate::forward::Forwarding>,
}

/// Why an export was not stored.
#[derive(Debug, Clone, PartialEq)]
pub enum NotStored {
    /// The stores cannot write now (a full disk): retry later (503 with
    /// Retry-After; gRPC UNAVAILABLE).
    Retry(String),
    /// Every point was refused by a limit: sending it again cannot help
    /// (400; gRPC INVALID_ARGUMENT).
    Refused(String),
    /// The sender is over its ingestion rate: nothing was stored; retry
    /// after the wait (429 with Retry-After; gRPC UNAVAILABLE).
    OverRate(keel_core::quota::OverRate),
}

impl NotStored {
    /// The HTTP answer.
    fn http(self) -> Failed {
        match self {
            NotStored::Retry(m) => (StatusCode::SERVICE_UNAVAILABLE, m).into(),
            NotStored::Refused(m) => (StatusCode::BAD_REQUEST, m).into(),
            NotStored::OverRate(o) => Failed {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(o.retry_after_secs()),
                message: o.message,
            },
        }
    }

    /// The gRPC status: the retryable ones UNAVAILABLE, as OTLP wants.
    pub fn grpc(self) -> tonic::Status {
        match self {
            NotStored::Retry(m) => tonic::Status::unavailable(m),
            NotStored::OverRate(o) => tonic::Status::unavailable(o.message),
            NotStored::Refused(m) => tonic::Status::invalid_argument(m),
        }
    }
}

/// Why an export was not taken over HTTP: its status, message, and the
/// seconds a sender should wait before it retries (`Retry-After`).
struct Failed {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl From<(StatusCode, String)> for Failed {
    fn from((status, message): (StatusCode, String)) -> Self {
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Failed {
            status,
            message,
            retry_after,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// The OTLP/HTTP routes.
pub fn routes(
    store: Arc<Store>,
    limits: IngestLimits,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
) -> Router {
    let r = Router::new()
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(otlp_logs))
        .route("/v1/traces", post(otlp_traces));
    serve(r, store, limits, stats, workers, tel)
}

/// Prometheus 3's OTLP path for metrics, `/api/v1/otlp/v1/metrics`, on
/// the API port (what an SDK or OpenTelemetry Collector pointed at a
/// Prometheus server sends to), handled as `/v1/metrics` is.
pub fn prometheus_path(
    store: Arc<Store>,
    limits: IngestLimits,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/otlp/v1/metrics", post(metrics))
        .map(|r| serve(r, store, limits, stats, workers, tel))
}

/// `r` with the ingest state and the body limits.
fn serve(
    r: Router<Ingest>,
    store: Arc<Store>,
    limits: IngestLimits,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
) -> Router {
    let st = Ingest {
        workers,
        tel,
        permits: Arc::new(Semaphore::new(limits.max_concurrent_batches)),
        store,
        stats,
        limits: limits.clone(),
    };
    let max = limits.max_body_bytes;
    r.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                refuse_declared_oversize(req, next, max)
            },
        ))
        .with_state(st)
}

/// A body declared (Content-Length) larger than the limit is refused at
/// once, before any of it is read; an undeclared one is cut at the limit.
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    max: usize,
) -> Response {
    if let Some(n) = keel_http::declared_length(req.headers())
        && n > max as u64
    {
        let enc = encoding(req.headers()).unwrap_or(Encoding::Json);
        return error(
            enc,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body of {n} bytes exceeds the limit of {max} bytes (collector.max_body_bytes)"
            ),
            None,
        );
    }
    next.run(req).await
}

fn error(enc: Encoding, status: StatusCode, message: String, retry_after: Option<u64>) -> Response {
    let code =
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            14
        } else {
            3
        };
    let mut resp = match enc {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            RpcStatus { code, message }.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            axum::Json(serde_json::json!({ "code": code, "message": message })),
        )
            .into_response(),
    };
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        other => Err(format!(
            "unsupported content type {other:?}: send application/x-protobuf or application/json"
        )),
    }
}

/// Undo `Content-Encoding`, refusing to inflate past `limit` bytes.
fn decode_body(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, String> {
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ce.as_str() {
        "" | "identity" => Ok(body),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip body does not decompress: {e}"))?;
            if out.len() > limit {
                return Err(format!("body decompresses to more than {limit} bytes"));
            }
            Ok(out.into())
        }
        other => Err(format!(
            "unsupported content encoding {other:?}: send gzip or none"
        )),
    }
}

/// Convert and store one export request: `(accepted, rejected, reasons)`,
/// or why nothing could be stored (the WAL failed: retry later). Shared by
/// the HTTP and gRPC receivers.
pub fn ingest_request(
    store: &Store,
    stats: &IngestStats,
    req: &ExportMetricsServiceRequest,
    tel: &Telemetry,
    batch: Option<(u128, i64)>,
    quota: Option<&Quota>,
) -> Result<ExportMetricsServiceResponse, NotStored> {
    let mut converted = otlp::convert(req, &tel.translation, &|l| store.last(l).map(|(_, v)| v));
    // The sender's quota: its rate, then its new series past the cap
    // refused and named, the rest kept.
    // Native histogram samples count against the rate as samples do.
    let histogram_items = super::quota::histogram_samples(&converted.histograms)
        + super::quota::histogram_samples(&converted.delta_histograms);
    super::quota::take(quota, histogram_items, tel.clock.now_ms()).map_err(NotStored::OverRate)?;
    let items = super::quota::samples(&converted.batch) + histogram_items;
    let over_quota = super::quota::charge(quota, &mut converted.batch, tel.clock.now_ms(), stats)
        .map_err(|o| {
        super::quota::refund(quota, histogram_items);
        NotStored::OverRate(o)
    })?;
    if let Some((n, why)) = &over_quota {
        converted.rejected += n;
        converted.reasons.push(why.clone());
    }
    // Native histograms first: the batch id is recorded with the float
    // samples, so a retry after a failure here stores them again, and a
    // retry after a failure there finds them stored (the same samples
    // again are dropped quietly).
    let mut histograms = std::mem::take(&mut converted.histograms);
    histograms.extend(otlp::accumulate_deltas(
        std::mem::take(&mut converted.delta_histograms),
        &|l| store.histograms().last(l),
    ));
    let native = if histograms.is_empty() {
        keel_metricstore::Appended::default()
    } else {
        store.append_histograms(histograms).map_err(|e| {
            super::quota::refund(quota, items);
            NotStored::Retry(format!("native histograms not stored: {e}"))
        })?
    };
    let arrival = store.arrival(&converted.batch);
    let appended = store.append_batch(
        converted.batch,
        batch.map(|b| b.0),
        batch.map_or(0, |b| b.1),
    );
    let Some(mut appended) = appended
        .inspect_err(|_| super::quota::refund(quota, items))
        .map_err(|e| NotStored::Retry(format!("not stored: {e}")))?
    else {
        super::quota::refund(quota, items);
        stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
        return Ok(ExportMetricsServiceResponse::default());
    };
    appended.absorb(native);

    store.mark_arrival(arrival);
    store.metadata().record(&converted.metadata);
    super::store_exemplars(store, converted.exemplars, stats);
    let rejected = converted.rejected + appended.too_old + appended.duplicate;
    stats
        .samples_accepted
        .fetch_add(appended.accepted, Ordering::Relaxed);
    // Derived, not the sender's: what the store refuses of it (a repeat
    // at a time already stored) is no rejection of theirs.
    if !converted.target_info.is_empty() {
        match store.append(converted.target_info) {
            Ok(info) => {
                stats
                    .samples_accepted
                    .fetch_add(info.accepted, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "target_info not stored"),
        }
    }
    stats
        .samples_rejected
        .fetch_add(rejected + appended.over_limits(), Ordering::Relaxed);
    stats
        .samples_over_limits
        .fetch_add(appended.over_limits(), Ordering::Relaxed);
    let mut reasons = converted.reasons;
    reasons.extend(appended.reasons());
    let rejected = rejected + appended.over_limits();
    // Refused whole by a limit: a 4xx, so the sender does not resend it.
    let over_limits = appended.over_limits() + over_quota.map_or(0, |(n, _)| n);
    if appended.accepted == 0 && over_limits > 0 {
        return Err(NotStored::Refused(reasons.join("; ")));
    }
    Ok(ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: reasons.join("; "),
        }),
    })
}

/// OTLP/JSON carries 64-bit integers (timestamps, counts) as decimal
/// strings. The protobuf library's JSON decoding turns a bad one inside a
/// metric's data into "no data" without an error; check them first, so
/// the sender learns which field is wrong.
fn check_json_integers(v: &serde_json::Value, path: &mut String) -> Result<(), String> {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let integer_field =
                    k.ends_with("UnixNano") || matches!(k.as_str(), "count" | "zeroCount");
                if integer_field {
                    let ok = match child {
                        serde_json::Value::String(s) => s.parse::<u64>().is_ok(),
                        serde_json::Value::Number(n) => n.is_u64(),
                        serde_json::Value::Null => true,
                        _ => false,
                    };
                    if !ok {
                        return Err(format!("{path}: {child} is not an unsigned 64-bit integer"));
                    }
                }
                if k == "bucketCounts" {
                    for (i, c) in child.as_array().into_iter().flatten().enumerate() {
                        let ok = c.as_str().is_some_and(|s| s.parse::<u64>().is_ok()) || c.is_u64();
                        if !ok {
                            return Err(format!(
                                "{path}[{i}]: {c} is not an unsigned 64-bit integer"
                            ));
                        }
                    }
                }
                check_json_integers(child, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_json_integers(child, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Decode an OTLP request body in the encoding its content type names;
/// errors name what is wrong (JSON: line and column, or the field path).
fn decode_request<T>(
    enc: Encoding,
    headers: &HeaderMap,
    body: Bytes,
    limits: &IngestLimits,
    what: &str,
) -> Result<T, (StatusCode, String)>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let raw = decode_body(headers, body, limits.max_decoded_bytes)
        .map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    match enc {
        Encoding::Protobuf => T::decode(raw).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("malformed protobuf {what}: {e}"),
            )
        }),
        Encoding::Json => {
            let tree: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "malformed JSON {what} at line {} column {}: {e}",
                        e.line(),
                        e.column()
                    ),
                )
            })?;
            check_json_integers(&tree, &mut String::new())
                .map_err(|m| (StatusCode::BAD_REQUEST, m))?;
            serde_json::from_value(tree).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("malformed JSON {what}: {e}"),
                )
            })
        }
    }
}

type Work<T> = Result<Result<T, Failed>, keel_http::workers::WorkerError>;

/// Run an OTLP export on the ingest workers and answer it in its encoding.
async fn export<T, F>(st: Ingest, headers: HeaderMap, f: F) -> Response
where
    T: Message + serde::Serialize + Send + 'static,
    F: FnOnce(Encoding, HeaderMap, Ingest) -> Result<T, Failed> + Send + 'static,
{
    let enc = match encoding(&headers) {
        Ok(e) => e,
        Err(msg) => {
            st.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                msg,
                None,
            );
        }
    };
    let Ok(_permit) = st.permits.clone().try_acquire_owned() else {
        return error(
            enc,
            StatusCode::SERVICE_UNAVAILABLE,
            "collector overloaded: retry later".into(),
            Some(1),
        );
    };
    let st2 = st.clone();
    let work: Work<T> = st.workers.run(move || f(enc, headers, st2)).await;
    let resp = match work {
        Ok(Ok(r)) => r,
        Ok(Err(f)) => {
            if f.status == StatusCode::BAD_REQUEST {
                st.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            return error(enc, f.status, f.message, f.retry_after);
        }
        Err(e) => {
            return error(
                enc,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("ingest task failed: {e}"),
                None,
            );
        }
    };
    match enc {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            resp.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => axum::Json(resp).into_response(),
    }
}

/// The sender's quota, when its token has limits.
type SenderQuota = Option<axum::Extension<Arc<Quota>>>;

async fn metrics(
    State(st): State<Ingest>,
    quota: SenderQuota,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    export(st, headers, move |enc, headers, st| {
        let id = batch_id(&headers).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let req: ExportMetricsServiceRequest = decode_request(
            enc,
            &headers,
            body,
            &st.limits,
            "ExportMetricsServiceRequest",
        )?;
        let batch = id.map(|id| (id, st.tel.clock.now_ms()));
        let quota = quota.as_ref().map(|q| &*q.0);
        ingest_request(&st.store, &st.stats, &req, &st.tel, batch, quota).map_err(NotStored::http)
    })
    .await
}

async fn otlp_logs(
    State(st): State<Ingest>,
    quota: SenderQuota,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    export(st, headers, move |enc, headers, st| {
        let id = batch_id(&headers).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let req: ExportLogsServiceRequest =
            decode_request(enc, &headers, body, &st.limits, "ExportLogsServiceRequest")?;
        let quota = quota.as_ref().map(|q| &*q.0);
        ingest_logs(&st.tel, &req, id, &st.stats, quota).map_err(NotStored::http)
    })
    .await
}

async fn otlp_traces(
    State(st): State<Ingest>,
    quota: SenderQuota,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    export(st, headers, move |enc, headers, st| {
        let id = batch_id(&headers).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let req: ExportTraceServiceRequest =
            decode_request(enc, &headers, body, &st.limits, "ExportTraceServiceRequest")?;
        let quota = quota.as_ref().map(|q| &*q.0);
        ingest_traces(&st.store, &st.tel, &req, id, &st.stats, quota).map_err(NotStored::http)
    })
    .await
}

/// Store an OTLP traces export (shared by OTLP/HTTP and OTLP/gRPC) and
/// derive its RED metrics; spans with malformed ids are rejected and
/// counted in a partial success.
pub fn ingest_traces(
    store: &Store,
    tel: &Telemetry,
    req: &ExportTraceServiceRequest,
    batch_id: Option<u128>,
    stats: &IngestStats,
    quota: Option<&Quota>,
) -> Result<ExportTraceServiceResponse, NotStored> {
    let now = tel.clock.now_ms();
    // Checked before the span metrics, which a repeat would count twice.
    // (Two copies of one batch at the same moment can both pass here;
    // the span store still keeps one, but the metrics would count both.)
    if batch_id.is_some_and(|id| tel.spans.has_batch(id)) {
        stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
        return Ok(ExportTraceServiceResponse::default());
    }
    let (mut spans, problems) = keel_logindex::traces::from_otlp(req);
    let items = spans.len() as u64;
    super::quota::take(quota, items, now).map_err(NotStored::OverRate)?;
    let not_stored = |e: String| {
        super::quota::refund(quota, items);
        NotStored::Retry(e)
    };
    let cut = tel.records.spans(&mut spans);
    if cut > 0 {
        tracing::debug!(
            attributes = cut,
            "span attributes dropped or cut at collector.limits"
        );
    }
    // Metrics first: if they fail, nothing is acknowledged and the client
    // retries; spans stored twice would be worse than metrics missing.
    tel.span_metrics
        .record(&spans, store, now)
        .map_err(|e| not_stored(e.to_string()))?;
    let stored = spans.len();
    if tel
        .spans
        .append_batch(spans, now, batch_id)
        .map_err(|e| not_stored(e.to_string()))?
        .is_none()
    {
        stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
    } else {
        tel.forward
            .otlp(keel_agent::buffer::Signal::Traces, stored, req);
    }
    Ok(ExportTraceServiceResponse {
        partial_success: (!problems.is_empty()).then(|| ExportTracePartialSuccess {
            rejected_spans: problems.len() as i64,
            error_message: problems.join("; "),
        }),
    })
}

/// Store an OTLP logs export (shared by OTLP/HTTP and OTLP/gRPC): records
/// with malformed ids are rejected and counted in a partial success.
pub fn ingest_logs(
    tel: &Telemetry,
    req: &ExportLogsServiceRequest,
    batch_id: Option<u128>,
    stats: &IngestStats,
    quota: Option<&Quota>,
) -> Result<ExportLogsServiceResponse, NotStored> {
    let now_ms = tel.clock.now_ms();
    let (records, mut problems) = keel_logindex::logs::record::from_otlp(req, now_ms * 1_000_000);
    let items = records.len() as u64;
    super::quota::take(quota, items, now_ms).map_err(NotStored::OverRate)?;
    // OTLP names no place for a good record: its service and time do.
    let places: Vec<String> = records
        .iter()
        .map(|r| format!("the log record of {:?} at {} ns", r.service, r.timestamp_ns))
        .collect();
    let (records, refused) = tel.records.logs(records, |i| places[i].clone());
    problems.extend(refused);
    let stored = records.len();
    let appended = tel.logs.append_batch(records, now_ms, batch_id);
    if appended
        .inspect_err(|_| super::quota::refund(quota, items))
        .map_err(|e| NotStored::Retry(e.to_string()))?
        .is_none()
    {
        super::quota::refund(quota, items);
        stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
        return Ok(ExportLogsServiceResponse::default());
    }
    tel.forward
        .otlp(keel_agent::buffer::Signal::Logs, stored, req);
    Ok(ExportLogsServiceResponse {
        partial_success: (!problems.is_empty()).then(|| ExportLogsPartialSuccess {
            rejected_log_records: problems.len() as i64,
            error_message: problems.join("; "),
        }),
    })
}
