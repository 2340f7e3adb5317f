//! keel-collector: where telemetry lands, and the server that wires
//! Keel's capabilities together.
//!
//! - [`ingest`]: OTLP over HTTP and gRPC (metrics, logs, traces), the
//!   OTLP → Prometheus series mapping, and Prometheus remote write;
//! - [`api`]: Prometheus' HTTP query API (`/api/v1/query`, `series`,
//!   `labels`, …) over the metric store and the PromQL engine;
//! - [`status_api`]: the rest of Prometheus' API that Grafana and
//!   promtool call (`/-/healthy`, `/-/ready`, status pages, targets,
//!   metadata, `format_query`);
//! - [`read_out`]: `/federate` and remote read, for a Prometheus that
//!   reads from Keel;
//! - [`access`]: what each API route needs (the people guard's table);
//! - [`limits`]: what clients can make the collector hold;
//! - [`own_metrics`]: the collector's own counters at `/metrics`;
//! - [`forward`]: remote write, OTLP forwarding and remote queries, the
//!   path to a clustered store (queues from `keel-agent`);
//! - [`ha`]: leading a pair of collectors by a lease;
//! - [`server`]: the collector's configuration and one process serving
//!   all of it: it opens the metric store (`keel-metricstore`), the log and
//!   span index (`keel-logindex`), runs the rules and notifications
//!   (`keel-alerting`), serves dashboards (`keel-dashboards`) and records
//!   incidents (`keel-incident`).
//!
//! Nothing in the workspace below it depends on it: only the `keel`
//! binary and the tests that start a whole collector.

pub mod access;
pub mod api;
pub mod exemplars_api;
pub mod forward;
pub mod ha;
pub mod ingest;
pub mod limits;
pub mod own_metrics;
pub mod read_out;
pub mod server;
pub mod status_api;
