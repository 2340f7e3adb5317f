//! `keel bench failover --postgres`: Keel and Patroni failing over the
//! same kind of three-member PostgreSQL 15 cluster on loopback, in the
//! same run, under the same libpq writer (`pg_writer.py`, Debian's
//! psycopg2, a multi-host connection string with
//! `target_session_attrs=read-write`).
//!
//! Each kill SIGKILLs the primary's whole node — its PID namespace, so
//! Keel's agent or Patroni dies with the postmaster and every backend, and
//! nothing can restart PostgreSQL in place. Failover time is the kill to
//! the first commit the writer gets acknowledged after its first failure.
//! The killed node is then started again and must rejoin as a standby
//! (pg_rewind) before the next kill. At the end every acknowledged commit
//! is read back from the primary: any missing is lost.
//!
//! Keel runs in synchronous mode (`synchronous_standby_names = ANY 1` of
//! the others, set by the controller: no acknowledged commit may be lost)
//! and in asynchronous mode, like for like with Patroni (Debian's
//! `patroni`, with `etcd-server`), which runs in its default asynchronous
//! mode (its `synchronous_mode` stalled for minutes after a rejoin when
//! tried here) at its defaults (ttl 30, loop_wait 10, retry_timeout 10)
//! and at the fastest its documentation allows (20 / 1 / 3). The ratios
//! are against Keel's synchronous median. A round with no commit
//! within 120 s is reported and ends that series. Root is needed (PID
//! namespaces; PostgreSQL runs as `postgres`).

#[path = "../tests/it/pgcluster/mod.rs"]
#[allow(clippy::all)]
mod pgcluster;

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_controller::failover::{Failover, Mode, Probe};
use keel_controller::{Controller, ControllerConfig};
use keel_core::clock::{SharedClock, SystemClock};
use pgcluster::{Cluster, Writer, free_port, http_get};
use serde::Serialize;

/// One system's rounds.
#[derive(Debug, Serialize)]
pub struct Series {
    /// `keel`, `patroni (defaults …)`.
    system: String,
    /// Kill → first acknowledged commit after the outage, per kill (ms).
    failover_ms: Vec<i64>,
    /// Killed node restarted → streaming again as a standby (ms).
    rejoin_ms: Vec<i64>,
    /// Commits acknowledged.
    acknowledged: usize,
    /// Of those, missing from the primary at the end (none: no primary
    /// to read them back from).
    lost: Option<usize>,
    /// Kills after which no commit came within 120 s (the series stops).
    stalled: Vec<String>,
}

impl Series {
    fn new(system: String) -> Self {
        Self {
            system,
            failover_ms: Vec::new(),
            rejoin_ms: Vec::new(),
            acknowledged: 0,
            lost: None,
            stalled: Vec::new(),
        }
    }

    fn median(&self) -> i64 {
        let mut v = self.failover_ms.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }
    fn max(&self) -> i64 {
        self.failover_ms.iter().copied().max().unwrap_or(0)
    }
}

/// Wait until the writer has 200 more commits acknowledged.
fn writes_flow(w: &Writer) -> anyhow::Result<()> {
    let before = w.acked();
    until("the writer commits", Duration::from_secs(60), || {
        (w.acked() >= before + 200).then_some(())
    })
}

fn now_ms() -> i64 {
    keel_core::clock::unix_ms(std::time::SystemTime::now())
}

/// Poll `check` every 20 ms until it holds, for at most `limit`.
fn until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} waiting for {what}",
                humantime::format_duration(limit)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the bench: Keel, then Patroni at both settings (unless `keel_only`).
