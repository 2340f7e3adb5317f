//! `keel package deb`: a Debian package of this very binary (no second
//! build: the package holds the `keel` that runs the command, and the
//! lean `keel-agent` built beside it, which the agent's unit runs), with
//! the agent's and the collector's systemd units, their commented default
//! configs (conffiles: an upgrade keeps what the user changed), and
//! maintainer scripts that work with or without systemd running (a
//! container, a chroot). `dpkg-deb` builds it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keel_core::config::Validate as _;

use crate::systemd::unit;

/// `keel package …`.
#[derive(Subcommand)]
pub enum PackageCommand {
    /// Build a .deb of this binary, its systemd units and default configs.
    Deb(DebArgs),
}

/// `keel package deb`.
#[derive(Args)]
pub struct DebArgs {
    /// Where the .deb goes.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// The package's version (default: this binary's).
    #[arg(long)]
    version: Option<String>,
    /// dpkg-deb's compression: xz (smallest), gzip, zstd or none (fastest).
    #[arg(long, default_value = "xz")]
    compression: String,
}

/// Run `keel package …`.
pub fn run(command: PackageCommand) -> anyhow::Result<()> {
    match command {
        PackageCommand::Deb(args) => {
            let deb = build_deb(&args)?;
            println!("{}", deb.display());
            Ok(())
        }
    }
}

/// Where the agent's buffer and the collector's data live.
const AGENT_DATA: &str = "/var/lib/keel-agent";
const COLLECTOR_DATA: &str = "/var/lib/keel-collector";

/// The collector's default config: what a host needs to change, with the
/// full reference beside it.
fn collector_config() -> String {
    format!(
        r#"# The Keel collector, as the keel-collector service runs it:
#   systemctl enable --now keel-collector
# Every option, with its default and meaning: /usr/share/doc/keel/keel.example.yaml
collector:
  data_dir: {COLLECTOR_DATA}  # metrics/, logs/, traces/, state.db
  host: 127.0.0.1             # others' reach needs auth.login, tls and auth.senders
                              #   (or insecure: true)
  otlp_http_port: 4318        # agents and OpenTelemetry SDKs send here
  otlp_grpc_port: 4317
  api_port: 7070              # Prometheus' API, Alertmanager's API v2, the dashboard (/ui/)
  retention: 15days           # metric blocks older than this are deleted
  log_retention: 7days
  # rules:
  #   files: [/etc/keel/rules]  # Prometheus rule files (with Keel's severity)
  # notify:
  #   email: {{smtp_host: mail.example.com, to: [oncall@example.com]}}
  #   alertmanagers: [http://127.0.0.1:9093]
"#
    )
}

const POSTINST: &str = r#"#!/bin/sh
# keel postinst: the keel user; its configs readable by it alone (they may
# hold SMTP and webhook secrets); where systemd runs, the agent enabled
# and started on a first install, and both services restarted (if they
# run) on an upgrade.
set -e
if [ "$1" = configure ]; then
    getent group keel >/dev/null || groupadd --system keel
    if ! getent passwd keel >/dev/null; then
        useradd --system --gid keel --home-dir /var/lib/keel --no-create-home \
            --shell /usr/sbin/nologin keel
    fi
    for f in /etc/keel/agent.yaml /etc/keel/collector.yaml; do
        if [ -f "$f" ]; then
            chown root:keel "$f"
            chmod 0640 "$f"
        fi
    done
    for d in /var/lib/keel-agent /var/lib/keel-collector; do
        mkdir -p "$d"
        chown keel:keel "$d"
        chmod 0750 "$d"
    done
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
        if [ -z "$2" ]; then
            systemctl enable keel-agent.service >/dev/null 2>&1 || true
            systemctl start keel-agent.service >/dev/null 2>&1 || true
        else
            systemctl try-restart keel-agent.service keel-collector.service >/dev/null 2>&1 || true
        fi
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
# keel prerm: stop the services before their binary goes.
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop keel-agent.service keel-collector.service >/dev/null 2>&1 || true
    systemctl disable keel-agent.service keel-collector.service >/dev/null 2>&1 || true
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
# keel postrm: purge removes the data (the keel user stays, as Debian's
# policy has it); dpkg removes the conffiles.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/keel-agent /var/lib/keel-collector
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
"#;

/// Debian's name for this machine's architecture.
fn debian_arch() -> anyhow::Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => bail!("no Debian architecture known for {other}"),
    })
}

