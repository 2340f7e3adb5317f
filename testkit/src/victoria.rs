//! A real VictoriaMetrics (Debian package `victoria-metrics`) on
//! loopback, for the forwarding test and `keel bench forward`: what it
//! receives is searchable at once (no latency offset), and it keeps
//! everything (`-retentionPeriod=100y`, as samples may be old).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proc::Reaped;

/// A running VictoriaMetrics; killed and reaped when dropped.
pub struct Victoria {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    proc: Reaped,
}

/// Why it did not start.
#[derive(Debug, thiserror::Error)]
pub enum VictoriaError {
    /// The binary is missing.
    #[error("starting {bin} (apt install victoria-metrics): {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// It started but never answered `/health`.
    #[error("VictoriaMetrics: {0}")]
    NotAnswering(#[from] crate::wait::Timeout),
}

impl Victoria {
    /// Start `bin` on 127.0.0.1:`port` with its data in `dir` (kept across
    /// a stop and a start) and wait until it answers.
    pub async fn start(bin: &Path, dir: &Path, port: u16) -> Result<Self, VictoriaError> {
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", dir.display()))
            .args([
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=ERROR",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| VictoriaError::Spawn {
                bin: bin.display().to_string(),
                source,
            })?;
        let vm = Self {
            url: format!("http://127.0.0.1:{port}"),
            proc: Reaped(child),
        };
        let http = reqwest::Client::new();
        crate::wait::within(
            "VictoriaMetrics answers",
            Duration::from_secs(30),
            Duration::from_millis(50),
            async || {
                http.get(format!("{}/health", vm.url))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await?;
        Ok(vm)
    }

    /// Stop it as a service manager would (SIGTERM: it flushes what it
    /// holds) and wait until it has exited.
    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.proc.0.wait();
    }
}
