//! Receiving telemetry: OTLP/HTTP and the OTLP → series mapping, and
//! Prometheus remote write; each sender's quota on what it sends.

pub mod grpc;
pub mod http;
pub mod otlp;
pub mod quota;
pub mod remote_write;
pub mod remote_write_v2;
