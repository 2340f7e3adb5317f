//! A real SMTP server for tests and benches: Python's aiosmtpd with its
//! debugging handler, which prints every message it receives. Everything
//! printed is kept, line by line, with when it arrived.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proc::Reaped;

/// A running aiosmtpd; stopped and reaped when dropped.
pub struct Smtp {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    _proc: Reaped,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// python3 or aiosmtpd is missing.
    #[error("starting aiosmtpd (pip install aiosmtpd): {0}")]
    Spawn(#[from] std::io::Error),
    /// It started but never listened.
    #[error("aiosmtpd: {0}")]
    NotListening(#[from] crate::wait::Timeout),
    /// It exited at once (most likely: the module is not installed).
    #[error("aiosmtpd exited with {0} before listening: is it installed (pip install aiosmtpd)?")]
    Exited(std::process::ExitStatus),
}

impl Smtp {
    /// Start aiosmtpd on `port` and wait until it accepts connections.
    pub async fn start(port: u16) -> Result<Self, SmtpError> {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Debugging",
                "-l",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take();
        let mut proc = Reaped(child);
        let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let l = lines.clone();
        if let Some(out) = out {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    l.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), line));
                }
            });
        }
        let up = crate::wait::within(
            "aiosmtpd",
            Duration::from_secs(10),
            Duration::from_millis(20),
            async || {
                if let Ok(Some(status)) = proc.0.try_wait() {
                    return Some(Err(status));
                }
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| Ok(()))
            },
        )
        .await?;
        up.map_err(SmtpError::Exited)?;
        Ok(Self {
            port,
            lines,
            _proc: proc,
        })
    }

    /// Everything received so far, one printed line a line.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (_, l) in lines.iter() {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// When the first message whose subject holds `want` arrived.
    pub fn got(&self, want: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, l)| {
                l.strip_prefix("Subject: ")
                    .is_some_and(|s| s.contains(want))
            })
            .map(|(t, _)| *t)
    }
}