/// Write `text` at `root/path` (made with its parents), mode `mode`.
fn put(root: &Path, path: &str, text: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(path.trim_start_matches('/'));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// A config the binary must load as written (the checks `keel agent run`
/// and `keel collector` make).
fn check_loads(name: &str, text: &str) -> anyhow::Result<()> {
    let parsed: crate::config::KeelConfig = keel_core::config::parse_yaml(name, text)?;
    parsed.check(name)?;
    Ok(())
}

/// Stage the package's tree beside `args.out` and build it; the .deb's path.
fn build_deb(args: &DebArgs) -> anyhow::Result<PathBuf> {
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    if !version.starts_with(|c: char| c.is_ascii_digit())
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
    {
        bail!(
            "--version {version:?}: a Debian version starts with a digit and holds only A-Za-z0-9.+~-"
        );
    }
    if !["xz", "gzip", "zstd", "none"].contains(&args.compression.as_str()) {
        bail!(
            "--compression {:?}: xz, gzip, zstd or none",
            args.compression
        );
    }
    let arch = debian_arch()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let stage = tempfile::Builder::new()
        .prefix("keel-deb-")
        .tempdir_in(&args.out)
        .context("a staging directory beside the package")?;
    let root = stage.path();
    let binary = std::env::current_exe().context("where is this keel binary?")?;
    // The lean agent binary is built beside this one (`cargo build` makes
    // both).
    let agent_binary = binary.with_file_name("keel-agent");
    if !agent_binary.exists() {
        bail!(
            "{} is missing: build both binaries (cargo build --release builds keel and keel-agent)",
            agent_binary.display()
        );
    }
    std::fs::create_dir_all(root.join("usr/bin"))?;
    for (from, name) in [(&binary, "keel"), (&agent_binary, "keel-agent")] {
        let bin = root.join("usr/bin").join(name);
        std::fs::copy(from, &bin).with_context(|| format!("copy {}", from.display()))?;
        // Debug sections are most of a build's size; the package goes
        // without (a missing strip leaves them).
        let _ = std::process::Command::new("strip")
            .arg("--strip-debug")
            .arg(&bin)
            .status();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    }
    let agent_yaml =
        crate::agent_cmd::default_config("http://127.0.0.1:4318", Path::new(AGENT_DATA));
    check_loads("/etc/keel/agent.yaml", &agent_yaml)?;
    let collector_yaml = collector_config();
    check_loads("/etc/keel/collector.yaml", &collector_yaml)?;
    put(root, "/etc/keel/agent.yaml", agent_yaml.as_bytes(), 0o644)?;
    put(
        root,
        "/etc/keel/collector.yaml",
        collector_yaml.as_bytes(),
        0o644,
    )?;
    put(
        root,
        "/lib/systemd/system/keel-agent.service",
        unit(
            crate::systemd::AGENT_UNIT,
            "/usr/bin/keel-agent",
            "/etc/keel/agent.yaml",
            "run",
            Some("keel-agent"),
        )
        .as_bytes(),
        0o644,
    )?;
    put(
        root,
        "/lib/systemd/system/keel-collector.service",
        unit(
            "Keel collector: metrics, logs and traces; rules, alerts and the dashboard",
            "/usr/bin/keel",
            "/etc/keel/collector.yaml",
            "collector",
            Some("keel-collector"),
        )
        .as_bytes(),
        0o644,
    )?;
    put(
        root,
        "/usr/share/doc/keel/keel.example.yaml",
        include_bytes!("../../keel.example.yaml"),
        0o644,
    )?;
    put(
        root,
        "/usr/share/doc/keel/copyright",
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: keel\n\nFiles: *\nLicense: {}\n",
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;
    // Directories as dpkg expects them, whatever the builder's umask.
    dirs_0755(root)?;
    let installed_kb = dir_kb(root)?;
    let libc = libc_version();
    let control = format!(
        "Package: keel\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Keel developers <keel@example.com>\nInstalled-Size: {installed_kb}\nDepends: libc6 (>= {libc}), libgcc-s1, passwd\nSection: admin\nPriority: optional\nHomepage: https://example.com/keel\nDescription: observability and autoscaling control plane (agent and collector)\n Keel's agent collects a host's metrics under node_exporter's names, scrapes\n Prometheus targets and tails logs, buffering on disk; its collector stores\n metrics, logs and traces, answers Prometheus' and Alertmanager's APIs,\n evaluates alert rules and serves the dashboard. This package holds the keel\n and keel-agent binaries and systemd units for both (the agent starts on\n install).\n"
    );
    put(root, "/DEBIAN/control", control.as_bytes(), 0o644)?;
    put(
        root,
        "/DEBIAN/conffiles",
        b"/etc/keel/agent.yaml\n/etc/keel/collector.yaml\n",
        0o644,
    )?;
    put(root, "/DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put(root, "/DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put(root, "/DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    let deb = args.out.join(format!("keel_{version}_{arch}.deb"));
    let out = std::process::Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg(format!("-Z{}", args.compression))
        .arg("--build")
        .arg(root)
        .arg(&deb)
        .output()
        .context("dpkg-deb (Debian's dpkg package) must be installed")?;
    if !out.status.success() {
        bail!(
            "dpkg-deb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(deb)
}

/// The glibc this binary was built against: the builder's (the binary
/// needs no newer one; an older one may lack its symbols).
fn libc_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "libc6"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            // `2.36-9+deb12u7`: the upstream part.
            let up = v.split('-').next()?.to_owned();
            up.chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                .then_some(up)
        })
        .unwrap_or_else(|| "2.36".to_owned())
}

/// Make every directory under `dir` (and it) mode 0755.
fn dirs_0755(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))?;
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            dirs_0755(&e.path())?;
        }
    }
    Ok(())
}

/// Kilobytes of the files under `dir` (the control file's Installed-Size).
fn dir_kb(dir: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        bytes += if m.is_dir() {
            dir_kb(&e.path())? * 1024
        } else {
            m.len()
        };
    }
    Ok(bytes.div_ceil(1024))
}
