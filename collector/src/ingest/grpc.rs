//! OTLP/gRPC receiver (port 4317 by default), served by axum over HTTP/2
//! (h2c): the same conversion and write-ahead path as OTLP/HTTP, with gzip
//! accepted, message size bounded, `UNAVAILABLE` when overloaded or when the
//! WAL cannot be written (clients retry), and partial success for rejected
//! points. Logs and traces answer `UNIMPLEMENTED` until their store exists.

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;

use super::http::{IngestLimits, IngestStats, ingest_request};
use super::workers::Workers;
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

async fn unimplemented() -> axum::response::Response {
    tonic::Status::unimplemented(
        "Keel does not store logs and traces yet (coming with the logs-and-traces store); nothing was accepted",
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
) -> Router {
    let receiver = Receiver {
        workers,
        store,
        permits: Arc::new(Semaphore::new(limits.max_concurrent_batches)),
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
        .route(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            axum::routing::post(unimplemented),
        )
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            axum::routing::post(unimplemented),
        )
}
