//! The systemd units Keel writes: one generator for the package's and
//! `keel agent install`'s, so both run the agent the same way.

/// A systemd unit running `binary --config config args`: as the `keel`
/// user with its data in `/var/lib/<state>` (made by systemd, private to
/// it) when `state` is given, else as root (`keel agent install`, whose
/// config names its data directory).
pub(crate) fn unit(
    description: &str,
    binary: &str,
    config: &str,
    args: &str,
    state: Option<&str>,
) -> String {
    let service = match state {
        Some(state) => format!(
            "User=keel\nGroup=keel\nStateDirectory={state}\nStateDirectoryMode=0750\nUMask=0027\nWorkingDirectory=/var/lib/{state}\n"
        ),
        None => String::new(),
    };
    format!(
        "[Unit]\nDescription={description}\nDocumentation=file:///usr/share/doc/keel/keel.example.yaml\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\n{service}ExecStart={binary} --config {config} {args}\nRestart=always\nRestartSec=2\n# The agent's buffer survives restarts; SIGTERM stops cleanly.\nKillSignal=SIGTERM\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// The agent's unit's description, the same from the package and from
/// `keel agent install`.
pub(crate) const AGENT_UNIT: &str =
    "Keel agent: host metrics, scrapes and logs, buffered and shipped to the collector";
