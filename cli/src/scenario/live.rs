//! Running a scenario against a running `keel up`: the load from this
//! process, each fault through the supervisor's API at its time (and
//! healed after it), then the window recorded as an incident bundle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keel_core::clock::{SharedClock, SystemClock, unix_ms};
use keel_sampleapp::load::{self, RunOptions, Target};
use keel_sampleapp::supervisor::ProcInfo;
use serde_json::{Value as J, json};

use super::file::{Fault, FaultKind, Scenario, Value};

/// The log records a scenario's bundle keeps.
pub const SCENARIO_LOGS: &str = "level:fatal OR level:error OR level:warn";

/// Where the running app and collector answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The collector's API.
    pub collector: String,
    /// The sample app's supervisor API.
    pub supervisor: String,
    /// Its token (`sampleapp.supervisor.token`), when it wants one.
    pub supervisor_token: Option<String>,
    /// The shop API (the lb).
    pub shop: String,
}

/// The first line of a token file (as `keel up` writes the supervisor's).
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    keel_core::secret::Secret::default()
        .token_or_file(path, "supervisor-token")
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("{}: the file holds no token", path.display()))
}

/// What playing a scenario did.
#[derive(Debug)]
pub struct Played {
    /// The load's start (ms).
    pub started_ms: i64,
    /// When the last fault was healed and the load done (ms).
    pub ended_ms: i64,
    /// The load generator's summary.
    pub load: load::Report,
}

async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<J> {
    let r = req.send().await?;
    let status = r.status();
    let text = r.text().await?;
    let v: Result<J, _> = serde_json::from_str(&text);
    if !status.is_success() {
        let why = v.ok().and_then(|v| v["error"].as_str().map(str::to_owned));
        bail!("HTTP {status}: {}", why.unwrap_or(text));
    }
    v.with_context(|| format!("an answer that is not JSON: {text:.200}"))
}

