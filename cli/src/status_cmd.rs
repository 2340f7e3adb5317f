//! `keel status`: one collector at a glance — whether it leads (under
//! `collector.ha`: since when, with which token, or who leads instead)
//! and what its metric store holds.

/// Flags of `keel status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The collector's API.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Print the JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: StatusArgs) -> anyhow::Result<()> {
    let base = a.url.trim_end_matches('/');
    let http = crate::api_client::client();
    let leader = crate::silence_cmd::call(http.get(format!("{base}/api/v1/status/leader")))?;
    let keel = crate::silence_cmd::call(http.get(format!("{base}/api/v1/status/keel")))?;
    let (leader, keel) = (&leader["data"], &keel["data"]);
    if a.json {
        let both = serde_json::json!({ "leader": leader, "keel": keel });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(());
    }
    println!("collector  {base}");
    println!("leading    {}", describe(leader));
    let store = &keel["store"];
    println!(
        "store      {} series, {} samples, {} blocks",
        store["series"], store["samples"], keel["blocks"]
    );
    for t in keel["forward"].as_array().into_iter().flatten() {
        let lag = t["lag_seconds"].as_f64().unwrap_or(0.0);
        let queued = t["queued_batches"].as_u64().unwrap_or(0);
        println!(
            "forward    {} ({} → {}): {}, {} sent{}",
            t["name"].as_str().unwrap_or("?"),
            t["kind"].as_str().unwrap_or("?"),
            t["url"].as_str().unwrap_or("?"),
            if queued > 0 {
                format!("{} batches queued, {lag:.1} s behind", t["queued_batches"])
            } else {
                "caught up".to_owned()
            },
            t["sent_records"],
            t["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!("; last send failed: {e}"))
        );
    }
    if let Some(url) = keel["remote_query"].as_str() {
        println!("older      than retention: asked of {url}");
    }
    Ok(())
}

/// A collector's standing in words.
fn describe(s: &serde_json::Value) -> String {
    let text = |k: &str| s[k].as_str().unwrap_or("?").to_owned();
    if s["ha"] != true {
        return "yes (alone: collector.ha is off)".into();
    }
    match s["standing"].as_str() {
        Some("leader") => format!(
            "yes, as {} since {} (token {})",
            text("name"),
            crate::silence_cmd::time(s["since_ms"].as_i64().unwrap_or(0)),
            s["token"]
        ),
        Some("follower") => format!(
            "no: {} follows {}",
            text("name"),
            s["leader"].as_str().unwrap_or("a collector it cannot name")
        ),
        Some("lost") => format!("no: the lease cannot be reached ({})", text("error")),
        _ => "not yet known (starting)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_standing_reads_as_words() {
        let alone = serde_json::json!({"ha": false, "standing": "leader"});
        assert_eq!(describe(&alone), "yes (alone: collector.ha is off)");
        let follower =
            serde_json::json!({"ha": true, "standing": "follower", "name": "b#1", "leader": "a#2"});
        assert_eq!(describe(&follower), "no: b#1 follows a#2");
        let leader = serde_json::json!({"ha": true, "standing": "leader", "name": "a#2", "since_ms": 0, "token": 7});
        assert!(describe(&leader).starts_with("yes, as a#2 since "));
        assert!(describe(&leader).ends_with("(token 7)"));
        let lost = serde_json::json!({"ha": true, "standing": "lost", "error": "timed out"});
        assert_eq!(
            describe(&lost),
            "no: the lease cannot be reached (timed out)"
        );
    }
}
