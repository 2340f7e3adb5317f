//! A PostgreSQL 15 primary and standbys on loopback, made in a temp
//! directory (`initdb`, then `pg_basebackup` for each standby), each
//! member run by its own `keel agent` with the failover role, in a process
//! group of its own so that killing the group kills the whole "node"
//! (agent and postmaster together). PostgreSQL's tools refuse root: as
//! root they run as `postgres` (`runuser`; the agent's `run_as`).
//!
//! Shared by the failover test and `keel bench failover --postgres`.

#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where PostgreSQL 15's programs are.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The token the agents want on failover actions, and the controller sends.
pub const AGENT_TOKEN: &str = "pg-cluster-agent-token-0123";

/// One member.
pub struct Node {
    /// Its name (`pg-1`…), also its `application_name`.
    pub name: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// Its agent's port.
    pub agent_port: u16,
    /// Its data directory.
    pub data: PathBuf,
    agent: Option<Child>,
}

/// The cluster.
pub struct Cluster {
    /// The temp directory everything is in.
    pub dir: PathBuf,
    /// The members; the first starts as primary.
    pub nodes: Vec<Node>,
    keel: PathBuf,
    root: bool,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    keel_testkit::free_port().unwrap_or(0)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Run a PostgreSQL program (as `postgres` when root); its stdout.
pub fn pg_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let path = format!("{BIN}/{program}");
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(&path)
    };
    let out = c
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this machine has PostgreSQL 15's programs.
pub fn available() -> bool {
    Path::new(BIN).join("initdb").exists() && Path::new(BIN).join("pg_rewind").exists()
}

impl Cluster {
    /// `n` members under a new temp directory: `pg-1` initialised and
    /// started as primary, the others base-backed-up from it and started
    /// as its standbys. `extra` lines go into every member's
    /// `postgresql.conf` (`synchronous_standby_names` for synchronous mode).
    pub fn create(keel: &Path, n: usize, extra: &[String]) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "keel-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let root = is_root();
        if root {
            chown_postgres(&dir)?;
        }
        let mut me = Self {
            dir: dir.clone(),
            nodes: Vec::new(),
            keel: keel.to_owned(),
            root,
        };
        for i in 1..=n {
            me.nodes.push(Node {
                name: format!("pg-{i}"),
                port: free_port(),
                agent_port: free_port(),
                data: dir.join(format!("pg-{i}")),
                agent: None,
            });
        }
        let primary = me.nodes[0].data.to_string_lossy().into_owned();
        pg_tool(
            "initdb",
            &[
                "-D",
                &primary,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", dir.display()),
            "wal_level = replica".into(),
            "max_wal_senders = 10".into(),
            "max_replication_slots = 10".into(),
            "wal_keep_size = '512MB'".into(),
            "hot_standby = on".into(),
            // pg_rewind needs hint bits WAL-logged (or data checksums).
            "wal_log_hints = on".into(),
            "wal_receiver_status_interval = 1s".into(),
            // A standby whose primary is gone retries every 5 s by default,
            // and a promotion or a new primary_conninfo can wait that out.
            "wal_retrieve_retry_interval = '500ms'".into(),
            "shared_buffers = '32MB'".into(),
            "fsync = on".into(),
        ];
        conf.extend(extra.iter().cloned());
        let conf_path = me.nodes[0].data.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(|e| format!("{}: {e}", conf_path.display()))?;
        writeln!(f, "\n# keel test cluster\n{}", conf.join("\n"))
            .map_err(|e| format!("{}: {e}", conf_path.display()))?;
        me.start_agent(0, "always")?;
        for i in 1..n {
            let (name, data) = (me.nodes[i].name.clone(), me.nodes[i].data.clone());
            let conninfo = format!(
                "host=127.0.0.1 port={} user=postgres application_name={name}",
                me.nodes[0].port
            );
            pg_tool(
                "pg_basebackup",
                &[
                    "-d",
                    &conninfo,
                    "-D",
                    &data.to_string_lossy(),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ],
            )?;
            me.start_agent(i, "standby")?;
        }
        Ok(me)
    }

