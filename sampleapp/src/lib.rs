//! keel-sampleapp: the multi-tier app that Keel watches and drives.
//!
//! Every tier is a separate OS process running the same `keel` binary
//! (`keel sampleapp run --spec FILE`), started and supervised by
//! [`supervisor`]:
//!
//! - [`lb`]: reverse proxy with health checks and run-time backends;
//! - [`web`]: the shop API with a fixed, tunable capacity;
//! - [`cache`]: LRU with TTL and a memory bound;
//! - [`db`]: primary/replica key-value store with a WAL, replication,
//!   promotion under epochs and fencing.
//!
//! Each tier serves Prometheus text on `/metrics` ([`telemetry`]), writes
//! JSON logs with trace ids, and exports OTLP spans, propagating W3C trace
//! context lb → web → cache/db. [`load`] is the open-loop load generator.
//! The app knows nothing of Keel: it speaks only Prometheus text, JSON
//! logs, OTLP and its own HTTP APIs.

pub mod api;
pub mod cache;
pub mod config;
pub mod db;
pub mod fault;
pub mod lb;
pub mod load;
pub mod process;
pub mod spec;
pub mod supervisor;
pub mod telemetry;
pub mod web;
