//! A real peer server (Debian's `prometheus`, `prometheus-alertmanager`)
//! on loopback: started with its flags, awaited until its readiness
//! endpoint answers, killed and reaped when dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proc::Reaped;

/// A running peer; killed and reaped when dropped.
pub struct Server {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    _proc: Reaped,
}

/// Why it did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The binary is missing.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// It started but was never ready; its stderr says why.
    #[error("{what}; its stderr: {stderr}")]
    NotReady {
        /// What timed out.
        what: crate::wait::Timeout,
        /// What it printed.
        stderr: String,
    },
}

impl Server {
    /// Start `bin` with `args` (which make it listen on 127.0.0.1:`port`),
    /// its stderr in `stderr`, and wait until `GET <url><ready>` answers
    /// 200.
    pub async fn start(
        bin: &str,
        args: &[String],
        port: u16,
        ready: &str,
        stderr: &Path,
    ) -> Result<Self, ServerError> {
        let err_file = std::fs::File::create(stderr).map_err(|source| ServerError::Spawn {
            bin: bin.to_owned(),
            source,
        })?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            _proc: Reaped(child),
        };
        let http = reqwest::Client::new();
        crate::wait::within(
            &format!("{bin} ready at {}{ready}", server.url),
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || {
                http.get(format!("{}{ready}", server.url))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        )
        .await
        .map_err(|what| ServerError::NotReady {
            what,
            stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
        })?;
        Ok(server)
    }

    /// Debian's Prometheus on a free port with the config `config(port)`
    /// makes (YAML, written to `dir/prometheus.yml`; the port, for a
    /// Prometheus that scrapes itself) and `flags`, its data and stderr in
    /// `dir`.
    pub async fn prometheus(
        dir: &Path,
        config: impl FnOnce(u16) -> String,
        flags: &[&str],
    ) -> Result<Self, ServerError> {
        let port = crate::free_port().map_err(|source| ServerError::Spawn {
            bin: "prometheus".into(),
            source,
        })?;
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config(port)).map_err(|source| ServerError::Spawn {
            bin: "prometheus".into(),
            source,
        })?;
        let mut args = vec![
            format!("--config.file={}", file.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        Self::start(
            "prometheus",
            &args,
            port,
            "/-/ready",
            &dir.join("prometheus.stderr"),
        )
        .await
    }
}
