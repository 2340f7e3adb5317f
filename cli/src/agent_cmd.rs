//! `keel agent run` and `keel agent status`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use keel_agent::host::Exclusions;
use keel_core::clock::{SharedClock, SystemClock};
use keel_core::config::Validate;

/// What `keel agent` does.
#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Run the agent: scrape, buffer on disk, ship to the collector.
    Run(RunArgs),
    /// Show the running agent's targets, buffer and send lag.
    Status(StatusArgs),
    /// Write a systemd unit and a commented config, ready to enable.
    Install(InstallArgs),
    /// Remove the systemd unit (the config and the buffer stay unless --purge).
    Uninstall(UninstallArgs),
}

/// Flags of `keel agent install`.
#[derive(clap::Args)]
pub struct InstallArgs {
    /// Where the config goes (left alone if it exists).
    #[arg(long, default_value = "/etc/keel/agent.yaml")]
    config_file: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system/keel-agent.service")]
    unit_file: PathBuf,
    /// The collector's OTLP/HTTP base URL written into the config.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    collector: String,
    /// Where the agent keeps its buffer.
    #[arg(long, default_value = "/var/lib/keel-agent")]
    data_dir: PathBuf,
}

/// Flags of `keel agent uninstall`.
#[derive(clap::Args)]
pub struct UninstallArgs {
    /// The unit to remove.
    #[arg(long, default_value = "/etc/systemd/system/keel-agent.service")]
    unit_file: PathBuf,
    /// Also remove this config file.
    #[arg(long)]
    purge: Option<PathBuf>,
}

/// Flags of `keel agent run` (they override the config file and environment).
#[derive(clap::Args)]
pub struct RunArgs {
    /// The collector's OTLP/HTTP base URL; repeat it to ship every
    /// batch to each of a highly available pair.
    #[arg(long)]
    collector: Vec<String>,
    /// Where the disk buffer lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the agent's /metrics and /status (port 0: a free one).
    #[arg(long)]
    listen: Option<String>,
}

/// Flags of `keel agent status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The agent's address (its `listen` setting).
    #[arg(long, default_value = "http://127.0.0.1:9465")]
    url: String,
    /// Print the JSON answer as is.
    #[arg(long)]
    json: bool,
}

pub fn run(config_path: Option<&Path>, cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Run(args) => run_agent(config_path, args),
        AgentCommand::Status(args) => status(args),
        AgentCommand::Install(args) => install(args),
        AgentCommand::Uninstall(args) => uninstall(args),
    }
}

/// The config `keel agent install` writes: the agent section with every
/// option, commented.
pub(crate) fn default_config(collector: &str, data_dir: &Path) -> String {
    format!(
        r#"# Keel agent configuration (`keel agent install` and the keel package write it).
# Every option is shown with its default; unknown keys are errors.
# Check it with: keel --config THIS_FILE config
agent:
  collector: {collector}   # the collector's OTLP/HTTP base URL
  collector_token_file: ""     # a file holding the sender token the collector requires
                               #   (collector.auth.senders); "": none
  hostname: ""                 # host.name on everything sent; "": this machine's hostname
  data_dir: {data_dir}         # the disk buffer of unsent batches
  listen: 127.0.0.1:9465       # the agent's /metrics and /status (keel agent status); another
                               #   machine's reach needs agent.tls or insecure: true
  insecure: false
  otlp_receiver: 127.0.0.1:4319  # apps on this host export OTLP/HTTP here ("": none)
  buffer:
    max_bytes: 268435456       # past this the oldest unsent batches are dropped, and counted
    fsync: false               # true: each batch synced to disk (survives power loss)
    metrics_reorder_window: 5m # a fresh metrics batch goes ahead of a backlog this much newer, at most
  retry:
    initial: 250ms             # first wait after a failed send, doubling, jittered
    max: 30s                   # longest wait (a 429/503 Retry-After may be longer)
    timeout: 10s               # one request may take this long
  host_metrics:                # this host under node_exporter's names (job="node")
    enabled: true
    interval: 10s
    # What is left out (regexes; node_exporter's *-exclude flags, Debian's defaults):
    mount_points_exclude: '{mounts}'
    fs_types_exclude: '{fs_types}'
    diskstats_device_exclude: '{disks}'
    netdev_device_exclude: '{netdev}'
  scrape: []
  # scrape:
  #   - job: node                        # the job label
  #     targets: [http://127.0.0.1:9100/metrics]
  #     interval: 10s
  #     timeout: 5s                      # at most the interval
  #     honor_labels: false              # true: keep the target's own job/instance
  #     labels: {{tier: web}}              # extra labels on every series
  #     file_sd: [/etc/keel/targets/*.json]  # Prometheus file_sd target groups, re-read
  #     refresh_interval: 5s             #   this often
  logs: []
  # logs:
  #   - path: /var/log/app/*.log         # a glob; files that appear later are picked up
  #     service: ""                      # "": the line's "service" field, else the file name
  #     multiline_start: '^\d{{4}}-'      # lines not matching join the record before
  #     metrics:                         # log-to-metrics: RED series from access lines
  #       - name: app_http               # app_http_requests_total{{code}}, app_http_errors_total,
  #                                      #   app_http_request_duration_seconds (a histogram)
  #         regex: '" (?P<status>\d{{3}}) \d+ (?P<duration>[0-9.]+)$'  # none: JSON fields
  #         filter: ""                   # a regex lines must match; none: every line
  #         status_field: status
  #         duration_field: duration     # none: no histogram
  #         duration_unit: s             # s, ms, us or ns
  #         error_status: 500            # a status at or above is an error
  #         labels: []                   # fields (low-cardinality) that become labels
  #         interval: 10s                # how often the series are sent
  log_poll_interval: 500ms             # how often files are checked
"#,
        data_dir = data_dir.display(),
        mounts = Exclusions::DEFAULT[0],
        fs_types = Exclusions::DEFAULT[1],
        disks = Exclusions::DEFAULT[2],
        netdev = Exclusions::DEFAULT[3],
    )
}

