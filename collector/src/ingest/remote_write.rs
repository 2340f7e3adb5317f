//! Prometheus remote-write 1.0 receiver (`POST /api/v1/write`): a
//! snappy-compressed protobuf `WriteRequest`, so existing Prometheus
//! servers and agents can send to Keel.
//!
//! Answers as Prometheus does: 204 when stored; 400 (not to be retried)
//! for malformed requests or rejected samples, naming why, with every
//! valid sample of the request stored; 503 when the write-ahead log fails.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;

use crate::labels::{Labels, NAME};
use crate::store::Store;
use crate::store::wal::Batch;

/// `prometheus.WriteRequest` (remote write 1.0), the fields Keel reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// Series with samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decode a snappy-compressed `WriteRequest` into series, reporting the
/// first problem of every series that cannot be stored.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<(Batch, Vec<String>), String> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| format!("body is not snappy-compressed: {e}"))?;
    if len > max_decoded {
        return Err(format!(
            "body decompresses to {len} bytes, more than {max_decoded}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("body is not snappy-compressed: {e}"))?;
    let req = WriteRequest::decode(&raw[..])
        .map_err(|e| format!("malformed protobuf WriteRequest: {e}"))?;
    let mut batch = Vec::with_capacity(req.timeseries.len());
    let mut problems = Vec::new();
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        let mut names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        let problem = if let Some(bad) = ts.labels.iter().find(|l| !valid_label_name(&l.name)) {
            Some(format!(
                "timeseries[{i}]: invalid label name {:?}",
                bad.name
            ))
        } else if names.windows(2).any(|w| w[0] == w[1]) {
            Some(format!("timeseries[{i}]: duplicate label name"))
        } else if !ts
            .labels
            .iter()
            .any(|l| l.name == NAME && !l.value.is_empty())
        {
            Some(format!("timeseries[{i}]: no metric name (__name__)"))
        } else {
            None
        };
        if let Some(p) = problem {
            problems.push(p);
            continue;
        }
        let labels = Labels::new(ts.labels.into_iter().map(|l| (l.name, l.value)).collect());
        batch.push((
            labels,
            ts.samples
                .into_iter()
                .map(|s| (s.timestamp, s.value))
                .collect(),
        ));
    }
    Ok((batch, problems))
}

#[derive(Clone)]
struct Rw {
    store: Arc<Store>,
    max_decoded: usize,
}

/// The remote-write route.
pub fn routes(store: Arc<Store>, max_body: usize, max_decoded: usize) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Rw { store, max_decoded })
}

async fn write(State(rw): State<Rw>, body: Bytes) -> Response {
    let work = tokio::task::spawn_blocking(move || {
        let (batch, mut problems) =
            decode(&body, rw.max_decoded).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let appended = rw
            .store
            .append(batch)
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        problems.extend(appended.reasons());
        Ok::<_, (StatusCode, String)>(problems)
    })
    .await;
    match work {
        Ok(Ok(problems)) if problems.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(problems)) => (
            StatusCode::BAD_REQUEST,
            format!("some samples were not stored: {}\n", problems.join("; ")),
        )
            .into_response(),
        Ok(Err((status, msg))) => (status, format!("{msg}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
