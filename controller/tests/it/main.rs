//! keel-controller's integration tests: the autoscaler's rules on the manual Clock and the controller's loop.
//!
//! One test binary (one link) for all of them; each file is a module.

mod common;

mod controller_loop;
mod forecast;
mod hpa_semantics;
mod keel_rules;