/// Check every fault's target against the running app: a process name,
/// a tier that has processes, or `db:primary`/`db:replica`; the fault
/// must suit the tier. Every problem, with the scenario's file:line.
pub fn check_targets(s: &Scenario, procs: &[ProcInfo]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let file = s.path.display();
    for (line, target, kind) in s.targets() {
        if target == keel_controller::failover::driver::PEER && kind == FaultKind::Partition {
            continue; // the failover controller's probes: a partition peer
        }
        let tier = match target {
            "db:primary" | "db:replica" => Some("db"),
            t => procs
                .iter()
                .find(|p| p.name == t || p.tier == t)
                .map(|p| p.tier.as_str()),
        };
        match tier {
            None => problems.push(format!(
                "{file}:{line}: target {target:?} is no process or tier of the running app (processes: {}; tiers: lb, web, cache, db; or db:primary, db:replica)",
                procs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Some(t) if !kind.tiers().contains(&t) => problems.push(format!(
                "{file}:{line}: {} applies to {} processes, and {target:?} is {t}",
                kind.name(),
                kind.tiers().join(" or ")
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The faults' actions: each fault applied at `at` and healed at its end.
fn timeline(s: &Scenario) -> Vec<(Duration, bool, usize)> {
    let end = s.length();
    let mut t: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in s.faults.iter().enumerate() {
        t.push((f.at, true, i));
        let until = f.lasts.map_or(end, |d| f.at.saturating_add(d));
        t.push((until.min(end), false, i));
    }
    // Heals before applies at the same time; otherwise in file order.
    t.sort_by_key(|(at, apply, i)| (*at, *apply, *i));
    t
}

/// Talks to the supervisor for the faults, and remembers what it did so
/// that everything applied is healed, whatever happens.
struct Injector {
    http: reqwest::Client,
    sup: String,
    /// Web capacity before any fault: a healed field gets its value back.
    baseline: J,
    /// The processes each fault was applied to so far (a fault that
    /// failed halfway keeps those it reached, to be healed).
    applied: BTreeMap<usize, Vec<String>>,
    /// The members each partition cut its targets from.
    peers: BTreeMap<usize, Vec<String>>,
}

impl Injector {
    async fn processes(&self) -> anyhow::Result<Vec<ProcInfo>> {
        let v = call(self.http.get(format!("{}/api/v1/processes", self.sup))).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The process names `target` means now (none is an error).
    async fn resolve(&self, target: &str) -> anyhow::Result<Vec<String>> {
        let procs = self.processes().await?;
        let primary = || async {
            let v = call(self.http.get(format!("{}/api/v1/db/topology", self.sup))).await?;
            match v["primary_name"].as_str() {
                Some(p) if !p.is_empty() => anyhow::Ok(p.to_owned()),
                _ => bail!("the supervisor names no db primary"),
            }
        };
        let names: Vec<String> = match target {
            "db:primary" => vec![primary().await?],
            "db:replica" => {
                let p = primary().await?;
                procs
                    .iter()
                    .filter(|x| x.tier == "db" && x.name != p && x.pid.is_some())
                    .map(|x| x.name.clone())
                    .take(1)
                    .collect()
            }
            t => procs
                .iter()
                .filter(|p| p.name == t || p.tier == t)
                .map(|p| p.name.clone())
                .collect(),
        };
        if names.is_empty() {
            bail!("{target} names no running process now");
        }
        Ok(names)
    }

    /// Set one web capacity field, keeping the others as they are now.
    async fn capacity(&self, field: &str, value: J) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/web/capacity", self.sup);
        let mut cap = call(self.http.get(&url)).await?;
        cap[field] = value;
        call(self.http.put(&url).json(&cap)).await.map(drop)
    }

    /// Apply (or heal) `f` on process `name`.
    async fn act(&self, i: usize, f: &Fault, name: &str, apply: bool) -> anyhow::Result<()> {
        let sup = &self.sup;
        match (f.kind, &f.value) {
            (FaultKind::Kill | FaultKind::Stop, _) if apply => {
                let action = if f.kind == FaultKind::Kill {
                    "kill?restart=false"
                } else {
                    "stop"
                };
                call(
                    self.http
                        .post(format!("{sup}/api/v1/processes/{name}/{action}")),
                )
                .await
                .map(drop)
            }
            (FaultKind::Kill | FaultKind::Stop, _) => {
                let down = self
                    .processes()
                    .await?
                    .iter()
                    .any(|p| p.name == name && p.pid.is_none());
                if down {
                    call(
                        self.http
                            .post(format!("{sup}/api/v1/processes/{name}/start")),
                    )
                    .await?;
                }
                Ok(())
            }
            (FaultKind::Partition, _) => {
                let peers = if apply {
                    self.peers.get(&i).cloned().unwrap_or_default()
                } else {
                    Vec::new()
                };
                call(
                    self.http
                        .put(format!("{sup}/api/v1/faults/partition"))
                        .json(&json!({"member": name, "peers": peers})),
                )
                .await
                .map(drop)
            }
            (k, Value::Duration(d)) => {
                let v = if apply {
                    humantime::format_duration(*d).to_string()
                } else {
                    "0s".into()
                };
                call(
                    self.http
                        .put(format!("{sup}/api/v1/faults/{name}"))
                        .json(&json!({ k.field(): v })),
                )
                .await
                .map(drop)
            }
            (k, v) => bail!("{} cannot take {v:?}", k.name()),
        }
    }

    /// Apply fault `i`; a line saying what was done.
    async fn apply(&mut self, i: usize, f: &Fault) -> anyhow::Result<String> {
        let amount = match &f.value {
            Value::None => String::new(),
            Value::Fraction(r) => format!(" {:.0} %", r * 100.0),
            Value::Duration(d) => format!(" {}", humantime::format_duration(*d)),
            Value::Peers(_) => String::new(),
        };
        if let (FaultKind::ErrorRate | FaultKind::ServiceTime, v) = (f.kind, &f.value) {
            let value = match v {
                Value::Fraction(r) => json!(r),
                Value::Duration(d) => json!(humantime::format_duration(*d).to_string()),
                _ => bail!("{} cannot take {v:?}", f.kind.name()),
            };
            self.capacity(f.kind.field(), value).await?;
            self.applied.insert(i, vec!["web".into()]);
            return Ok(format!("{} on the web tier{amount}", f.kind.name()));
        }
        let names = self.resolve(&f.target).await?;
        if let Value::Peers(peers) = &f.value {
            let mut cut = Vec::new();
            for p in peers {
                if p == keel_controller::failover::driver::PEER {
                    cut.push(p.clone());
                } else {
                    cut.extend(self.resolve(p).await?);
                }
            }
            self.peers.insert(i, cut);
        }
        for n in &names {
            self.act(i, f, n, true)
                .await
                .with_context(|| format!("{} {n}", f.kind.name()))?;
            self.applied.entry(i).or_default().push(n.clone());
        }
        let from = self
            .peers
            .get(&i)
            .map(|p| format!(" from {}", p.join(", ")))
            .unwrap_or_default();
        Ok(format!(
            "{} {}{amount}{from}",
            f.kind.name(),
            names.join(", ")
        ))
    }

    /// Heal fault `i` on everything it reached (a no-op when it reached
    /// nothing); every process is tried, and every failure reported.
    async fn heal(&mut self, i: usize, f: &Fault) -> anyhow::Result<Option<String>> {
        let Some(names) = self.applied.remove(&i) else {
            return Ok(None);
        };
        if matches!(f.kind, FaultKind::ErrorRate | FaultKind::ServiceTime) {
            let field = f.kind.field();
            self.capacity(field, self.baseline[field].clone()).await?;
            return Ok(Some(format!("healed {} on the web tier", f.kind.name())));
        }
        let mut failed = Vec::new();
        for n in &names {
            if let Err(e) = self.act(i, f, n, false).await {
                failed.push(format!("{n}: {e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("healing {}: {}", f.kind.name(), failed.join("; "));
        }
        Ok(Some(format!(
            "healed {} {}",
            f.kind.name(),
            names.join(", ")
        )))
    }
}

/// Play `s` live against `ep`: check its targets, then drive the load
/// (through `target`) and the faults, healing each at its end. A fault
/// that cannot be applied, or Ctrl-C, stops the run; whatever was
/// applied is healed before it returns, in every case.
pub async fn play(s: &Scenario, ep: &Endpoints, target: Arc<dyn Target>) -> anyhow::Result<Played> {
    // The faults go to the sample app's supervisor, with its own token
    // (never a Keel one).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(
            keel_tls::bearer(ep.supervisor_token.as_deref())
                .map_err(|e| anyhow::anyhow!("the supervisor's token: {e}"))?,
        )
        .build()?;
    let mut inj = Injector {
        http: http.clone(),
        sup: ep.supervisor.trim_end_matches('/').to_owned(),
        baseline: J::Null,
        applied: BTreeMap::new(),
        peers: BTreeMap::new(),
    };
    let collector = ep.collector.trim_end_matches('/').to_owned();
    let procs = inj
        .processes()
        .await
        .with_context(|| format!("the supervisor at {} (is keel up running?)", inj.sup))?;
    if let Err(problems) = check_targets(s, &procs) {
        bail!(
            "{}: {} problem(s) before anything started:\n  {}",
            s.path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    // The collector, with the user's KEEL_TOKEN when it wants a login.
    call(crate::api_client::client().get(format!("{collector}/api/v1/incidents")))
        .await
        .with_context(|| format!("the collector at {collector}"))?;
    inj.baseline = call(http.get(format!("{}/api/v1/web/capacity", inj.sup))).await?;

    let clock: SharedClock = Arc::new(SystemClock);
    let start = clock.now();
    let started_ms = unix_ms(start);
    eprintln!(
        "scenario {}: {} for {} ({:.0} requests), {} fault(s)",
        s.name,
        if s.description.is_empty() {
            "load"
        } else {
            &s.description
        },
        humantime::format_duration(s.length()),
        s.profile.expected_requests(),
        s.faults.len()
    );
    let opts = RunOptions {
        read_ratio: s.read_ratio,
        ..RunOptions::default()
    };
    let profile = s.profile.clone();
    let load_clock = clock.clone();
    let mut last = std::time::Instant::now();
    let load_task = tokio::spawn(async move {
        load::run(load_clock, &profile, target, opts, move |r| {
            if last.elapsed() >= Duration::from_secs(10) {
                last = std::time::Instant::now();
                eprintln!(
                    "  +{:>4.0}s load: sent {} ok {} errors {} | p99 {:.0} ms",
                    r.elapsed_s, r.sent, r.ok, r.errors, r.latency_ms.p99
                );
            }
        })
        .await
    });
    let at = |clock: &SharedClock| clock.now().duration_since(start).unwrap_or_default();
    // The faults at their times; the first that fails stops them.
    let steps = async {
        for (when, apply, i) in timeline(s) {
            clock.sleep_until(start + when).await;
            let f = &s.faults[i];
            let done = if apply {
                inj.apply(i, f).await.map(Some)
            } else {
                inj.heal(i, f).await
            };
            let t = at(&clock).as_secs_f64();
            match done {
                Ok(Some(line)) => eprintln!("  +{t:>4.1}s {line}"),
                Ok(None) => {}
                Err(e) => {
                    return Some(format!(
                        "{}:{}: {} {}: {e:#}",
                        s.path.display(),
                        f.line,
                        if apply { "applying" } else { "healing" },
                        f.kind.name()
                    ));
                }
            }
        }
        None
    };
    let stopped = tokio::select! {
        failed = steps => failed,
        _ = tokio::signal::ctrl_c() => Some("interrupted".to_owned()),
    };
    // Whatever is still applied (after a failure or Ctrl-C) is healed now.
    let mut unhealed = Vec::new();
    let left: Vec<usize> = inj.applied.keys().copied().collect();
    for i in left {
        match inj.heal(i, &s.faults[i]).await {
            Ok(Some(line)) => eprintln!("  +{:>4.1}s {line}", at(&clock).as_secs_f64()),
            Ok(None) => {}
            Err(e) => unhealed.push(format!("{e:#}")),
        }
    }
    if let Some(why) = stopped {
        load_task.abort();
        bail!(
            "scenario {} stopped: {why}{}",
            s.name,
            if unhealed.is_empty() {
                "; every fault applied was healed".to_owned()
            } else {
                format!("; NOT healed: {}", unhealed.join("; "))
            }
        );
    }
    if !unhealed.is_empty() {
        bail!("scenario {}: NOT healed: {}", s.name, unhealed.join("; "));
    }
    let report = load_task.await.context("the load generator")?;
    eprintln!(
        "  load done: sent {}, ok {}, errors {}, p95 {:.0} ms",
        report.sent, report.ok, report.errors, report.latency_ms.p95
    );
    Ok(Played {
        started_ms,
        ended_ms: unix_ms(clock.now()),
        load: report,
    })
}

/// Record the run's window as bundle `name` (the incident starting at the
/// scenario's `start`) once its data has reached the collector, and
/// download it.
pub async fn record(
    s: &Scenario,
    ep: &Endpoints,
    name: &str,
    played: &Played,
) -> anyhow::Result<Vec<u8>> {
    let http = crate::api_client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let collector = ep.collector.trim_end_matches('/');
    wait_for_data(&http, collector, played.ended_ms).await?;
    let incident_ms = played.started_ms + s.start.as_millis() as i64;
    eprintln!("  recording {name} …");
    let v = call(
        http.post(format!("{collector}/api/v1/incidents"))
            .json(&json!({
                "name": name, "from_ms": played.started_ms, "to_ms": played.ended_ms,
                "incident_ms": incident_ms, "reason": format!("scenario {}", s.name),
                // Every warning, error and fatal record, no spans: what replay
                // and an operator need, at a tenth of the size (successful
                // requests' access lines are most of a bundle).
                "logs": SCENARIO_LOGS, "spans": false,
            })),
    )
    .await
    .context("recording the bundle")?;
    let bytes = http
        .get(format!("{collector}/api/v1/incidents/{name}/bundle"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    eprintln!(
        "  {}: {} bytes",
        v["data"]["path"].as_str().unwrap_or(name),
        bytes.len()
    );
    Ok(bytes.to_vec())
}

/// Refuse a bundle name the collector would refuse, or has already,
/// before anything is played.
pub async fn check_name(ep: &Endpoints, name: &str) -> anyhow::Result<()> {
    keel_incident::check_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let collector = ep.collector.trim_end_matches('/');
    let list = call(crate::api_client::client().get(format!("{collector}/api/v1/incidents")))
        .await
        .with_context(|| format!("the collector at {collector}"))?;
    if list["data"]
        .as_array()
        .is_some_and(|l| l.iter().any(|b| b["name"] == name))
    {
        bail!("--name: the collector already has a bundle named {name:?}; pick another");
    }
    Ok(())
}

/// Wait until the collector holds a scrape from after `end_ms` (every
/// sample of the run has then arrived), at most a minute.
async fn wait_for_data(http: &reqwest::Client, collector: &str, end_ms: i64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let url = format!("{collector}/api/v1/query");
    loop {
        let answer = call(
            http.get(&url)
                .query(&[("query", "min(timestamp(up{job=~\"shop-.*\"}))")]),
        )
        .await;
        let t = answer.as_ref().ok().and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        });
        if t.is_some_and(|t| (t * 1000.0) as i64 > end_ms) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the collector has no scrape of the sample app after the run's end within a minute ({})",
                match answer {
                    Ok(_) => "its newest is older".to_owned(),
                    Err(e) => format!("{e:#}"),
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn proc(name: &str, tier: &str) -> ProcInfo {
        ProcInfo {
            name: name.into(),
            tier: tier.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: Some(1),
            state: keel_sampleapp::supervisor::ProcState::Running,
            restarts: 0,
            log_file: "x".into(),
        }
    }

    #[test]
    fn targets_are_checked_against_the_running_app_and_faults_against_tiers() {
        let s = Scenario::parse(
            Path::new("s.yaml"),
            "s.yaml",
            "load: {profile: steady, rps: 5, duration: 60s}\nfaults:\n  - {at: 1s, fault: kill, target: db-9}\n  - {at: 2s, fault: query_time, target: cache, value: 1s}\n  - {at: 3s, fault: kill, target: db:primary, for: 5s}\n  - {at: 4s, fault: partition, target: db-2, value: [db:primary, nosuch, keel-controller]}\nexpect: [no failover]\n",
        )
        .unwrap();
        let procs = [
            proc("db-1", "db"),
            proc("db-2", "db"),
            proc("cache-1", "cache"),
        ];
        let e = check_targets(&s, &procs).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("s.yaml:3: target \"db-9\""), "{e:?}");
        assert!(
            e[1].starts_with(
                "s.yaml:4: query_time applies to db processes, and \"cache\" is cache"
            ),
            "{e:?}"
        );
        assert!(e[2].starts_with("s.yaml:6: target \"nosuch\""), "{e:?}");
        let t = timeline(&s);
        assert_eq!(t[0], (Duration::from_secs(1), true, 0));
        assert!(
            t.contains(&(Duration::from_secs(8), false, 2)),
            "kill for 5s heals at 8s: {t:?}"
        );
        assert!(
            t.contains(&(Duration::from_secs(60), false, 0)),
            "no `for`: healed at the end"
        );
    }
}