    /// Start member `i`'s agent (its own process group) with the start
    /// policy `start`, and wait until it answers.
    pub fn start_agent(&mut self, i: usize, start: &str) -> Result<(), String> {
        let node = &self.nodes[i];
        let cfg = self.dir.join(format!("agent-{}.yaml", node.name));
        let yaml = format!(
            "agent:\n  collector: http://127.0.0.1:9\n  data_dir: {dir}/agent-{name}\n  listen: 127.0.0.1:{ap}\n  otlp_receiver: \"\"\n  host_metrics: {{enabled: false}}\n  failover:\n    member: {name}\n    data_directory: {data}\n    bin_directory: {BIN}\n    port: {port}\n    run_as: \"{run_as}\"\n    start: {start}\n    token: {AGENT_TOKEN}\n",
            dir = self.dir.display(),
            name = node.name,
            ap = node.agent_port,
            data = node.data.display(),
            port = node.port,
            run_as = if self.root { "postgres" } else { "" },
        );
        std::fs::write(&cfg, yaml).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("agent-{}.log", node.name)))
            .map_err(|e| e.to_string())?;
        // As root, each node gets a PID namespace of its own (the agent its
        // init): killing it kills every process of the node at once, as a
        // machine dying would, and leaves no zombie behind. Otherwise a
        // process group (backends, which PostgreSQL puts in sessions of
        // their own, exit when they see the postmaster gone).
        let mut cmd = if self.root {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(&self.keel);
            c
        } else {
            Command::new(&self.keel)
        };
        let child = cmd
            .args(["--config", &cfg.to_string_lossy(), "agent", "run"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("keel agent: {e}"))?;
        self.nodes[i].agent = Some(child);
        let url = format!(
            "http://127.0.0.1:{}/api/v1/failover/state",
            self.nodes[i].agent_port
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(body) = http_get(&url) {
                let running = body.contains("\"running\":true");
                if start == "never"
                    || running
                    || (start == "standby" && !self.nodes[i].data.join("standby.signal").exists())
                {
                    return Ok(());
                }
            }
            if let Some(c) = self.nodes[i].agent.as_mut()
                && let Ok(Some(s)) = c.try_wait()
            {
                return Err(format!(
                    "{}'s agent exited: {s}; see {}",
                    self.nodes[i].name,
                    self.dir
                        .join(format!("agent-{}.log", self.nodes[i].name))
                        .display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}'s agent did not start its postgres in 90 s",
                    self.nodes[i].name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill member `i`'s whole node: its process group (`unshare`, the
    /// agent — its namespace's init, whose death takes every process in
    /// it — and the postmaster), then reap it.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].agent.take() {
            kill_node(c);
        }
    }

    /// The pid, as this process sees it, of member `i`'s process that
    /// PostgreSQL reports as `pid` (a pid in the node's namespace).
    pub fn host_pid(&self, i: usize, pid: i32) -> Option<i32> {
        let agent = self.nodes[i].agent.as_ref()?.id();
        if !self.root {
            return Some(pid);
        }
        // The namespace's init is unshare's only child.
        let init = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).ok()?;
        let init: i32 = init.split_whitespace().next()?.parse().ok()?;
        let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).ok()?;
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let host: i32 = e.file_name().to_str()?.parse().ok()?;
            if std::fs::read_link(format!("/proc/{host}/ns/pid")).ok()? != ns {
                return None;
            }
            let status = std::fs::read_to_string(format!("/proc/{host}/status")).ok()?;
            let inner: i32 = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .last()?
                .parse()
                .ok()?;
            (inner == pid).then_some(host)
        })
    }

    /// A `postgres` failover target over every member (shipped probe
    /// settings; no anti-flapping, since kills follow each other closely).
    pub fn target(
        &self,
        mode: keel_controller::failover::Mode,
    ) -> keel_controller::failover::FailoverConfig {
        use keel_controller::failover::{DriverConfig, FailoverConfig, Member};
        FailoverConfig {
            name: "pg".into(),
            driver: DriverConfig::Postgres {},
            members: (0..self.nodes.len())
                .map(|i| Member {
                    dsn: Some(self.dsn(i)),
                    agent: Some(self.agent_url(i)),
                    ..Member::named(&self.nodes[i].name)
                })
                .collect(),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            failure_threshold: 3,
            maximum_lag_on_failover: 1 << 20,
            maximum_lag_seconds_on_failover: Duration::from_secs(30),
            mode,
            synchronous_replicas: 1,
            anti_flapping: Duration::ZERO,
            repoint: None,
            pause_policies: Vec::new(),
            agent_token: keel_core::secret::Secret::new(AGENT_TOKEN),
            agent_token_file: Default::default(),
            agent_tls: Default::default(),
        }
    }

    /// Member `i`'s `postgres://` URL.
    pub fn dsn(&self, i: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.nodes[i].port
        )
    }

    /// The index of the member called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Member `i`'s agent.
    pub fn agent_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].agent_port)
    }

    /// The libpq multi-host connection string an application uses: every
    /// member, the one taking writes chosen by libpq.
    pub fn libpq_conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2",
            vec!["127.0.0.1"; self.nodes.len()].join(","),
            self.nodes
                .iter()
                .map(|n| n.port.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// Run SQL on member `i` with `psql`; its output.
    pub fn psql(&self, i: usize, sql: &str) -> Result<String, String> {
        psql_on(self.nodes[i].port, sql)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        if std::env::var_os("KEEL_KEEP_PG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kill a node started as `child` (`unshare` or the program itself, in a
/// process group of its own). Under `unshare`: SIGKILL its PID
/// namespace's init, whose death takes every process in the namespace
/// (even those in sessions of their own), and wait for `unshare`, which
/// exits only once its child — so the whole namespace — is gone.
/// Otherwise SIGKILL the process group.
pub fn kill_node(mut child: Child) {
    let pid = child.id() as i32;
    let init = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|k| {
            k.split_whitespace()
                .next()
                .and_then(|k| k.parse::<i32>().ok())
        });
    match init {
        Some(init) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        None => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = child.wait();
}

/// Run SQL with `psql` on the server at 127.0.0.1:`port`; its output.
pub fn psql_on(port: u16, sql: &str) -> Result<String, String> {
    let port = port.to_string();
    pg_tool(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
    )
    .map(|s| s.trim().to_owned())
}

pub fn chown_postgres(p: &Path) -> Result<(), String> {
    let u = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or("there is no postgres user")?;
    nix::unistd::chown(p, Some(u.uid), Some(u.gid))
        .map_err(|e| format!("chown {}: {e}", p.display()))
}

/// GET `url` (plain HTTP on loopback, 2 s); the body of a 2xx answer.
pub fn http_get(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).map_err(|e| e.to_string())?;
    let ok = body
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    let payload = body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    if ok { Ok(payload) } else { Err(payload) }
}

/// The writer: `pg_writer.py` under Debian's Python (psycopg2), what it
/// printed collected on a thread.
pub struct Writer {
    child: Child,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every commit acknowledged and every failed attempt, in the order
    /// the writer printed them.
    lines: std::sync::Arc<std::sync::Mutex<Vec<Line>>>,
}

/// One line the writer printed.
#[derive(Debug, Clone)]
pub enum Line {
    /// A commit acknowledged: its id, and when (unix ms).
    Ack(u64, i64),
    /// A failed attempt: when (unix ms), and why.
    Err(i64, String),
}

impl Line {
    /// `ack ID MS` or `err MS MESSAGE`.
    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(3, ' ');
        match (parts.next()?, parts.next()?, parts.next()) {
            ("ack", id, Some(ms)) => Some(Line::Ack(id.parse().ok()?, ms.parse().ok()?)),
            ("err", ms, msg) => Some(Line::Err(ms.parse().ok()?, msg.unwrap_or("").to_owned())),
            _ => None,
        }
    }
}

/// The writer's source, shipped in the binary for the benchmark.
pub const WRITER_PY: &str = include_str!("../../../src/pg_writer.py");

impl Writer {
    /// Start writing ids from `first` into `table` through `conninfo`.
    pub fn start(dir: &Path, conninfo: &str, table: &str, first: u64) -> Result<Self, String> {
        let script = dir.join("pg_writer.py");
        std::fs::write(&script, WRITER_PY).map_err(|e| e.to_string())?;
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .args([conninfo, table, &first.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("/usr/bin/python3: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(line) = Line::parse(&line) {
                    l.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            }
        });
        Ok(Self {
            child,
            reader: Some(reader),
            lines,
        })
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<Line>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first failure at or after `ms`.
    pub fn first_error_after(&self, ms: i64) -> Option<(i64, String)> {
        self.lines().iter().find_map(|l| match l {
            Line::Err(t, e) if *t >= ms => Some((*t, e.clone())),
            _ => None,
        })
    }

    /// Every acknowledgement so far: (id, unix ms).
    pub fn acks(&self) -> Vec<(u64, i64)> {
        self.lines()
            .iter()
            .filter_map(|l| match l {
                Line::Ack(id, t) => Some((*id, *t)),
                Line::Err(..) => None,
            })
            .collect()
    }

    /// How many commits were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| matches!(l, Line::Ack(..)))
            .count()
    }

    /// The first acknowledgement printed after the first failure at or
    /// after `ms` (a commit the dying primary acknowledged as it was
    /// killed, even in the same millisecond as the failure, is not the
    /// new primary's: the writer's lines are in the order it printed them).
    pub fn first_ack_after_outage(&self, ms: i64) -> Option<(u64, i64)> {
        let lines = self.lines();
        let failed = lines
            .iter()
            .position(|l| matches!(l, Line::Err(t, _) if *t >= ms))?;
        lines[failed + 1..].iter().find_map(|l| match l {
            Line::Ack(id, t) => Some((*id, *t)),
            Line::Err(..) => None,
        })
    }

    /// Stop it (close its stdin) and wait; every id it had acknowledged.
    pub fn stop(mut self) -> Vec<u64> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its stdout is closed now: the reader has every line.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.acks().into_iter().map(|(id, _)| id).collect()
    }
}

/// The ids of `acked` that `table` on member `i` lacks.
pub fn missing(c: &Cluster, i: usize, table: &str, acked: &[u64]) -> Result<Vec<u64>, String> {
    missing_on(c.nodes[i].port, table, acked)
}

/// The ids of `acked` that `table` on the server at `port` lacks.
pub fn missing_on(port: u16, table: &str, acked: &[u64]) -> Result<Vec<u64>, String> {
    let have: std::collections::HashSet<u64> = psql_on(port, &format!("SELECT id FROM {table}"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    Ok(acked
        .iter()
        .copied()
        .filter(|id| !have.contains(id))
        .collect())
}
