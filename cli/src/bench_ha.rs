//! `keel bench ha`: how fast a follower takes over from a killed leader
//! (#26). Two `keel collector` processes with `collector.ha` share one
//! fresh PostgreSQL database; the leader is SIGKILLed `--kills` times
//! (each time started again, as a follower). For each kill: the
//! database's own times — when the leader's last grant lapsed and when
//! the follower's began (within one renewal of the lapse is the goal) —
//! and the wall time from the kill to the follower saying it leads
//! (about the lease plus one renewal: the lease is what a crash costs).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Flags of `keel bench ha`.
#[derive(clap::Args)]
pub struct HaBenchArgs {
    /// PostgreSQL to make the bench's database in (as superuser).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// Leaders killed.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// `collector.ha.lease`.
    #[arg(long, default_value = "3s", value_parser = keel_core::duration::parse)]
    lease: Duration,
    /// `collector.ha.renew_interval`.
    #[arg(long, default_value = "500ms", value_parser = keel_core::duration::parse)]
    renew: Duration,
}

/// One collector of the pair.
struct Member {
    child: keel_testkit::Reaped,
    api: String,
}

/// Start `keel collector` in `dir` against `state`; wait for its banner.
fn spawn(dir: &Path, state: &str, args: &HaBenchArgs) -> anyhow::Result<Member> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("keel.yaml");
    std::fs::write(
        &config,
        format!(
            "collector:\n  state: \"{state}\"\n  ha: {{enabled: true, lease: {}ms, renew_interval: {}ms}}\n",
            args.lease.as_millis(),
            args.renew.as_millis()
        ),
    )?;
    let exe = std::env::current_exe().context("locating the keel binary")?;
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(&config)
        .args([
            "collector",
            "--otlp-port",
            "0",
            "--api-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("collector.stderr"))?)
        .spawn()
        .context("starting keel collector")?;
    let stdout = child.stdout.take().context("its stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("PromQL API") {
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http"))
                .context("the API's URL")?;
            let api = url.trim_end_matches("/api/v1/query").to_owned();
            return Ok(Member {
                child: keel_testkit::Reaped(child),
                api,
            });
        }
    }
    bail!(
        "keel collector stopped before it was ready; see {}",
        dir.join("collector.stderr").display()
    )
}

/// Where `m` stands (`/api/v1/status/leader`'s data), or null.
async fn standing(http: &reqwest::Client, m: &Member) -> serde_json::Value {
    let got = async {
        let r = http
            .get(format!("{}/api/v1/status/leader", m.api))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        Some(v["data"].clone())
    };
    got.await.unwrap_or_default()
}

/// Poll `what` every 20 ms until it gives a value (60 s at most).
async fn until<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    Ok(keel_testkit::within(
        what,
        Duration::from_secs(60),
        Duration::from_millis(20),
        check,
    )
    .await?)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Run `keel bench ha`.
pub fn run(args: HaBenchArgs) -> anyhow::Result<()> {
    if args.kills == 0 {
        bail!("--kills must be at least 1");
    }
    if args.renew * 3 > args.lease {
        bail!("--lease must be at least three times --renew (as collector.ha requires)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let db = fresh_database(&args.admin_url).await?;
        let store = keel_state::StateStore::open(&db).await?;
        let dir = tempfile::tempdir()?;
        let http = reqwest::Client::new();
        let mut n = 0usize;
        let mut next_dir = || -> PathBuf {
            n += 1;
            dir.path().join(format!("member-{n}"))
        };
        let mut members = vec![spawn(&next_dir(), &db, &args)?];
        until("the first collector leads", async || {
            (standing(&http, &members[0]).await["standing"] == "leader").then_some(())
        })
        .await?;
        members.push(spawn(&next_dir(), &db, &args)?);
        println!(
            "keel bench ha: {} kills of the leader of two keel collectors on PostgreSQL, lease {:?}, renew every {:?}",
            args.kills, args.lease, args.renew
        );
        let (mut after_lapse, mut after_kill) = (Vec::new(), Vec::new());
        for k in 1..=args.kills {
            // Both settled: one leads, the other follows.
            let leader = until("a leader and a follower", async || {
                let (a, b) = (standing(&http, &members[0]).await, standing(&http, &members[1]).await);
                match (a["standing"].as_str(), b["standing"].as_str()) {
                    (Some("leader"), Some("follower")) => Some(0),
                    (Some("follower"), Some("leader")) => Some(1),
                    _ => None,
                }
            })
            .await?;
            let follower = 1 - leader;
            let pid = members[leader].child.0.id() as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )?;
            let killed = Instant::now();
            let _ = members[leader].child.0.wait();
            let last = store
                .lease_holder(keel_collector::ha::LEASE)
                .await?
                .context("the lease")?;
            let took = until("the follower takes over", async || {
                let s = standing(&http, &members[follower]).await;
                (s["standing"] == "leader").then_some(s)
            })
            .await?;
            let wall = killed.elapsed().as_secs_f64() * 1000.0;
            let since = took["since_ms"].as_i64().context("since_ms")?;
            let late = (since - last.grant.expires_ms) as f64;
            println!(
                "  kill {k:>2}: the follower led {late:>6.0} ms after the lease lapsed, {wall:>6.0} ms after the kill"
            );
            after_lapse.push(late);
            after_kill.push(wall);
            // The killed one comes back, as a follower.
            members[leader] = spawn(&next_dir(), &db, &args)?;
        }
        let bound = (args.lease + args.renew).as_secs_f64() * 1000.0;
        println!(
            "after the lapse (database clock): median {:.0} ms, max {:.0} ms (goal ≤ renew, {} ms)",
            median(&mut after_lapse),
            after_lapse.iter().copied().fold(f64::MIN, f64::max),
            args.renew.as_millis()
        );
        println!(
            "after the kill (wall clock): median {:.0} ms, max {:.0} ms (bound: lease + renew, {bound:.0} ms)",
            median(&mut after_kill),
            after_kill.iter().copied().fold(f64::MIN, f64::max)
        );
        anyhow::Ok(())
    })
}

/// A new database of the bench's own on the server `admin_url` names.
async fn fresh_database(admin_url: &str) -> anyhow::Result<String> {
    let name = format!("keel_bench_ha_{}", std::process::id());
    Ok(keel_state::create_postgres_database(admin_url, &name).await?)
}
