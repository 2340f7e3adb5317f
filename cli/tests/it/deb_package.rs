//! `keel package deb` as a user installs it: the package built from the
//! binary these tests run (no second build), installed with `dpkg -i`
//! (its postinst without systemd running, as in a container), the agent
//! run from it as the package's `keel` user and `keel agent status` read
//! from it; an upgrade keeps a config the user changed; a purge removes
//! the binary, the units, the configs and the data.
//!
//! Gated on `KEEL_TEST_DEB` (it installs into this machine's /usr and
//! /etc, as root; `.ci/run` sets it on its throwaway machine).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `cmd args…`: its output, or a panic naming it and its stderr.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build the package at `version` into `out`; its path.
fn build(out: &Path, version: &str) -> String {
    run(
        env!("CARGO_BIN_EXE_keel"),
        &[
            "package",
            "deb",
            "--out",
            &out.display().to_string(),
            "--version",
            version,
            "--compression",
            "none",
        ],
    )
    .trim()
    .to_owned()
}

/// Purges the package whatever happens.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "keel"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_runs_the_agent_upgrades_keeping_config_and_purges() {
    if std::env::var_os("KEEL_TEST_DEB").is_none() {
        eprintln!(
            "skipped: set KEEL_TEST_DEB=1 on a throwaway root machine with dpkg (.ci/run does)"
        );
        return;
    }
    let _turn = crate::common::heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = build(dir.path(), "0.0.1~test1");
    assert!(
        first.ends_with("keel_0.0.1~test1_amd64.deb") || first.contains("keel_0.0.1~test1_"),
        "{first}"
    );
    let _purge = Purge;
    run("dpkg", &["-i", &first]);
    for f in [
        "/usr/bin/keel",
        "/usr/bin/keel-agent",
        "/etc/keel/agent.yaml",
        "/etc/keel/collector.yaml",
        "/lib/systemd/system/keel-agent.service",
        "/lib/systemd/system/keel-collector.service",
        "/usr/share/doc/keel/keel.example.yaml",
    ] {
        assert!(Path::new(f).exists(), "{f} is not installed");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/keel-agent.service").expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/keel-agent --config /etc/keel/agent.yaml run")
            && unit.contains("User=keel"),
        "{unit}"
    );
    // The postinst made the user and its data directory; the configs
    // (which may hold secrets) are the keel group's to read, no one else's.
    assert!(run("getent", &["passwd", "keel"]).starts_with("keel:"));
    assert_eq!(
        run("stat", &["-c", "%U %a", "/var/lib/keel-agent"]).trim(),
        "keel 750"
    );
    assert_eq!(
        run("stat", &["-c", "%U:%G %a", "/etc/keel/collector.yaml"]).trim(),
        "root:keel 640"
    );
    assert_eq!(run("stat", &["-c", "%a", "/usr/bin/keel"]).trim(), "755");
    // Both shipped configs load as the installed binary reads them.
    for c in ["/etc/keel/agent.yaml", "/etc/keel/collector.yaml"] {
        run("/usr/bin/keel", &["--config", c, "config"]);
    }

    // The agent from the package, as its unit runs it (keel-agent as the
    // keel user), and `keel agent status` from the package.
    let port = keel_testkit::free_port().expect("port");
    let listen = format!("127.0.0.1:{port}");
    // Its OTLP receiver on a free port too (4319 may be another test's).
    let receiver = format!("127.0.0.1:{}", keel_testkit::free_port().expect("port"));
    let agent = Command::new("runuser")
        .args([
            "-u",
            "keel",
            "--",
            "/usr/bin/keel-agent",
            "--config",
            "/etc/keel/agent.yaml",
        ])
        .args(["run", "--listen", &listen])
        .env("KEEL_AGENT__OTLP_RECEIVER", &receiver)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("runuser");
    let agent = keel_testkit::Reaped(agent);
    let url = format!("http://{listen}");
    let status = keel_testkit::wait::until(
        "keel agent status answers",
        Duration::from_secs(30),
        async || {
            let out = Command::new("/usr/bin/keel")
                .args(["agent", "status", "--url", &url, "--json"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert!(status.is_object(), "{status}");
    drop(agent);
    assert!(
        std::fs::read_dir("/var/lib/keel-agent")
            .expect("agent data")
            .next()
            .is_some(),
        "the agent kept its buffer in its data directory"
    );

    // An upgrade keeps the config the user changed.
    let mut agent_yaml = std::fs::read_to_string("/etc/keel/agent.yaml").expect("config");
    agent_yaml.push_str("# changed by the user\n");
    std::fs::write("/etc/keel/agent.yaml", &agent_yaml).expect("write");
    let second = build(dir.path(), "0.0.1~test2");
    run("dpkg", &["-i", &second]);
    assert!(
        run("dpkg-query", &["-W", "-f=${Version}", "keel"]).contains("0.0.1~test2"),
        "upgraded"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/keel/agent.yaml").expect("config"),
        agent_yaml,
        "the user's change survived the upgrade"
    );

    // Purged: nothing of it is left.
    run("dpkg", &["--purge", "keel"]);
    for f in [
        "/usr/bin/keel",
        "/usr/bin/keel-agent",
        "/etc/keel/agent.yaml",
        "/lib/systemd/system/keel-agent.service",
        "/var/lib/keel-agent",
    ] {
        assert!(!Path::new(f).exists(), "{f} is left after the purge");
    }
}
