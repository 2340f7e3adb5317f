//! Actuators: how the controller counts a target's instances and
//! changes the count. The count is always read back from the actuator,
//! never assumed: after a change the controller reads again and
//! believes only that.

use std::sync::Mutex;
use std::time::Duration;

use crate::fencing::Fencing;
use crate::policy::ActuatorConfig;

/// What an actuator reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Count {
    /// Instances wanted/present.
    pub replicas: u32,
    /// Their names, when the actuator knows them.
    pub instances: Vec<String>,
}

/// An actuator failure, with the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActuatorError {
    /// It could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It answered with an error.
    #[error("refused: {0}")]
    Refused(String),
    /// A command ran too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A command failed.
    #[error("{command} exited with {code}: {stderr}")]
    Exit {
        /// The command.
        command: String,
        /// Its exit code (-1: killed by a signal).
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },
    /// Its answer could not be read.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    /// This collector does not lead, so it does not act.
    #[error("{0}")]
    NotLeading(String),
}

/// One actuator.
pub enum Actuator {
    /// The sample app's supervisor.
    Supervisor {
        /// Base URL.
        url: String,
        /// HTTP client.
        http: reqwest::Client,
    },
    /// User commands.
    Exec {
        /// Prints the instances.
        read: Vec<String>,
        /// Changes the count.
        scale: Vec<String>,
        /// Longest a command may run.
        timeout: Duration,
    },
    /// Changes nothing but its own count.
    DryRun(Mutex<u32>),
    /// A simulation's (incident replay): reads and changes its model.
    Simulated(std::sync::Arc<dyn Simulated>),
}

/// An actuator simulated in-process, synchronous and infallible.
pub trait Simulated: Send + Sync {
    /// The count (and names) now.
    fn read(&self) -> Count;
    /// Ask for `n` instances.
    fn set(&self, n: u32);
}

impl Actuator {
    /// The actuator a policy names.
    pub fn new(c: &ActuatorConfig) -> Self {
        match c {
            ActuatorConfig::Supervisor {
                url,
                token,
                token_file,
            } => Actuator::Supervisor {
                url: url.trim_end_matches('/').to_owned(),
                http: supervisor_client(token.token_or_file(token_file, "token")),
            },
            ActuatorConfig::Exec {
                read,
                scale,
                timeout,
            } => Actuator::Exec {
                read: read.clone(),
                scale: scale.clone(),
                timeout: *timeout,
            },
            ActuatorConfig::DryRun { start } => Actuator::DryRun(Mutex::new(*start)),
        }
    }

    /// Read the current count.
    pub async fn read(&self) -> Result<Count, ActuatorError> {
        match self {
            Actuator::Supervisor { url, http } => {
                let r = http
                    .get(format!("{url}/api/v1/scale/web"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| ActuatorError::Unreachable(e.to_string()))?;
                supervisor_answer(r).await
            }
            Actuator::Exec { read, timeout, .. } => {
                let out = run(read, None, None, *timeout).await?;
                parse_count(&out)
            }
            Actuator::Simulated(s) => Ok(s.read()),
            Actuator::DryRun(n) => Ok(Count {
                replicas: *n.lock().unwrap_or_else(|e| e.into_inner()),
                instances: Vec::new(),
            }),
        }
    }

    /// Ask for `n` instances (then read back with [`read`](Self::read))
    /// under `fencing`'s authority: refused here when this collector does
    /// not lead; the supervisor gets the fencing token and refuses an
    /// old one, a command gets it in `KEEL_FENCING_LEASE` and
    /// `KEEL_FENCING_TOKEN`.
    pub async fn set(&self, n: u32, fencing: &Fencing) -> Result<(), ActuatorError> {
        let token = fencing
            .token()
            .map_err(|e| ActuatorError::NotLeading(e.to_string()))?;
        match self {
            Actuator::Supervisor { url, http } => {
                // The token read above: the one checked is the one sent.
                let req = http.put(format!("{url}/api/v1/scale/web"));
                let r = crate::fencing::with_token(req, token)
                    .json(&serde_json::json!({"replicas": n}))
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .map_err(|e| ActuatorError::Unreachable(e.to_string()))?;
                supervisor_answer(r).await.map(|_| ())
            }
            Actuator::Exec { scale, timeout, .. } => {
                run(scale, Some(n), token, *timeout).await.map(|_| ())
            }
            Actuator::Simulated(s) => {
                s.set(n);
                Ok(())
            }
            Actuator::DryRun(c) => {
                *c.lock().unwrap_or_else(|e| e.into_inner()) = n;
                Ok(())
            }
        }
    }
}

/// A client sending the supervisor's token (validated at config load: a
/// file gone since is logged here, and the supervisor's 401 then names
/// the token on every call).
pub(crate) fn supervisor_client(token: Result<Option<String>, String>) -> reqwest::Client {
    let headers = token
        .and_then(|t| keel_tls::bearer(t.as_deref()))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the supervisor's token");
            Default::default()
        });
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

async fn supervisor_answer(r: reqwest::Response) -> Result<Count, ActuatorError> {
    let status = r.status();
    let body = r
        .text()
        .await
        .map_err(|e| ActuatorError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(ActuatorError::Refused(format!(
            "HTTP {status}: {}",
            body.trim()
        )));
    }
    #[derive(serde::Deserialize)]
    struct Scale {
        running: u32,
        instances: Vec<String>,
    }
    let s: Scale =
        serde_json::from_str(&body).map_err(|e| ActuatorError::Unreadable(e.to_string()))?;
    Ok(Count {
        replicas: s.running,
        instances: s.instances,
    })
}

/// A count, or instance names one a line.
fn parse_count(out: &str) -> Result<Count, ActuatorError> {
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let [one] = lines.as_slice()
        && let Ok(n) = one.parse::<u32>()
    {
        return Ok(Count {
            replicas: n,
            instances: Vec::new(),
        });
    }
    if lines.iter().any(|l| l.contains(char::is_whitespace)) {
        return Err(ActuatorError::Unreadable(format!(
            "expected a count or one instance name a line, got {:?}",
            out.chars().take(200).collect::<String>()
        )));
    }
    Ok(Count {
        replicas: lines.len() as u32,
        instances: lines.iter().map(|l| (*l).to_owned()).collect(),
    })
}

/// Run `argv` (with `n` in `KEEL_REPLICAS` and as the last argument,
/// and the fencing lease and token when given); its stdout.
async fn run(
    argv: &[String],
    n: Option<u32>,
    token: Option<(String, i64)>,
    timeout: Duration,
) -> Result<String, ActuatorError> {
    let Some((cmd, args)) = argv.split_first() else {
        return Err(ActuatorError::Refused("no command".into()));
    };
    let mut c = tokio::process::Command::new(cmd);
    c.args(args).kill_on_drop(true);
    if let Some(n) = n {
        c.arg(n.to_string()).env("KEEL_REPLICAS", n.to_string());
    }
    // Alone, none: not even one this process inherited.
    match token {
        Some((lease, token)) => {
            c.env("KEEL_FENCING_LEASE", lease)
                .env("KEEL_FENCING_TOKEN", token.to_string());
        }
        None => {
            c.env_remove("KEEL_FENCING_LEASE")
                .env_remove("KEEL_FENCING_TOKEN");
        }
    }
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ActuatorError::Unreachable(format!("{cmd}: {e}")))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ActuatorError::Timeout(timeout))?
        .map_err(|e| ActuatorError::Unreachable(format!("{cmd}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .trim()
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(ActuatorError::Exit {
            command: argv.join(" "),
            code: out.status.code().unwrap_or(-1),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
