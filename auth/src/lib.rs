//! keel-auth: who may talk to Keel.
//!
//! - [`senders`]: the bearer tokens agents and other senders present on
//!   ingest (OTLP over HTTP and gRPC, Prometheus remote write, the log
//!   push API), per tenant or environment, checked by an axum middleware
//!   on those listeners and routes.
//!
//! It owns credentials and their checks only; it must never depend on a
//! store, the rule engine or the collector (they depend on it).

pub mod senders;

pub use senders::{AuthConfig, SenderToken, Senders};
