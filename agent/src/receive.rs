//! The local OTLP/HTTP receiver (127.0.0.1:4319 by default): apps on the
//! host export spans, logs and metrics to the agent, which buffers them
//! on disk like everything else and ships them to the collector, so an
//! app never waits on, or loses data to, the network.
//!
//! `/v1/traces`, `/v1/logs` and `/v1/metrics` take protobuf or JSON, gzip
//! or not. A request is decoded (so a malformed one is refused here, with
//! the reason, rather than buffered), `host.name` is added to resources
//! that lack it, and it is buffered as protobuf + gzip. The answer (an
//! empty export response, in the request's encoding) means "buffered".

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::buffer::{Batch, Signal};
use crate::lanes::Lanes;

/// Largest request body taken, compressed or not.
const MAX_BODY: usize = 16 << 20;

#[derive(Clone)]
struct Receiver {
    lanes: Arc<Lanes>,
    hostname: String,
    clock: keel_core::clock::SharedClock,
}

/// The receiver's routes.
pub fn routes(
    lanes: Arc<Lanes>,
    hostname: String,
    clock: keel_core::clock::SharedClock,
) -> axum::Router {
    axum::Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Receiver {
            lanes,
            hostname,
            clock,
        })
}

fn bad(status: StatusCode, msg: String) -> Response {
    (status, msg).into_response()
}

/// Decode a request body (protobuf or JSON, gzip or not).
fn decode<T>(headers: &HeaderMap, body: &[u8]) -> Result<(T, bool), (StatusCode, String)>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let gz = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let raw: Vec<u8> = if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(4 * MAX_BODY as u64)
            .read_to_end(&mut out)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("gzip: {e}")))?;
        out
    } else {
        body.to_vec()
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req = if json {
        serde_json::from_slice(&raw).map_err(|e| {
            let at = (e.line(), e.column());
            (
                StatusCode::BAD_REQUEST,
                format!("malformed OTLP/JSON at line {} column {}: {e}", at.0, at.1),
            )
        })?
    } else {
        T::decode(&raw[..]).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("malformed OTLP protobuf: {e}"),
            )
        })?
    };
    Ok((req, json))
}

fn with_host(resource: &mut Option<Resource>, host: &str) {
    let r = resource.get_or_insert_with(Resource::default);
    if !r.attributes.iter().any(|a| a.key == "host.name") {
        r.attributes.push(KeyValue {
            key: "host.name".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        host.to_owned(),
                    ),
                ),
            }),
            ..KeyValue::default()
        });
    }
}

impl Receiver {
    /// Decode a request, let `tag` add `host.name` to its resources and
    /// count its records, buffer it, and answer in the request's encoding.
    fn accept<Req, Resp>(
        &self,
        signal: Signal,
        headers: &HeaderMap,
        body: &[u8],
        tag: impl FnOnce(&mut Req, &str) -> usize,
    ) -> Response
    where
        Req: Message + Default + serde::de::DeserializeOwned,
        Resp: Message + Default + serde::Serialize,
    {
        let (mut req, json) = match decode::<Req>(headers, body) {
            Ok(x) => x,
            Err((status, msg)) => return bad(status, msg),
        };
        let records = tag(&mut req, &self.hostname);
        let batch = Batch {
            id: rand::random(),
            signal,
            records: records as u32,
            created_ms: self.clock.now_ms(),
            cursor: None,
            body: crate::otlp::gzip_request(&req),
        };
        if let Err(e) = self.lanes.push(&batch) {
            return bad(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not buffered: {e}"),
            );
        }
        let answer = Resp::default();
        if json {
            axum::Json(answer).into_response()
        } else {
            (
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                answer.encode_to_vec(),
            )
                .into_response()
        }
    }
}

async fn traces(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    r.accept::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
        Signal::Traces,
        &headers,
        &body,
        |req, host| {
            let mut n = 0;
            for rs in &mut req.resource_spans {
                with_host(&mut rs.resource, host);
                n += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
            }
            n
        },
    )
}

async fn logs(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    r.accept::<ExportLogsServiceRequest, ExportLogsServiceResponse>(
        Signal::Logs,
        &headers,
        &body,
        |req, host| {
            let mut n = 0;
            for rl in &mut req.resource_logs {
                with_host(&mut rl.resource, host);
                n += rl
                    .scope_logs
                    .iter()
                    .map(|s| s.log_records.len())
                    .sum::<usize>();
            }
            n
        },
    )
}

async fn metrics(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    r.accept::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
        Signal::Metrics,
        &headers,
        &body,
        |req, host| {
            let mut n = 0;
            for rm in &mut req.resource_metrics {
                with_host(&mut rm.resource, host);
                n += rm
                    .scope_metrics
                    .iter()
                    .map(|s| s.metrics.len())
                    .sum::<usize>();
            }
            n
        },
    )
}