fn install(args: InstallArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("where is this keel binary?")?;
    for p in [&args.config_file, &args.unit_file] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
    }
    if args.config_file.exists() {
        println!("kept {} (it exists)", args.config_file.display());
    } else {
        let text = default_config(&args.collector, &args.data_dir);
        // What is written must load: the same checks as `keel agent run`.
        let parsed: crate::config::KeelConfig =
            keel_core::config::parse_yaml(&args.config_file.display().to_string(), &text)?;
        parsed.check(&args.config_file.display().to_string())?;
        std::fs::write(&args.config_file, text)
            .with_context(|| format!("write {}", args.config_file.display()))?;
        println!("wrote {}", args.config_file.display());
    }
    // The lean agent binary when it is beside this one, as the package's
    // unit runs it; else this binary's `agent run`.
    let lean = binary.with_file_name("keel-agent");
    let (exec, run) = if lean.exists() {
        (lean, "run")
    } else {
        (binary.clone(), "agent run")
    };
    let text = crate::systemd::unit(
        crate::systemd::AGENT_UNIT,
        &exec.display().to_string(),
        &args.config_file.display().to_string(),
        run,
        None,
    );
    std::fs::write(&args.unit_file, text)
        .with_context(|| format!("write {}", args.unit_file.display()))?;
    println!("wrote {}", args.unit_file.display());
    println!("next: systemctl daemon-reload && systemctl enable --now keel-agent");
    Ok(())
}

fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    match std::fs::remove_file(&args.unit_file) {
        Ok(()) => println!("removed {}", args.unit_file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} is not there", args.unit_file.display());
        }
        Err(e) => return Err(e).with_context(|| format!("remove {}", args.unit_file.display())),
    }
    if let Some(c) = args.purge {
        std::fs::remove_file(&c).with_context(|| format!("remove {}", c.display()))?;
        println!("removed {}", c.display());
    }
    println!("first, if it runs: systemctl disable --now keel-agent");
    Ok(())
}

fn run_agent(config_path: Option<&Path>, args: RunArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(config_path)?;
    let a = &mut config.agent;
    match args.collector.as_slice() {
        [] => {}
        [one] => {
            a.collector = one.clone();
            a.collectors.clear();
        }
        many => {
            a.collector = keel_agent::config::AgentConfig::default().collector;
            a.collectors = many.to_vec();
        }
    }
    if let Some(d) = args.data_dir {
        a.data_dir = d;
    }
    if let Some(l) = args.listen {
        a.listen = l;
    }
    config.check("command-line flags")?;
    let _ = keel_sampleapp::telemetry::init_stderr_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        let agent = keel_agent::run::Agent::start(config.agent.clone(), clock).await?;
        crate::up::say(&format!(
            "keel agent: status http://{}/status, metrics http://{}/metrics, shipping to {}",
            agent.addr,
            agent.addr,
            config.agent.collector_urls().join(" and ")
        ));
        keel_core::shutdown::shutdown_signal().await;
        agent.stop().await;
        anyhow::Ok(())
    })
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{}/status", args.url.trim_end_matches('/'));
    let text = runtime.block_on(async {
        let resp = reqwest::get(&url)
            .await
            .with_context(|| format!("{url}: is the agent running?"))?;
        anyhow::Ok(resp.text().await?)
    })?;
    if args.json {
        println!("{text}");
        return Ok(());
    }
    let s: keel_agent::run::Status =
        serde_json::from_str(&text).with_context(|| format!("{url}: not an agent status"))?;
    println!("host {}  →  {}", s.hostname, s.collector);
    // Each signal ships in its own lane: name the ones behind.
    let behind: Vec<String> = s
        .send_lag_seconds_by_signal
        .iter()
        .filter(|(_, lag)| **lag > 0.0)
        .map(|(signal, lag)| format!("{signal} {lag:.1} s"))
        .collect();
    println!(
        "buffer: {} batches, {} bytes; send lag {:.1} s{}; sent {} records; dropped {} records",
        s.buffered_batches,
        s.buffered_bytes,
        s.send_lag_seconds,
        if behind.is_empty() {
            String::new()
        } else {
            format!(" ({})", behind.join(", "))
        },
        s.sent_records,
        s.dropped_records
    );
    if s.lanes.len() > 1 {
        for l in &s.lanes {
            println!(
                "  → {}: {} batches behind, lag {:.1} s, sent {} records{}",
                l.collector,
                l.buffered_batches,
                l.send_lag_seconds,
                l.sent_records,
                l.last_send_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; last send failed: {e}"))
            );
        }
    } else if let Some(e) = &s.last_send_error {
        println!("last send failed: {e}");
    }
    println!(
        "{:<16} {:<4} {:>8} {:>10}  URL / error",
        "JOB", "UP", "SAMPLES", "LAST"
    );
    for t in &s.targets {
        let last = t
            .last_scrape_ago_seconds
            .map_or("never".to_owned(), |a| format!("{a:.1}s ago"));
        println!(
            "{:<16} {:<4} {:>8} {:>10}  {}{}",
            t.job,
            if t.up { "1" } else { "0" },
            t.samples,
            last,
            t.url,
            t.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
