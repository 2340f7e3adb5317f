//! The keel binary's integration tests: `keel up`, the agent, the collector process, failover, replay, the dashboard in real browsers, each against the real binary.
//!
//! One test binary (one link) for all of them; each file is a module.

mod common;
mod pgcluster;

mod agent_shipping;
mod alerting_e2e;
mod alertmanager_interop;
mod autoscale_e2e;
mod collector_faults;
mod collector_process;
mod dashboard_browser;
mod dashboard_firefox;
mod dashboard_login;
mod db_failover;
mod deb_package;
mod failover;
mod failover_postgres;
mod forwarding;
mod ha_pair;
mod incident_up;
mod keel_cli;
mod lb_and_scaling;
mod native_forward;
mod native_scrape;
mod nhcb_scrape;
mod prometheus_interop;
mod prometheus_labels;
mod replay;
mod shipped_files;
mod telemetry_and_api;
