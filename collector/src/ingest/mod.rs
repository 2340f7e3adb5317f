//! Receiving telemetry: OTLP/HTTP and the OTLP → series mapping.

pub mod http;
pub mod otlp;
