//! `keel-agent`: the host agent alone, a small binary for hosts that run
//! only the agent (the `.deb`'s keel-agent service): it links the agent's
//! crates and nothing of the collector's (stores, engine, index), so what
//! it pages in of itself stays small. It reads the `agent:` section of the
//! same config file `keel` reads (other sections are left alone), with
//! the same `KEEL_AGENT__…` overrides and checks.
//!
//! ```text
//! keel-agent [--config FILE] run [--listen ADDR] [--collector URL]… [--data-dir DIR]
//! ```
//!
//! `keel agent status` (the full binary) reads its status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use keel_agent::config::AgentConfig;
use keel_core::clock::{SharedClock, SystemClock};
use keel_core::config::{Validate, apply_env_overrides, find_config_file, load_yaml};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The config file as the agent reads it: its own section.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct AgentFile {
    agent: AgentConfig,
}

impl Validate for AgentFile {
    fn validate(&self, problems: &mut Vec<String>) {
        self.agent.validate(problems);
    }
}

const USAGE: &str =
    "usage: keel-agent [--config FILE] run [--listen ADDR] [--collector URL]... [--data-dir DIR]";

/// The command line: the config file and the run flags.
#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    listen: Option<String>,
    collectors: Vec<String>,
    data_dir: Option<PathBuf>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut ran = false;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--config" => a.config = Some(value("--config")?.into()),
            "run" => ran = true,
            "--listen" => a.listen = Some(value("--listen")?),
            "--collector" => a.collectors.push(value("--collector")?),
            "--data-dir" => a.data_dir = Some(value("--data-dir")?.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !ran {
        return Err(USAGE.to_owned());
    }
    Ok(a)
}

fn run(args: Args) -> Result<(), String> {
    let (file, source) = match find_config_file(args.config.as_deref()) {
        Some(path) => (
            load_yaml::<AgentFile>(&path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        ),
        None => (AgentFile::default(), "<defaults>".to_owned()),
    };
    let mut file = apply_env_overrides(file, std::env::vars()).map_err(|e| e.to_string())?;
    let a = &mut file.agent;
    match args.collectors.as_slice() {
        [] => {}
        [one] => {
            a.collector = one.clone();
            a.collectors.clear();
        }
        many => {
            a.collector = AgentConfig::default().collector;
            a.collectors = many.to_vec();
        }
    }
    if let Some(d) = args.data_dir {
        a.data_dir = d;
    }
    if let Some(l) = args.listen {
        a.listen = l;
    }
    file.check(&format!("{source} (after environment overrides and flags)"))
        .map_err(|e| e.to_string())?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        let config = file.agent;
        let agent = keel_agent::run::Agent::start(config.clone(), clock)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "keel-agent: status http://{}/status, metrics http://{}/metrics, shipping to {}",
            agent.addr,
            agent.addr,
            config.collector_urls().join(" and ")
        );
        keel_core::shutdown::shutdown_signal().await;
        agent.stop().await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("keel-agent {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match parse(args.into_iter()).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
