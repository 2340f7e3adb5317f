//! keel-collector's integration tests: a whole collector in the test process, over HTTP, gRPC and real OpenTelemetry SDKs.
//!
//! One test binary (one link) for all of them; each file is a module.

mod common;

mod dashboards_api;
mod fuzz_decoders;
mod golden;
mod incidents_p0;
mod ingest_limits;
mod logs_api;
mod native_histograms;
mod otel_sdks;
mod otlp_ingest;
mod people;
mod query_annotations;
mod query_limits;
mod rule_tests;
mod rules_running;
mod sender_tokens;
mod smtp_pages;
mod state_restart;
mod tls;
mod traces_api;
mod webhooks;
