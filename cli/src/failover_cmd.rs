//! `keel failover status`, `keel failover [--to MEMBER]` and `keel
//! switchover [--to MEMBER]`: the controller's failover targets, a failover
//! now, and a planned switchover that loses nothing.

use serde_json::{Value, json};

/// Flags of `keel failover`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FailoverArgs {
    #[command(subcommand)]
    command: Option<FailoverCommand>,
    #[command(flatten)]
    target: Target,
}

/// What `keel failover` does besides failing over.
#[derive(clap::Subcommand)]
pub enum FailoverCommand {
    /// Each target's primary, epoch, state and members.
    Status {
        /// Print the JSON.
        #[arg(long)]
        json: bool,
        /// The controller's API.
        #[arg(long, default_value = "http://127.0.0.1:7071")]
        url: String,
    },
}

/// Which target and member.
#[derive(clap::Args)]
pub struct Target {
    /// The member to promote (default: the best replica).
    #[arg(long)]
    to: Option<String>,
    /// The failover target (needed when there are several).
    #[arg(long)]
    target: Option<String>,
    /// The controller's API.
    #[arg(long, default_value = "http://127.0.0.1:7071")]
    url: String,
}

fn show_status(list: &[Value]) {
    for t in list {
        println!(
            "{}: primary {} at epoch {} — {}{}",
            t["name"].as_str().unwrap_or(""),
            t["primary"].as_str().unwrap_or("?"),
            t["epoch"],
            t["state"].as_str().unwrap_or(""),
            t["why"]
                .as_str()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        );
        if let Some(members) = t["members"].as_object() {
            for (name, probe) in members {
                match (&probe["answered"], &probe["failed"]) {
                    (r, _) if r.is_object() => println!(
                        "  {name:<8} {:<9} epoch {:<3} lsn {:<8} {} bytes{}",
                        r["role"].as_str().unwrap_or(""),
                        r["epoch"],
                        r["last_lsn"],
                        r["wal_bytes"],
                        match r["primary_ok"].as_bool() {
                            Some(true) => "  reaches the primary",
                            Some(false) => "  lost the primary",
                            None => "",
                        }
                    ),
                    (_, e) => println!("  {name:<8} does not answer: {}", e.as_str().unwrap_or("")),
                }
            }
        }
    }
    if let Some(when) = list.first().and_then(|t| t["last_failover_ms"].as_i64()) {
        println!(
            "last automatic failover: {}",
            crate::silence_cmd::time(when)
        );
    }
}

fn act(path: &str, t: Target) -> anyhow::Result<()> {
    let v = crate::silence_cmd::call(
        crate::api_client::client()
            .post(format!("{}/api/v1/{path}", t.url.trim_end_matches('/')))
            .json(&json!({"target": t.target, "to": t.to})),
    )?;
    let p = &v["data"]["promoted"];
    let target = &v["data"]["target"];
    println!(
        "{}: {} is primary at epoch {} (lsn {})",
        target["name"].as_str().unwrap_or(""),
        target["primary"].as_str().unwrap_or("?"),
        target["epoch"],
        p["lsn"]
    );
    let list = |k: &str| {
        p[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!("  repointed: {}", list("repointed"));
    println!("  following: {}", list("followed"));
    if !list("unreachable").is_empty() {
        println!(
            "  not answering (they follow when back): {}",
            list("unreachable")
        );
    }
    println!(
        "every step: keel events --subject {}",
        target["name"].as_str().unwrap_or("")
    );
    Ok(())
}

/// `keel failover …`.
pub fn failover(a: FailoverArgs) -> anyhow::Result<()> {
    match a.command {
        Some(FailoverCommand::Status { json, url }) => {
            let v = crate::silence_cmd::call(
                crate::api_client::client()
                    .get(format!("{}/api/v1/failover", url.trim_end_matches('/'))),
            )?;
            let list = v["data"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no failover target is configured");
            } else {
                show_status(&list);
            }
            Ok(())
        }
        None => act("failover", a.target),
    }
}

/// `keel switchover …`.
pub fn switchover(t: Target) -> anyhow::Result<()> {
    act("switchover", t)
}
