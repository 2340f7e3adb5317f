//! keel-alerting: alerting. Rule files with P0–P2 severities, recording
//! and log rules, their templates and the engine that evaluates them
//! ([`rules`]); routing pages by severity and business hours, silences,
//! inhibition, tickets, email over SMTP and webhooks ([`notify`]); and
//! promtool's rule unit tests run on Keel's engines ([`promtest`]).
//!
//! It reads the metric store through the PromQL engine and the log index;
//! it must never depend on dashboards, incidents, ingest or the collector.

pub mod notify;
pub mod promtest;
pub mod rules;
