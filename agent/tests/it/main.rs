//! keel-agent's integration tests: a whole agent in the test process.
//!
//! One test binary for all of them; each file is a module.

mod https;
mod node_exporter;
mod openmetrics;
