//! Actions on a PostgreSQL member's host: the controller never touches a
//! data directory itself. Either the Keel agent on that host runs them
//! (its `failover` role: `POST {agent}/api/v1/failover/{action}`), or a
//! command the user gives (`exec`), run as `exec... ACTION [CONNINFO]` with
//! `KEEL_MEMBER` set; exit status 0 is success, stderr the error.
//!
//! Actions: `stop` (fast shutdown: the fence), `start` (as it was),
//! `follow` (a running standby gets a new `primary_conninfo` and reloads),
//! `rejoin` (stop if running, `pg_rewind` from the primary, start as a
//! standby following it).

use std::time::Duration;

use serde::Deserialize;

use crate::fencing::Fencing;

/// Where a member's host actions go.
#[derive(Debug, Clone)]
pub enum Host {
    /// The Keel agent's failover role.
    Agent {
        /// Its base URL.
        url: String,
        /// The HTTP client.
        http: reqwest::Client,
        /// The authority actions are asked under (its token sent).
        fencing: Fencing,
    },
    /// A command.
    Exec {
        /// Program and leading arguments.
        argv: Vec<String>,
        /// The member it acts on (`KEEL_MEMBER`).
        member: String,
        /// The authority actions are asked under (`KEEL_FENCING_TOKEN`).
        fencing: Fencing,
    },
}

/// What an agent says of its PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
pub struct HostState {
    /// The member the agent's role is for.
    #[serde(default)]
    pub member: String,
    /// Whether a postmaster runs.
    pub running: bool,
    /// `primary`, `replica`, `starting` or `stopped`.
    pub role: String,
}

/// What a finished action reports.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Done {
    /// After `stop`: the shutdown checkpoint's lsn (from `pg_controldata`).
    #[serde(default)]
    pub checkpoint_lsn: Option<u64>,
    /// What was done, in a line.
    #[serde(default)]
    pub detail: String,
}

impl Host {
    /// Run `action` (with the `primary_conninfo` to follow, for `follow`
    /// and `rejoin`) within `timeout`.
    pub async fn act(
        &self,
        action: &str,
        conninfo: Option<&str>,
        timeout: Duration,
    ) -> Result<Done, String> {
        match self {
            Host::Agent { url, http, fencing } => {
                let req = http.post(format!("{url}/api/v1/failover/{action}"));
                let r = fencing
                    .stamp(req)
                    .map_err(|e| format!("{action} at {url}: {e}"))?
                    .json(&serde_json::json!({ "primary_conninfo": conninfo }))
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(|e| format!("the agent at {url}: {}", super::driver::why(&e)))?;
                let status = r.status();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(format!(
                        "the agent at {url}: {action}: {}",
                        v["error"]
                            .as_str()
                            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned)
                    ));
                }
                Ok(serde_json::from_value(v).unwrap_or_default())
            }
            Host::Exec {
                argv,
                member,
                fencing,
            } => {
                let Some((program, args)) = argv.split_first() else {
                    return Err("exec names no command".into());
                };
                let token = fencing
                    .token()
                    .map_err(|e| format!("{program} {action}: {e}"))?;
                let mut cmd = tokio::process::Command::new(program);
                match token {
                    Some((lease, token)) => {
                        cmd.env("KEEL_FENCING_LEASE", lease)
                            .env("KEEL_FENCING_TOKEN", token.to_string());
                    }
                    None => {
                        cmd.env_remove("KEEL_FENCING_LEASE")
                            .env_remove("KEEL_FENCING_TOKEN");
                    }
                }
                cmd.args(args)
                    .arg(action)
                    .args(conninfo)
                    .env("KEEL_MEMBER", member)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                let out = tokio::time::timeout(timeout, cmd.output())
                    .await
                    .map_err(|_| format!("{program} {action}: no answer within {timeout:?}"))?
                    .map_err(|e| format!("{program} {action}: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{program} {action}: {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(serde_json::from_slice(&out.stdout).unwrap_or_default())
            }
        }
    }

    /// Whether PostgreSQL runs there, as the agent sees it (an exec hook
    /// cannot say).
    pub async fn state(&self, timeout: Duration) -> Result<HostState, String> {
        match self {
            Host::Agent { url, http, .. } => {
                let r = http
                    .get(format!("{url}/api/v1/failover/state"))
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(|e| format!("the agent at {url}: {}", super::driver::why(&e)))?;
                if !r.status().is_success() {
                    return Err(format!("the agent at {url}: HTTP {}", r.status().as_u16()));
                }
                r.json()
                    .await
                    .map_err(|e| format!("the agent at {url}: {e}"))
            }
            Host::Exec { .. } => Err("an exec hook reports no state".into()),
        }
    }
}
