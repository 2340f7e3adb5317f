//! OTLP/gRPC receiver (port 4317 by default), served by axum over HTTP/2
//! (h2c): the same conversion and write-ahead path as OTLP/HTTP, with gzip
//! accepted, message size bounded, `UNAVAILABLE` when overloaded or when the
//! WAL cannot be written (clients retry), and partial success for rejected
//! points, log records and spans.

use std::sync::Arc;

use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::http::{
    IngestLimits, IngestStats, Telemetry, ingest_logs, ingest_request, ingest_traces,
};
use keel_core::quota::Quota;
use keel_http::workers::Workers;
use keel_metricstore::Store;

struct Receiver {
    store: Arc<Store>,
    permits: Arc<Semaphore>,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
}

/// Run an export on the ingest workers within the concurrency limit:
/// `UNAVAILABLE` (clients retry) when overloaded or when it cannot be
/// stored, `INTERNAL` if the job failed.
async fn export<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    workers: &Workers,
    f: impl FnOnce() -> Result<T, super::http::NotStored> + Send + 'static,
) -> Result<tonic::Response<T>, tonic::Status> {
    let Ok(_permit) = permits.clone().try_acquire_owned() else {
        return Err(tonic::Status::unavailable(
            "collector overloaded: retry later",
        ));
    };
    let result = workers
        .run(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("ingest task failed: {e}")))?;
    Ok(tonic::Response::new(
        result.map_err(super::http::NotStored::grpc)?,
    ))
}

/// The sender's quota, when its token has limits (put there by the
/// sender check in front of the gRPC routes).
fn quota<T>(request: &tonic::Request<T>) -> Option<Arc<Quota>> {
    request.extensions().get::<Arc<Quota>>().cloned()
}

/// The `keel-batch-id` metadata of a gRPC export, as over HTTP.
fn grpc_batch_id<T>(request: &tonic::Request<T>) -> Result<Option<u128>, tonic::Status> {
    let value = request.metadata().get(keel_metricstore::batch_ids::HEADER);
    keel_metricstore::batch_ids::from_header(value.map(|v| v.as_bytes()))
        .map_err(tonic::Status::invalid_argument)
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let id = grpc_batch_id(&request)?;
        let now = self.tel.clock.now_ms();
        let quota = quota(&request);
        let (store, stats, tel, req) = (
            self.store.clone(),
            self.stats.clone(),
            self.tel.clone(),
            request.into_inner(),
        );
        export(&self.permits, &self.workers, move || {
            ingest_request(
                &store,
                &stats,
                &req,
                &tel,
                id.map(|id| (id, now)),
                quota.as_deref(),
            )
        })
        .await
    }
}

struct LogsReceiver {
    tel: Telemetry,
    stats: Arc<IngestStats>,
    permits: Arc<Semaphore>,
    workers: Workers,
}

struct TraceReceiver {
    store: Arc<Store>,
    tel: Telemetry,
    stats: Arc<IngestStats>,
    permits: Arc<Semaphore>,
    workers: Workers,
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let id = grpc_batch_id(&request)?;
        let quota = quota(&request);
        let (store, tel, stats, req) = (
            self.store.clone(),
            self.tel.clone(),
            self.stats.clone(),
            request.into_inner(),
        );
        export(&self.permits, &self.workers, move || {
            ingest_traces(&store, &tel, &req, id, &stats, quota.as_deref())
        })
        .await
    }
}

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let id = grpc_batch_id(&request)?;
        let quota = quota(&request);
        let (tel, stats, req) = (self.tel.clone(), self.stats.clone(), request.into_inner());
        export(&self.permits, &self.workers, move || {
            ingest_logs(&tel, &req, id, &stats, quota.as_deref())
        })
        .await
    }
}

/// The gRPC routes.
pub fn routes(
    store: Arc<Store>,
    limits: &IngestLimits,
    stats: Arc<IngestStats>,
    workers: Workers,
    tel: Telemetry,
) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_batches));
    let traces = TraceServiceServer::new(TraceReceiver {
        store: store.clone(),
        tel: tel.clone(),
        stats: stats.clone(),
        permits: permits.clone(),
        workers: workers.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limits.max_decoded_bytes);
    let logs = LogsServiceServer::new(LogsReceiver {
        tel: tel.clone(),
        stats: stats.clone(),
        permits: permits.clone(),
        workers: workers.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(limits.max_decoded_bytes);
    let receiver = Receiver {
        workers,
        store,
        permits,
        stats,
        tel,
    };
    let metrics = MetricsServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limits.max_decoded_bytes);
    Router::new()
        .route_service(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            metrics,
        )
        .route_service(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            logs,
        )
        .route_service(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            traces,
        )
}
