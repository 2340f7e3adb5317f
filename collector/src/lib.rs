//! keel-collector: where telemetry lands.
//!
//! - [`ingest`]: OTLP/HTTP receivers (`/v1/metrics`; logs and traces are
//!   refused with 501 until their stores exist) and the OTLP → Prometheus
//!   series mapping;
//! - [`store`]: the metric store (packed chunks, write-ahead log);
//! - [`logs`]: the log store (tantivy indexes by time partition, WAL);
//! - [`traces`]: the span store on the same engine, and span RED metrics;
//! - [`promql`]: Keel's PromQL engine over the store (parsing by the
//!   `promql-parser` crate);
//! - [`api`]: Prometheus' HTTP API shapes (`/api/v1/query`, …);
//! - [`rules`]: alerting and recording rules (P0–P2, log rules) and their engine;
//! - [`notify`]: routing by severity and business hours, tickets, email;
//! - [`dashboards`]: dashboard files, their API and the embedded web pages;
//! - [`gzip`]: compression of the API's JSON and the pages for clients that accept it;
//! - [`promtest`]: promtool's unit-test format (`promql_expr_test`, `alert_rule_test`), run on Keel's engines.

pub mod api;
pub mod batch_ids;
pub mod dashboards;
pub mod gzip;

/// Hash maps on the hot paths: foldhash is several times faster than
/// SipHash on label strings and integer keys, and seeds each map randomly,
/// so label sets sent from outside cannot be crafted to collide.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub mod import;
pub mod incident;
pub mod index_store;
pub mod ingest;
pub mod labels;
pub mod logs;
pub mod notify;
pub mod promql;
pub mod promtest;
pub mod rules;
pub mod server;
pub mod store;
pub mod traces;
pub mod varint;
