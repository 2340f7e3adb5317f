//! keel-dashboards: dashboards. YAML files of panels ([`model`]), a
//! directory of them kept loaded ([`library`]), their API ([`api`]) and
//! the web pages that draw them ([`assets`], embedded in the binary from
//! `web/` beside this crate; the shipped dashboards are the YAML files
//! there too).
//!
//! It reads the metric store through the PromQL engine and the log
//! index; it must never depend on alerting, ingest or the collector.

pub mod api;
pub mod assets;
pub mod library;
pub mod model;

pub use library::{Entry, Library};
pub use model::Dashboard;

/// The dashboards Keel ships for the sample app, as (file name, YAML):
/// written out by `keel up` when no `dashboards/` directory is at hand.
pub const SHIPPED: [(&str, &str); 3] = [
    ("overview.yaml", include_str!("../overview.yaml")),
    ("service.yaml", include_str!("../service.yaml")),
    ("hosts.yaml", include_str!("../hosts.yaml")),
];
