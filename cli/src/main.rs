//! keel: the single binary that runs every part of Keel.
//!
//! Subcommands:
//! - `keel up`: start the sample app (and, as they are built, the agent,
//!   collector and controller) and print where everything listens;
//! - `keel load`: drive the sample app open-loop from a load profile;
//! - `keel collector`, `keel query`, `keel logs`: the collector, PromQL and log search from the shell;
//! - `keel bench sampleapp`: benchmarks against same-run baselines;
//! - `keel sampleapp run --spec FILE`: one sample-app process (used by the
//!   supervisor; hidden).

mod agent_cmd;
mod api_client;
mod bench;
mod bench_agent;
mod bench_alertmanager;
mod bench_alerts;
mod bench_autoscale;
mod bench_autoscale_live;
mod bench_crash;
mod bench_dashboard;
mod bench_failover;
mod bench_failover_pg;
mod bench_forward;
mod bench_fuzz;
mod bench_ha;
mod bench_histograms;
mod bench_host;
mod bench_logs;
mod bench_metrics;
mod bench_replay;
mod bench_rules;
mod bench_rules_peers;
mod bench_scrape;
mod bench_security;
mod collector_cmd;
mod config;
mod events_cmd;
mod failover_cmd;
mod incident_cmd;
mod load_cmd;
mod logs_cmd;
mod package_cmd;
mod people_cmd;
mod rules_cmd;
mod scenario;
mod silence_cmd;
mod status_cmd;
mod systemd;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the collector's ingest and query paths allocate many small
/// objects; measured in `keel bench metrics` against the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: observability and autoscaling control plane"
)]
struct Cli {
    /// Configuration file (default: ./keel.yaml, then /etc/keel/keel.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the sample app and print where everything listens; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Drive the sample app open-loop from a load profile.
    Load(load_cmd::LoadArgs),
    /// Run the collector: OTLP ingest, metric store, PromQL API.
    Collector(collector_cmd::CollectorArgs),
    /// The host agent: `keel agent run`, `keel agent status`.
    Agent {
        #[command(subcommand)]
        command: agent_cmd::AgentCommand,
    },
    /// Evaluate a PromQL expression against a collector and print a table.
    Query(collector_cmd::QueryArgs),
    /// Search the collector's logs (tantivy query syntax); --follow streams new matches.
    Logs(logs_cmd::LogsArgs),
    /// Alert and recording rules: `keel rules check`, `keel rules test`.
    Rules {
        #[command(subcommand)]
        command: rules_cmd::RulesCommand,
    },
    /// Silences: `keel silence add|list|expire`.
    Silence {
        #[command(subcommand)]
        command: silence_cmd::SilenceCommand,
    },
    /// Acknowledge firing alerts (no more repeats until they resolve).
    Ack(silence_cmd::AckArgs),
    /// People who log in: `keel user add|list|remove|passwd`.
    User {
        #[command(subcommand)]
        command: people_cmd::UserCommand,
    },
    /// API tokens: `keel token create|list|revoke`.
    Token {
        #[command(subcommand)]
        command: people_cmd::TokenCommand,
    },
    /// The controller's events: each autoscaling decision, explained.
    Events(events_cmd::EventsArgs),
    /// One collector at a glance: whether it leads (collector.ha), its store.
    Status(status_cmd::StatusArgs),
    /// Database failover: `keel failover status`, `keel failover [--to MEMBER]` (now).
    Failover(failover_cmd::FailoverArgs),
    /// A planned switchover of the database's primary that loses nothing.
    Switchover(failover_cmd::Target),
    /// Incident bundles: `keel incident record|list|score`.
    Incident {
        #[command(subcommand)]
        command: incident_cmd::IncidentCommand,
    },
    /// Rehearsed incidents: `keel scenario run|replay|list` (a load plus
    /// timed faults against `keel up`, recorded and checked).
    Scenario {
        #[command(subcommand)]
        command: scenario::ScenarioCommand,
    },
    /// Replay an incident bundle through the rules, routing and
    /// autoscaler (--rules/--policy: a what-if diff; --assert: checks).
    Replay(incident_cmd::ReplayArgs),
    /// Backfill history from an OpenMetrics file (the collector must be stopped).
    Import(collector_cmd::ImportArgs),
    /// Check a configuration file and print the effective configuration.
    Config,
    /// Packages of this binary: `keel package deb`.
    Package {
        #[command(subcommand)]
        command: package_cmd::PackageCommand,
    },
    /// Benchmarks that compare against a baseline in the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Internal: run one sample-app process.
    #[command(hide = true)]
    Sampleapp {
        #[command(subcommand)]
        command: SampleappCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The lb against one web instance directly, and the load generator's
    /// accuracy and ceiling.
    Sampleapp(bench::BenchArgs),
    /// The collector against the real Prometheus: ingest, memory, bytes
    /// per sample, query latency.
    Metrics(bench_metrics::MetricsBenchArgs),
    /// The collector's log and span stores against in-process indexing of
    /// the same lines: throughput per core, freshness, search latency, size.
    Logs(bench_logs::LogsBenchArgs),
    /// The agent's CPU and memory at a steady load, and its ceiling from
    /// file to collector acknowledgement.
    Agent(bench_agent::AgentBenchArgs),
    /// The agent's host metrics and scraping beside node_exporter and
    /// vmagent: CPU and memory of each, measured alone in the same run.
    Host(bench_host::HostBenchArgs),
    /// One evaluation of many alerting rules over many series.
    Rules(bench_rules::RulesBenchArgs),
    /// Alert latency: a threshold crossed to the page at a real SMTP server.
    Alerts(bench_alerts::AlertsBenchArgs),
    /// Fixed, reactive (HPA) and Keel capacity on one diurnal-plus-spike load (simulated time).
    Autoscale(bench_autoscale::AutoscaleBenchArgs),
    /// Replay speed of a recorded hour of `keel up` under load, its bundle's
    /// size against the raw data, and the time to record it.
    Replay(bench_replay::ReplayBenchArgs),
    /// The sample app's database failed over by the controller, kill after
    /// kill, under a writing client: detection, promotion, repoint, first
    /// write, acknowledged writes lost.
    Failover(bench_failover::FailoverBenchArgs),
    /// The overview page with days of data in headless Chromium: paint
    /// and draw times, bytes, the collector's CPU per load.
    Dashboard(bench_dashboard::DashboardBenchArgs),
    /// Every decoder and parser under structure-aware fuzzing: cases per
    /// second per target, failures minimized.
    Fuzz(bench_fuzz::FuzzBenchArgs),
    /// A collector SIGKILLed again and again at random moments under
    /// metrics, logs and spans ingest: acknowledged records lost.
    Crash(bench_crash::CrashBenchArgs),
    /// What TLS and authentication cost: ingest throughput and query p99
    /// of a collector with both on against a plain one, same run.
    Security(bench_security::SecurityBenchArgs),
    /// A pair of collectors on PostgreSQL (`collector.ha`): the leader
    /// SIGKILLed again and again, how fast the follower takes over.
    Ha(bench_ha::HaBenchArgs),
    /// Forwarding to a real VictoriaMetrics: throughput beside sending
    /// straight to it, and the catch-up after an outage (#26).
    Forward(bench_forward::ForwardBenchArgs),
    /// Alerts a second Keel and Prometheus each send to a real
    /// Alertmanager before either side falls behind.
    Alertmanager(bench_alertmanager::AlertmanagerBenchArgs),
    /// Native histograms against the same data as classic `le` buckets:
    /// bytes per sample and histogram_quantile time.
    Histograms(bench_histograms::HistogramsBenchArgs),
}

#[derive(Subcommand)]
enum SampleappCommand {
    /// Run the process described by a spec file.
    Run {
        /// The spec (JSON) the supervisor wrote.
        #[arg(long)]
        spec: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sampleapp {
            command: SampleappCommand::Run { spec },
        } => keel_sampleapp::process::run(&spec),
        Command::Up(args) => up::run(cli.config.as_deref(), args),
        Command::Load(args) => load_cmd::run(args),
        Command::Collector(args) => collector_cmd::run(cli.config.as_deref(), args),
        Command::Agent { command } => agent_cmd::run(cli.config.as_deref(), command),
        Command::Query(args) => collector_cmd::query(args),
        Command::Logs(args) => logs_cmd::run(args),
        Command::Rules { command } => rules_cmd::run(command),
        Command::Silence { command } => silence_cmd::run(command),
        Command::Events(args) => events_cmd::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::User { command } => people_cmd::user(cli.config.as_deref(), command),
        Command::Token { command } => people_cmd::token(cli.config.as_deref(), command),
        Command::Failover(args) => failover_cmd::failover(args),
        Command::Switchover(args) => failover_cmd::switchover(args),
        Command::Ack(args) => silence_cmd::ack(args),
        Command::Incident { command } => incident_cmd::run(command),
        Command::Scenario { command } => scenario::run(command),
        Command::Replay(args) => incident_cmd::replay_cmd(args),
        Command::Import(args) => collector_cmd::import(cli.config.as_deref(), args),
        Command::Bench {
            command: BenchCommand::Sampleapp(args),
        } => bench::run(args),
        Command::Bench {
            command: BenchCommand::Metrics(args),
        } => bench_metrics::run(args),
        Command::Bench {
            command: BenchCommand::Agent(args),
        } => bench_agent::run(args),
        Command::Bench {
            command: BenchCommand::Host(args),
        } => bench_host::run(args),
        Command::Bench {
            command: BenchCommand::Logs(args),
        } => bench_logs::run(args),
        Command::Bench {
            command: BenchCommand::Rules(args),
        } => bench_rules::run(args),
        Command::Bench {
            command: BenchCommand::Failover(args),
        } => bench_failover::run(args),
        Command::Bench {
            command: BenchCommand::Alerts(args),
        } => bench_alerts::run(args),
        Command::Bench {
            command: BenchCommand::Autoscale(args),
        } => bench_autoscale::run(args),
        Command::Bench {
            command: BenchCommand::Replay(args),
        } => bench_replay::run(args),
        Command::Bench {
            command: BenchCommand::Dashboard(args),
        } => bench_dashboard::run(args),
        Command::Bench {
            command: BenchCommand::Fuzz(args),
        } => bench_fuzz::run(args),
        Command::Bench {
            command: BenchCommand::Crash(args),
        } => bench_crash::run(args),
        Command::Bench {
            command: BenchCommand::Security(args),
        } => bench_security::run(args),
        Command::Bench {
            command: BenchCommand::Ha(args),
        } => bench_ha::run(args),
        Command::Bench {
            command: BenchCommand::Forward(args),
        } => bench_forward::run(args),
        Command::Bench {
            command: BenchCommand::Histograms(args),
        } => bench_histograms::run(args),
        Command::Bench {
            command: BenchCommand::Alertmanager(args),
        } => bench_alertmanager::run(args),
        Command::Package { command } => package_cmd::run(command),
        Command::Config => config::load(cli.config.as_deref()).and_then(|c| {
            // Secrets print as <redacted>, passwords inside URLs (a
            // PostgreSQL DSN) as ***, webhook URLs without their path.
            let v = keel_core::secret::shown(&c)?;
            print!("{}", serde_json::to_string_pretty(&v)?);
            println!();
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: {e:#}");
            ExitCode::FAILURE
        }
    }
}
