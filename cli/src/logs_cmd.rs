//! `keel logs 'QUERY' [--since 15m] [--follow]`: search the collector's
//! logs from the shell, oldest of the matches first like `tail`, and with
//! `--follow` keep printing new matches as they become searchable.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Flags of `keel logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// tantivy query, e.g. `level:error AND service:payment AND "timeout"`;
    /// `*` for everything.
    query: String,
    /// How far back to look.
    #[arg(long, default_value = "15m", value_parser = keel_core::duration::parse)]
    since: Duration,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Keep printing new matches (polls once a second) until interrupted.
    #[arg(long)]
    follow: bool,
    /// The collector's API.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// One JSON object a line, as the API returns records.
    #[arg(long)]
    json: bool,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One record as a line: time, level, service, message, then the ids and
/// attributes as `key=value`.
fn line(r: &Value) -> String {
    let mut out = format!(
        "{} {:<5} {} {}",
        r["time"].as_str().unwrap_or(""),
        r["level"].as_str().unwrap_or("").to_ascii_uppercase(),
        r["service"].as_str().unwrap_or("-"),
        r["message"].as_str().unwrap_or(""),
    );
    for id in ["trace_id", "span_id", "host"] {
        if let Some(v) = r[id].as_str().filter(|v| !v.is_empty()) {
            out.push_str(&format!("  {id}={v}"));
        }
    }
    if let Some(attrs) = r["attributes"].as_object() {
        for (k, v) in attrs {
            out.push_str(&format!("  {k}={v}"));
        }
    }
    out
}

async fn page(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    start: f64,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let resp = client
        .get(format!("{base}/api/v1/logs/search"))
        .query(&[
            ("q", query.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{:.3}", now_s() + 1.0)),
            ("limit", limit.to_string()),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach the collector at {base}"))?;
    let body: Value = resp
        .json()
        .await
        .context("the collector's answer is not JSON")?;
    if body["status"] != "success" {
        bail!("{}", body["error"].as_str().unwrap_or("the search failed"));
    }
    let mut records = body["data"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    records.reverse(); // oldest first
    Ok(records)
}

/// Run `keel logs`.
pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = crate::api_client::client();
        let base = args.url.trim_end_matches('/');
        let print = |r: &Value| -> anyhow::Result<()> {
            if args.json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", line(r));
            }
            Ok(())
        };
        let mut seen: HashSet<u64> = HashSet::new();
        let mut newest_s = now_s() - args.since.as_secs_f64();
        for r in page(&client, base, &args.query, newest_s, args.limit).await? {
            print(&r)?;
            seen.insert(r["seq"].as_u64().unwrap_or(0));
            newest_s = newest_s.max(r["timestamp_ns"].as_f64().unwrap_or(0.0) / 1e9);
        }
        if !args.follow {
            return Ok(());
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // From the newest time printed: records in that same instant may
            // come back, and are skipped by sequence number.
            for r in page(&client, base, &args.query, newest_s - 0.001, 10_000).await? {
                if seen.insert(r["seq"].as_u64().unwrap_or(0)) {
                    print(&r)?;
                    newest_s = newest_s.max(r["timestamp_ns"].as_f64().unwrap_or(0.0) / 1e9);
                }
            }
            std::io::stdout().flush()?;
        }
    })
}
