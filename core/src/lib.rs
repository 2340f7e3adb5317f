//! keel-core: what every Keel crate shares.
//!
//! - [`clock`]: the one injected [`Clock`](clock::Clock). Every piece of
//!   time-dependent logic reads time from it, so that tests and incident
//!   replay can drive time by hand ([`ManualClock`](clock::ManualClock)).
//! - [`crash`]: named crash points for crash tests (`KEEL_CRASH_AT`).
//! - [`config`]: loading YAML configuration with errors that name the file,
//!   line and column, environment overrides, and validation that reports
//!   every problem at once.
//! - [`fencing`]: fencing tokens checked where a leader's actions land.
//! - [`duration`]: human-readable durations (`250ms`, `1m30s`) in config files.
//! - [`marks`]: when batches arrived and rule groups and controller
//!   loops ran, for incident replay.
//! - [`names`]: Prometheus' label and metric name rules, and the OTLP
//!   metadata names agent and collector share.
//! - [`procfs`]: a process's state, CPU time and memory from `/proc`.
//! - [`quota`]: one sender's share of the collector (ingestion rate,
//!   active series).
//! - [`secret`]: passwords and tokens in config, never printed; bearer
//!   headers read and compared in constant time.
//! - [`stale`]: Prometheus' staleness marker.
//! - [`timestamp`]: log-line timestamps (RFC 3339 or epoch numbers).

pub mod clock;
pub mod config;
pub mod crash;
pub mod duration;
pub mod fencing;
pub mod marks;
pub mod names;
pub mod procfs;
pub mod quota;
pub mod secret;
pub mod shutdown;
pub mod stale;
pub mod timestamp;
