//! `keel events`: the controller's events (decisions, scalings, actuator
//! failures), a line each, oldest first.

use std::time::Duration;

/// Flags of `keel events`.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Events of the last SINCE.
    #[arg(long, default_value = "1h", value_parser = keel_core::duration::parse)]
    since: Duration,
    /// Only this policy's.
    #[arg(long)]
    subject: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the JSON (inputs, proposals, clamps).
    #[arg(long)]
    json: bool,
    /// The controller's API.
    #[arg(long, default_value = "http://127.0.0.1:7071")]
    url: String,
}

pub fn run(a: EventsArgs) -> anyhow::Result<()> {
    let since = std::time::SystemTime::now()
        .checked_sub(a.since)
        .map(keel_core::clock::unix_ms)
        .unwrap_or(0);
    let mut query = vec![
        ("since", format!("{}", since as f64 / 1000.0)),
        ("limit", a.limit.to_string()),
    ];
    if let Some(s) = &a.subject {
        query.push(("subject", s.clone()));
    }
    let v = crate::silence_cmd::call(
        crate::api_client::client()
            .get(format!("{}/api/v1/events", a.url.trim_end_matches('/')))
            .query(&query),
    )?;
    let list = v["data"].as_array().cloned().unwrap_or_default();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for e in &list {
        println!(
            "{}  {:<14} {}",
            crate::silence_cmd::time(e["at_ms"].as_i64().unwrap_or(0)),
            e["kind"].as_str().unwrap_or(""),
            e["explanation"].as_str().unwrap_or("")
        );
    }
    if list.is_empty() {
        eprintln!(
            "no events in the last {}",
            humantime::format_duration(a.since)
        );
    }
    Ok(())
}
