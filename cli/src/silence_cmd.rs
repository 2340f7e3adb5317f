//! `keel silence add|list|expire` and `keel ack`: Alertmanager-style
//! silences and acknowledgements against a running collector.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// `keel silence …`.
#[derive(clap::Subcommand)]
pub enum SilenceCommand {
    /// Silence the alerts all MATCHERS match (`alertname="X"`, `instance=~"web-.*"`).
    Add {
        /// Label matchers.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who.
        #[arg(long, default_value_t = whoami())]
        author: String,
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
    },
    /// List silences (active and expired).
    List {
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
    },
    /// End a silence now.
    Expire {
        /// Its id.
        id: u64,
        /// The collector's API.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
    },
}

/// `keel ack`.
#[derive(clap::Args)]
pub struct AckArgs {
    /// Label matchers of the firing alerts to acknowledge.
    #[arg(required = true)]
    matchers: Vec<String>,
    /// The collector's API.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "keel".into())
}

/// Send `req`; its JSON answer, or the API's reason for refusing.
pub fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let r = req.send().await.context("the API")?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "HTTP {status}: {}",
                v["error"].as_str().unwrap_or("(no reason given)")
            );
        }
        Ok(v)
    })
}

/// `ms` as RFC 3339 (seconds).
pub fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(keel_core::clock::from_unix_ms(ms)).to_string()
}

pub fn run(command: SilenceCommand) -> anyhow::Result<()> {
    let http = crate::api_client::client();
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            comment,
            author,
            url,
        } => {
            let v = call(http.post(format!("{url}/api/v1/silences")).json(&json!({
                "matchers": matchers, "duration": duration, "comment": comment, "created_by": author,
            })))?;
            let s = &v["data"];
            println!(
                "silence {} until {}",
                s["id"],
                time(s["ends_at_ms"].as_i64().unwrap_or(0))
            );
        }
        SilenceCommand::List { url } => {
            let v = call(http.get(format!("{url}/api/v1/silences")))?;
            println!(
                "{:<4} {:<20} {:<20} {:<12} MATCHERS / COMMENT",
                "ID", "STARTS", "ENDS", "BY"
            );
            for s in v["data"].as_array().into_iter().flatten() {
                let matchers: Vec<String> = s["matchers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        format!(
                            "{}{}{:?}",
                            m["name"].as_str().unwrap_or(""),
                            m["op"].as_str().unwrap_or(""),
                            m["value"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                println!(
                    "{:<4} {:<20} {:<20} {:<12} {} {}",
                    s["id"],
                    time(s["starts_at_ms"].as_i64().unwrap_or(0)),
                    time(s["ends_at_ms"].as_i64().unwrap_or(0)),
                    s["created_by"].as_str().unwrap_or(""),
                    matchers.join(", "),
                    s["comment"].as_str().unwrap_or("")
                );
            }
        }
        SilenceCommand::Expire { id, url } => {
            call(http.delete(format!("{url}/api/v1/silences/{id}")))?;
            println!("silence {id} expired");
        }
    }
    Ok(())
}

pub fn ack(args: AckArgs) -> anyhow::Result<()> {
    let v = call(
        crate::api_client::client()
            .post(format!("{}/api/v1/alerts/ack", args.url))
            .json(&json!({"matchers": args.matchers})),
    )?;
    println!("{} alert(s) acknowledged", v["data"]["acknowledged"]);
    Ok(())
}