pub fn run(kills: u32, keel_only: bool, json: bool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "keel bench failover --postgres runs as root: each node gets a PID namespace (unshare), and PostgreSQL runs as the postgres user"
        );
    }
    if !pgcluster::available() {
        bail!("PostgreSQL 15's programs are not in {}", pgcluster::BIN);
    }
    if Command::new("/usr/bin/python3")
        .args(["-c", "import psycopg2"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        bail!("the writer needs Debian's python3-psycopg2 (apt-get install python3-psycopg2)");
    }
    let mut all = vec![
        keel(kills, Mode::Synchronous)?,
        keel(kills, Mode::Asynchronous)?,
    ];
    if !keel_only {
        for (label, ttl, loop_wait, retry) in [
            (
                "defaults: ttl 30, loop_wait 10, retry_timeout 10",
                30,
                10,
                10,
            ),
            (
                "fastest documented: ttl 20, loop_wait 1, retry_timeout 3",
                20,
                1,
                3,
            ),
        ] {
            all.push(patroni(kills, label, (ttl, loop_wait, retry))?);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "\nfailover of a 3-member PostgreSQL 15 cluster, whole primary node SIGKILLed; {kills} kills each"
    );
    println!(
        "{:<70} {:>9} {:>9} {:>12} {:>6} {:>9}",
        "system", "median", "max", "acknowledged", "lost", "rejoin"
    );
    let base = all[0].median().max(1);
    for s in &all {
        let mut r = s.rejoin_ms.clone();
        r.sort_unstable();
        println!(
            "{:<70} {:>7}ms {:>7}ms {:>12} {:>6} {:>7}ms{}",
            s.system,
            s.median(),
            s.max(),
            s.acknowledged,
            s.lost.map_or_else(|| "?".to_owned(), |l| l.to_string()),
            r.get(r.len() / 2).copied().unwrap_or(0),
            if s.system.starts_with("keel") {
                String::new()
            } else {
                format!(
                    "   {:.1}× Keel's synchronous median",
                    s.median() as f64 / base as f64
                )
            }
        );
        for why in &s.stalled {
            println!("    stalled: {why}");
        }
    }
    Ok(())
}

/// Keel: the agents' failover role and the controller's postgres driver.
fn keel(kills: u32, mode: Mode) -> anyhow::Result<Series> {
    println!("== keel ({mode:?}): making a 3-member cluster");
    let exe = std::env::current_exe()?;
    // synchronous_standby_names is the controller's to set (synchronous mode).
    let mut c = Cluster::create(&exe, 3, &[]).map_err(anyhow::Error::msg)?;
    until("both standbys stream", Duration::from_secs(60), || {
        (c.psql(
            0,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .as_deref()
            == Ok("2"))
        .then_some(())
    })?;
    let target = c.target(mode);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (ctl, t): (Arc<Controller>, Arc<Failover>) = runtime.block_on(async {
        let config = ControllerConfig {
            failover: vec![target],
            ..ControllerConfig::default()
        };
        let clock: SharedClock = Arc::new(SystemClock);
        let ctl = Controller::new(&config, Arc::new(keel_testkit::NoMetrics), clock, None);
        let t = ctl.failovers()[0].clone();
        t.start("controller.failover[0]", None)
            .await
            .map_err(anyhow::Error::msg)?;
        tokio::spawn(ctl.clone().run());
        anyhow::Ok((ctl, t))
    })?;
    let w = Writer::start(&c.dir, &c.libpq_conninfo(), "bench", 1).map_err(anyhow::Error::msg)?;
    let mut s = Series::new(format!(
        "keel ({})",
        if mode == Mode::Synchronous {
            "synchronous"
        } else {
            "asynchronous"
        }
    ));
    for k in 1..=kills {
        writes_flow(&w)?;
        let primary = t.status().primary;
        let i = c.index(&primary).context("the primary is a member")?;
        let killed = now_ms();
        c.kill_node(i);
        let (_, first) = until("a commit after the kill", Duration::from_secs(120), || {
            w.first_ack_after_outage(killed)
        })?;
        s.failover_ms.push(first - killed);
        let restarted = now_ms();
        c.start_agent(i, "standby").map_err(anyhow::Error::msg)?;
        until(
            &format!("{primary} rejoins"),
            Duration::from_secs(120),
            || {
                let st = t.status();
                matches!(st.members.get(&primary), Some(Probe::Answered(r)) if r.role == "replica" && r.epoch == st.epoch && r.primary_ok == Some(true)).then_some(())
            },
        )?;
        let rejoin_ms = now_ms() - restarted;
        s.rejoin_ms.push(rejoin_ms);
        let now = t.status().primary;
        if std::env::var_os("KEEL_BENCH_EVENTS").is_some() {
            if let Some((t, e)) = w.first_error_after(killed) {
                println!("      +{} ms first failure: {e}", t - killed);
            }
            let acks: Vec<(u64, i64)> = w
                .acks()
                .into_iter()
                .filter(|(_, t)| (*t - killed) > -8 && (*t - killed) < 60)
                .map(|(i, t)| (i, t - killed))
                .collect();
            println!("      acks around the kill: {acks:?}");
            for e in ctl.events(killed, Some("pg"), 100) {
                println!(
                    "      +{} ms {}: {}",
                    e.at_ms - killed,
                    e.kind,
                    e.explanation
                );
            }
        }
        println!(
            "  kill {k:>2}: {primary} → {now}: first commit {} ms after the kill; {primary} rejoined {rejoin_ms} ms after its node restarted",
            first - killed,
        );
    }
    let acked = w.stop();
    let primary = t.status().primary;
    let i = c.index(&primary).context("the primary is a member")?;
    s.acknowledged = acked.len();
    s.lost = Some(
        pgcluster::missing(&c, i, "bench", &acked)
            .map_err(anyhow::Error::msg)?
            .len(),
    );
    drop(runtime);
    Ok(s)
}

/// One Patroni member.
struct PatroniNode {
    name: String,
    rest: u16,
    pg: u16,
    child: Option<Child>,
}

/// Patroni with etcd, `kills` times.
fn patroni(kills: u32, label: &str, timing: (u32, u32, u32)) -> anyhow::Result<Series> {
    println!("== patroni ({label}): etcd and 3 members bootstrapping");
    for p in ["/usr/bin/patroni", "/usr/bin/etcd"] {
        if !std::path::Path::new(p).exists() {
            bail!("{p} is missing: apt-get install patroni etcd-server");
        }
    }
    let dir = tempfile::Builder::new().prefix("keel-patroni-").tempdir()?;
    pgcluster::chown_postgres(dir.path()).map_err(anyhow::Error::msg)?;
    let (client, peer) = (free_port(), free_port());
    let etcd_log = std::fs::File::create(dir.path().join("etcd.log"))?;
    let mut etcd = Command::new("/usr/bin/etcd")
        .args(["--name", "e0", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("e0=http://127.0.0.1:{peer}"),
            "--initial-cluster-state",
            "new",
        ])
        .stdin(Stdio::null())
        .stdout(etcd_log.try_clone()?)
        .stderr(etcd_log)
        .process_group(0)
        .spawn()
        .context("starting etcd")?;
    let mut nodes: Vec<PatroniNode> = (1..=3)
        .map(|i| PatroniNode {
            name: format!("pg-{i}"),
            rest: free_port(),
            pg: free_port(),
            child: None,
        })
        .collect();
    let result = (|| {
        until("etcd", Duration::from_secs(30), || {
            http_get(&format!("http://127.0.0.1:{client}/health")).ok()
        })?;
        for n in &nodes {
            let d = dir.path().join(&n.name);
            std::fs::create_dir_all(&d)?;
            pgcluster::chown_postgres(&d).map_err(anyhow::Error::msg)?;
            std::fs::write(
                dir.path().join(format!("{}.yml", n.name)),
                patroni_yaml(n, &d, client, timing, false),
            )?;
        }
        for n in &mut nodes {
            start_patroni(dir.path(), n)?;
        }
        let conninfo = format!(
            "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2",
            nodes
                .iter()
                .map(|n| n.pg.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let leader = |nodes: &[PatroniNode]| {
            nodes
                .iter()
                .position(|n| http_get(&format!("http://127.0.0.1:{}/primary", n.rest)).is_ok())
        };
        let replicas = |nodes: &[PatroniNode]| {
            nodes
                .iter()
                .filter(|n| http_get(&format!("http://127.0.0.1:{}/replica", n.rest)).is_ok())
                .count()
        };
        until(
            "a leader and two replicas",
            Duration::from_secs(180),
            || (leader(&nodes).is_some() && replicas(&nodes) == 2).then_some(()),
        )?;
        let w = Writer::start(dir.path(), &conninfo, "bench", 1).map_err(anyhow::Error::msg)?;
        let mut s = Series::new(format!("patroni ({label})"));
        for k in 1..=kills {
            writes_flow(&w)?;
            let i = until("the leader", Duration::from_secs(30), || leader(&nodes))?;
            let killed = now_ms();
            if let Some(c) = nodes[i].child.take() {
                pgcluster::kill_node(c);
            }
            let first = until("a commit after the kill", Duration::from_secs(120), || {
                w.first_ack_after_outage(killed)
            });
            let Ok((_, first)) = first else {
                s.stalled.push(format!(
                    "kill {k}: no commit within 120 s of killing {}",
                    nodes[i].name
                ));
                println!(
                    "  kill {k:>2}: {}: no commit within 120 s; this series stops here",
                    nodes[i].name
                );
                break;
            };
            s.failover_ms.push(first - killed);
            let now = leader(&nodes)
                .map(|j| nodes[j].name.clone())
                .unwrap_or_default();
            let restarted = now_ms();
            start_patroni(dir.path(), &mut nodes[i])?;
            let rest = nodes[i].rest;
            until(
                &format!("{} rejoins", nodes[i].name),
                Duration::from_secs(180),
                || http_get(&format!("http://127.0.0.1:{rest}/replica")).ok(),
            )?;
            s.rejoin_ms.push(now_ms() - restarted);
            println!(
                "  kill {k:>2}: {} → {now}: first commit {} ms after the kill; rejoined {} ms after its node restarted",
                nodes[i].name,
                first - killed,
                now_ms() - restarted
            );
        }
        let acked = w.stop();
        s.acknowledged = acked.len();
        match until("the leader", Duration::from_secs(60), || leader(&nodes)) {
            Ok(i) => {
                s.lost = Some(
                    pgcluster::missing_on(nodes[i].pg, "bench", &acked)
                        .map_err(anyhow::Error::msg)?
                        .len(),
                )
            }
            Err(e) => println!("  no leader to read the commits back from: {e}"),
        }
        anyhow::Ok(s)
    })();
    // Every node, whatever ended the series.
    for n in &mut nodes {
        if let Some(c) = n.child.take() {
            pgcluster::kill_node(c);
        }
    }
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(etcd.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = etcd.wait();
    // A round that stalled (or an error) keeps Patroni's logs to read.
    if result.as_ref().map_or(true, |s| !s.stalled.is_empty())
        || std::env::var_os("KEEL_KEEP_PG").is_some()
    {
        println!(
            "  patroni's and etcd's logs are kept in {}",
            dir.keep().display()
        );
    }
    result
}

/// Start a Patroni member as the init of a PID namespace of its own, as
/// the postgres user.
fn start_patroni(dir: &std::path::Path, n: &mut PatroniNode) -> anyhow::Result<()> {
    let d = dir.join(&n.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("patroni.log"))?;
    let child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "/usr/bin/patroni",
        ])
        .arg(dir.join(format!("{}.yml", n.name)))
        .current_dir(&d)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", pgcluster::BIN))
        .env("HOME", &d)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting patroni")?;
    n.child = Some(child);
    Ok(())
}

/// A member's Patroni config: the same PostgreSQL settings as Keel's
/// cluster, synchronous mode, pg_rewind.
fn patroni_yaml(
    n: &PatroniNode,
    d: &std::path::Path,
    etcd: u16,
    (ttl, loop_wait, retry): (u32, u32, u32),
    sync: bool,
) -> String {
    let d = d.display();
    format!(
        "scope: bench\nnamespace: /service/\nname: {name}\nlog: {{level: INFO}}\nrestapi: {{listen: 127.0.0.1:{rest}, connect_address: 127.0.0.1:{rest}}}\netcd3: {{hosts: 127.0.0.1:{etcd}}}\nbootstrap:\n  dcs:\n    ttl: {ttl}\n    loop_wait: {loop_wait}\n    retry_timeout: {retry}\n    maximum_lag_on_failover: 1048576\n    synchronous_mode: {sync}\n    postgresql:\n      use_pg_rewind: true\n      use_slots: true\n      parameters: {{wal_level: replica, hot_standby: 'on', wal_log_hints: 'on', max_wal_senders: 10, max_replication_slots: 10, wal_keep_size: 512MB, wal_receiver_status_interval: 1s, wal_retrieve_retry_interval: 500ms}}\n  initdb: [{{encoding: UTF8}}]\npostgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {d}/data\n  bin_dir: {bin}\n  pgpass: {d}/pgpass\n  authentication:\n    superuser: {{username: postgres, password: postgres}}\n    replication: {{username: replicator, password: replicator}}\n  parameters: {{unix_socket_directories: '{d}', shared_buffers: 32MB, fsync: 'on'}}\n  pg_hba: [local all all trust, host all all 127.0.0.1/32 trust, host replication all 127.0.0.1/32 trust]\n",
        name = n.name,
        sync = if sync { "true" } else { "false" },
        rest = n.rest,
        pg = n.pg,
        bin = pgcluster::BIN,
    )
}
