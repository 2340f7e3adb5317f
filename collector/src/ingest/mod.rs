//! Receiving telemetry: OTLP/HTTP and the OTLP → series mapping, and
//! Prometheus remote write.

pub mod grpc;
pub mod http;
pub mod otlp;
pub mod remote_write;
