//! OTLP/gRPC receiver (port 4317 by default), served by axum over HTTP/2
//! (h2c): the same conversion and write-ahead path as OTLP/HTTP, with gzip
//! accepted, message size bounded, `UNAVAILABLE` when overloaded or when the
//! WAL cannot be written (clients retry), and partial success for rejected
//! points and log records. Traces answer `UNIMPLEMENTED` until the span
//! store exists.

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use keel_core::clock::SharedClock;
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

use super::http::{IngestLimits, IngestStats, ingest_logs, ingest_request};
use super::workers::Workers;
use crate::logs::LogStore;
use crate::store::Store;

struct Receiver {
    store: Arc<Store>,
    permits: Arc<Semaphore>,
    stats: Arc<IngestStats>,
    workers: Workers,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Err(tonic::Status::unavailable(
                "collector overloaded: retry later",
            ));
        };
        let (store, stats, req) = (self.store.clone(), self.stats.clone(), request.into_inner());
        let result = self
            .workers
            .run(move || ingest_request(&store, &stats, &req))
            .await
            .map_err(|e| tonic::Status::internal(format!("ingest task failed: {e}")))?;
        Ok(tonic::Response::new(
            result.map_err(tonic::Status::unavailable)?,
        ))
    }
}

struct LogsReceiver {
    logs: Arc<LogStore>,
    clock: SharedClock,
    permits: Arc<Semaphore>,
    workers: Workers,
}

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Err(tonic::Status::unavailable(
                "collector overloaded: retry later",
            ));
        };
        let (logs, clock, req) = (self.logs.clone(), self.clock.clone(), request.into_inner());
        let result = self
            .workers
            .run(move || ingest_logs(&logs, &clock, &req))
            .await
            .map_err(|e| tonic::Status::internal(format!("ingest task failed: {e}")))?;
        Ok(tonic::Response::new(
            result.map_err(tonic::Status::unavailable)?,
        ))
    }
}

async fn unimplemented() -> axum::response::Response {
    tonic::Status::unimplemented(
        "Keel does not store traces yet (coming with the span store); nothing was accepted",
    )
    .into_http::<axum::body::Body>()
    .into_response()
}

/// The gRPC routes.
pub fn routes(
    store: Arc<Store>,
    limits: &IngestLimits,
    stats: Arc<IngestStats>,
    workers: Workers,
    logs: Arc<LogStore>,
    clock: SharedClock,
) -> Router {
    let permits = Arc::new(Semaphore::new(limits.max_concurrent_batches));
    let logs = LogsServiceServer::new(LogsReceiver {
        logs,
        clock,
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
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            axum::routing::post(unimplemented),
        )
}
