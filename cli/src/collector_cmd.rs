//! `keel collector` and `keel query`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keel_core::clock::{SharedClock, SystemClock};
use keel_core::config::Validate;

/// Flags of `keel collector` (they override the config file and environment).
#[derive(clap::Args)]
pub struct CollectorArgs {
    /// Where the metric store keeps its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// OTLP/HTTP port (0 picks a free one).
    #[arg(long)]
    otlp_port: Option<u16>,
    /// API port (0 picks a free one).
    #[arg(long)]
    api_port: Option<u16>,
    /// OTLP/gRPC port (0 picks a free one).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// The state store: a `sqlite:` or `postgres://` URL (default: SQLite
    /// at `<data_dir>/state.db`).
    #[arg(long)]
    state: Option<String>,
}

pub fn run(config_path: Option<&Path>, args: CollectorArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(config_path)?;
    let c = &mut config.collector;
    if let Some(d) = args.data_dir {
        c.data_dir = d;
    }
    if let Some(p) = args.otlp_port {
        c.otlp_http_port = p;
    }
    if let Some(p) = args.api_port {
        c.api_port = p;
    }
    if let Some(p) = args.grpc_port {
        c.otlp_grpc_port = p;
    }
    if let Some(s) = args.state {
        c.state = s;
    }
    config.check("command-line flags")?;
    let _ = keel_sampleapp::telemetry::init_stderr_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let clock: SharedClock = Arc::new(SystemClock);
        let running = keel_collector::server::start(&config.collector, clock.clone()).await?;
        running
            .incidents
            .set_replayer(std::sync::Arc::new(keel_replay::Replayer));
        // The controller runs beside the collector when the config gives
        // it work (failover targets such as a PostgreSQL cluster, or
        // autoscaling policies).
        let running = Arc::new(running);
        let wants_controller =
            !(config.controller.failover.is_empty() && config.controller.policies.is_empty());
        let _controller = if !wants_controller {
            None
        } else if running.leading.leads() {
            Some(start_controller(&config.controller, &running, clock).await?)
        } else {
            // Only the leader runs the controller (collector.ha): this one
            // starts it if it comes to lead.
            crate::up::say("keel collector: following; the controller starts if this collector leads");
            let (running, controller) = (running.clone(), config.controller.clone());
            tokio::spawn(async move {
                running.leading.until_leading().await;
                match start_controller(&controller, &running, clock).await {
                    Ok(c) => {
                        // Held for as long as the process runs.
                        std::future::pending::<()>().await;
                        drop(c);
                    }
                    Err(e) => {
                        eprintln!("keel collector: the controller did not start: {e:#}");
                        std::process::exit(1);
                    }
                }
            });
            None
        };
        crate::up::say(&format!(
            "keel collector: OTLP/HTTP {}://{}/v1/metrics",
            running.scheme(),
            running.otlp_http
        ));
        crate::up::say(&format!(
            "keel collector: PromQL API {}://{}/api/v1/query",
            running.scheme(),
            running.api
        ));
        crate::up::say(&format!(
            "keel collector: OTLP/gRPC {}://{}",
            running.scheme(),
            running.otlp_grpc
        ));
        crate::up::say(&format!(
            "keel collector: access {}",
            crate::up::access(&config.collector)
        ));
        tokio::select! {
            () = keel_core::shutdown::shutdown_signal() => {
                // A clean stop hands the lease over at once.
                running.leading.release().await;
                anyhow::Ok(())
            }
            // A leader that lost its lease stops rather than act without
            // it; its supervisor starts it again, as a follower.
            why = running.leading.deposed() => {
                refused_late_changes(&running).await;
                anyhow::bail!(
                    "keel collector: no longer leading ({why}); stopping so that nothing acts without the lease"
                )
            }
        }
    })
}

/// After losing the lease: push what the leader's writer still holds to
/// the store, which refuses every change stamped with the lost token,
/// and say how many were refused (bounded: a store that stopped
/// answering is why the lease was lost).
async fn refused_late_changes(running: &keel_collector::server::Running) {
    let Some((_, writer)) = &running.state else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(5), writer.flush()).await {
        Ok(Err(keel_state::StateError::Fenced(n))) => eprintln!(
            "keel collector: the state store refused {n} change(s) made under the lost lease"
        ),
        Ok(_) => {}
        Err(_) => eprintln!(
            "keel collector: the state store did not answer; changes not yet saved are not (the lease is lost)"
        ),
    }
}

