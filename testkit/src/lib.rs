//! keel-testkit: what Keel's tests and benches share, so each exists once.
//!
//! - [`free_ports`]: the environment that puts `keel up` on free ports;
//! - [`proc`]: a child process killed and reaped when dropped, and a
//!   free port to give one;
//! - [`wait`]: waiting on a condition with a deadline and a message that
//!   names what never happened, and for a port to accept connections;
//! - [`turn`]: one turn at a time for tests that start processes;
//! - [`smtp`]: a real SMTP server (Python's aiosmtpd, as `.ci/run`
//!   installs it) and everything it received;
//! - [`victoria`]: a real VictoriaMetrics on loopback, for forwarding;
//! - [`server`]: a real Prometheus or Alertmanager on loopback, awaited
//!   until ready;
//! - [`https`] (feature `https`): a local HTTPS server signed by a
//!   throwaway CA, for the tests of Keel's HTTPS clients;
//! - [`webdriver`]: a headless Chromium driven over W3C WebDriver
//!   (chromedriver), for the browser test and `keel bench dashboard`;
//! - [`NoMetrics`]: a metric source with nothing in it, for the failover
//!   controller tests and benches that need no autoscaling.
//!
//! It is a dev-dependency of the tests and a normal dependency of the
//! `keel bench` code; nothing a user runs in production calls it. It must
//! never depend on the collector or the stores: tests start those.

pub mod free_ports;
#[cfg(feature = "https")]
pub mod https;
pub mod proc;
pub mod server;
pub mod smtp;
pub mod turn;
pub mod victoria;
pub mod wait;
pub mod webdriver;

pub use proc::{Reaped, free_port};
pub use wait::{Timeout, listening, until, within};

/// A metric source with no data: the controller's failover loop needs a
/// source, and these tests and benches scale nothing.
pub struct NoMetrics;

impl keel_controller::MetricSource for NoMetrics {
    fn instant(&self, _: &str, _: i64) -> Result<keel_controller::run::Samples, String> {
        Err("no metrics here".into())
    }
}
