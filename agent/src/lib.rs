//! Keel's host agent.
//!
//! Collects telemetry on a host and ships it to the collector without
//! losing it: Prometheus endpoints, listed or found in `file_sd` files
//! ([`discovery`]), are scraped on their own intervals
//! ([`scrape`], lines split by `prometheus-parse`, labels parsed by
//! [`exposition`]), each scrape becomes an OTLP metrics batch
//! ([`otlp`]), every batch is written to the on-disk buffer
//! ([`buffer`]) before anything is sent, and the shipper ([`ship`])
//! sends the buffer oldest first as OTLP/HTTP protobuf with gzip and a
//! stable batch id, retrying with jittered exponential backoff and
//! honouring `Retry-After`. A batch leaves the buffer only once the
//! collector acknowledged it, so a crash, an outage or a lost answer
//! costs a resend, never a record. Tailed log files become log records
//! ([`tail`], [`logline`]; written straight to protobuf by [`logwire`]) and, through log-to-metrics rules, RED series
//! ([`logmetrics`]). [`run`] wires the parts together.
//!
//! On a PostgreSQL host the agent also carries the failover role
//! ([`pgrole`]): the controller's hands there, and the role endpoint
//! load balancers check.
//!
//! The agent never links tantivy or sqlx: it is small enough for every
//! host.

pub mod buffer;
pub mod config;
pub mod discovery;
pub mod exposition;
pub mod host;
pub mod lanes;
pub mod logline;
pub mod logmetrics;
pub mod logwire;
pub mod otlp;
pub mod pgrole;
pub mod receive;
pub mod run;
pub mod scrape;
pub mod ship;
pub mod stats;
pub mod tail;