/// Start the controller beside `running` and say where it answers.
async fn start_controller(
    config: &keel_controller::ControllerConfig,
    running: &keel_collector::server::Running,
    clock: SharedClock,
) -> anyhow::Result<Arc<keel_controller::Controller>> {
    let (addr, c) = crate::up::start_controller(config, running, clock).await?;
    crate::up::say(&format!(
        "keel controller: {}://{addr}/api/v1/failover ({} failover target(s), {} polic(ies))",
        running.scheme(),
        config.failover.len(),
        config.policies.len()
    ));
    Ok(c)
}

/// Flags of `keel query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// The PromQL expression.
    expr: String,
    /// Evaluation time (RFC 3339 or Unix seconds); default now.
    #[arg(long)]
    time: Option<String>,
    /// Make it a range query over the last RANGE (e.g. 1h).
    #[arg(long, value_parser = keel_core::duration::parse)]
    range: Option<Duration>,
    /// Step of a range query.
    #[arg(long, default_value = "15s", value_parser = keel_core::duration::parse)]
    step: Duration,
    /// The collector's API.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Print Prometheus' JSON answer as is.
    #[arg(long)]
    json: bool,
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = crate::api_client::client();
        let base = args.url.trim_end_matches('/');
        let req = match args.range {
            Some(range) => {
                let end = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs_f64();
                let start = end - range.as_secs_f64();
                client.get(format!("{base}/api/v1/query_range")).query(&[
                    ("query", args.expr.clone()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}", args.step.as_secs_f64())),
                ])
            }
            None => {
                let mut q = vec![("query", args.expr.clone())];
                if let Some(t) = &args.time {
                    q.push(("time", t.clone()));
                }
                client.get(format!("{base}/api/v1/query")).query(&q)
            }
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the collector at {base}"))?;
        let body: serde_json::Value = resp
            .json()
            .await
            .context("the collector's answer is not JSON")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        if body["status"] != "success" {
            bail!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("unknown")
            );
        }
        print_table(&body["data"]);
        // Prometheus 3's annotations, on stderr so the table stays clean
        // for pipes (as promtool prints them).
        for (key, label) in [("warnings", "warning"), ("infos", "info")] {
            for a in body[key].as_array().into_iter().flatten() {
                eprintln!("{label}: {}", a.as_str().unwrap_or_default());
            }
        }
        Ok(())
    })
}

fn labels_text(metric: &serde_json::Value) -> String {
    let Some(obj) = metric.as_object() else {
        return "{}".into();
    };
    let name = obj.get("__name__").and_then(|v| v.as_str()).unwrap_or("");
    let rest: Vec<String> = obj
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", v))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

fn print_table(data: &serde_json::Value) {
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => println!("{}", result[1].as_str().unwrap_or("")),
        Some("vector") => {
            let rows: Vec<(String, String)> = result
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            (
                                labels_text(&s["metric"]),
                                s["value"][1].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
            println!("{:<width$}  VALUE", "SERIES");
            for (l, v) in rows {
                println!("{l:<width$}  {v}");
            }
            if result.as_array().is_none_or(Vec::is_empty) {
                println!("(no series)");
            }
        }
        Some("matrix") => {
            for s in result.as_array().into_iter().flatten() {
                println!("{}", labels_text(&s["metric"]));
                for p in s["values"].as_array().into_iter().flatten() {
                    let t = p[0].as_f64().unwrap_or(0.0);
                    let when = humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0)),
                    );
                    println!("  {when}  {}", p[1].as_str().unwrap_or(""));
                }
            }
            if result.as_array().is_none_or(Vec::is_empty) {
                println!("(no series)");
            }
        }
        _ => println!("{data}"),
    }
}

/// Flags of `keel import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// OpenMetrics text file (every sample with a timestamp in seconds).
    file: PathBuf,
    /// The collector's data directory (the collector must be stopped).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn import(config_path: Option<&Path>, args: ImportArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(config_path)?;
    if let Some(d) = args.data_dir {
        config.collector.data_dir = d;
    }
    let c = &config.collector;
    let store = c.open_store()?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("{}: cannot open", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("reading");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let shown = args.file.display().to_string();
    let result =
        keel_metricstore::import::import(&store, &shown, std::io::BufReader::new(file), now, |n| {
            bar.set_position(n)
        });
    bar.finish_and_clear();
    let done = result?;
    crate::up::say(&format!(
        "keel import: {} samples of {} series into {} blocks under {}",
        done.samples,
        done.series,
        done.blocks,
        c.data_dir.join("metrics/blocks").display()
    ));
    Ok(())
}
