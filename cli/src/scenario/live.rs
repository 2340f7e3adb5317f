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
pub const SCENARIO_LOGS: &str = "level:error OR level:warn";

/// Where the running app and collector answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The collector's API.
    pub collector: String,
    /// The sample app's supervisor API.
    pub supervisor: String,
    /// The shop API (the lb).
    pub shop: String,
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
    let v: J = r.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            v["error"].as_str().unwrap_or("(no reason given)")
        );
    }
    Ok(v)
}

/// Check every fault's target against the running app: a process name,
/// a tier that has processes, or `db:primary`/`db:replica`; the fault
/// must suit the tier. Every problem, with the scenario's file:line.
pub fn check_targets(s: &Scenario, procs: &[ProcInfo]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let file = s.path.display();
    for (line, target, kind) in s.targets() {
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
        t.push(((f.at + f.lasts.unwrap_or(end)).min(end), false, i));
    }
    // Heals before applies at the same time; otherwise in file order.
    t.sort_by_key(|(at, apply, i)| (*at, *apply, *i));
    t
}

/// Talks to the supervisor for the faults.
struct Injector {
    http: reqwest::Client,
    sup: String,
    /// Web capacity before any fault, restored on heal.
    capacity: J,
    /// The processes each applied fault resolved to.
    resolved: BTreeMap<usize, Vec<String>>,
}

impl Injector {
    async fn processes(&self) -> anyhow::Result<Vec<ProcInfo>> {
        let v = call(self.http.get(format!("{}/api/v1/processes", self.sup))).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The process names `target` means now.
    async fn resolve(&self, target: &str) -> anyhow::Result<Vec<String>> {
        let procs = self.processes().await?;
        let primary = || async {
            let v = call(self.http.get(format!("{}/api/v1/db/topology", self.sup))).await?;
            anyhow::Ok(v["primary_name"].as_str().unwrap_or_default().to_owned())
        };
        Ok(match target {
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
        })
    }

    async fn capacity(&self, field: &str, value: J) -> anyhow::Result<()> {
        let mut cap = self.capacity.clone();
        cap[field] = value;
        call(
            self.http
                .put(format!("{}/api/v1/web/capacity", self.sup))
                .json(&cap),
        )
        .await
        .map(drop)
    }

    async fn faults(&self, name: &str, body: J) -> anyhow::Result<()> {
        call(
            self.http
                .put(format!("{}/api/v1/faults/{name}", self.sup))
                .json(&body),
        )
        .await
        .map(drop)
    }

    /// Apply fault `i`; a line saying what was done.
    async fn apply(&mut self, i: usize, f: &Fault) -> anyhow::Result<String> {
        let names = self.resolve(&f.target).await?;
        if names.is_empty() {
            bail!("{} names no running process now", f.target);
        }
        let dur = |d: &Duration| J::String(humantime::format_duration(*d).to_string());
        let field = |k: FaultKind| match k {
            FaultKind::Latency => "latency",
            FaultKind::QueryTime => "query_time",
            _ => "replica_lag",
        };
        let what = match (&f.kind, &f.value) {
            (FaultKind::Kill | FaultKind::Stop, _) => {
                let action = if f.kind == FaultKind::Kill {
                    "kill?restart=false"
                } else {
                    "stop"
                };
                for n in &names {
                    call(
                        self.http
                            .post(format!("{}/api/v1/processes/{n}/{action}", self.sup)),
                    )
                    .await
                    .with_context(|| format!("{} {n}", f.kind.name()))?;
                }
                String::new()
            }
            (FaultKind::ErrorRate, Value::Fraction(r)) => {
                self.capacity("error_rate", json!(r)).await?;
                format!(" {:.0} %", r * 100.0)
            }
            (FaultKind::ServiceTime, Value::Duration(d)) => {
                self.capacity("service_time", dur(d)).await?;
                format!(" {}", humantime::format_duration(*d))
            }
            (
                k @ (FaultKind::Latency | FaultKind::QueryTime | FaultKind::ReplicaLag),
                Value::Duration(d),
            ) => {
                for n in &names {
                    self.faults(n, json!({ field(*k): dur(d) })).await?;
                }
                format!(" {}", humantime::format_duration(*d))
            }
            (FaultKind::Partition, Value::Peers(peers)) => {
                let mut cut = Vec::new();
                for p in peers {
                    cut.extend(self.resolve(p).await?);
                }
                for n in &names {
                    call(
                        self.http
                            .put(format!("{}/api/v1/faults/partition", self.sup))
                            .json(&json!({"member": n, "peers": cut})),
                    )
                    .await?;
                }
                format!(" from {}", cut.join(", "))
            }
            (k, v) => bail!("{} cannot take {v:?}", k.name()),
        };
        let line = format!("{} {}{what}", f.kind.name(), names.join(", "));
        self.resolved.insert(i, names);
        Ok(line)
    }

    /// Heal fault `i` (a no-op when it never applied).
    async fn heal(&mut self, i: usize, f: &Fault) -> anyhow::Result<Option<String>> {
        let Some(names) = self.resolved.remove(&i) else {
            return Ok(None);
        };
        match f.kind {
            FaultKind::Kill | FaultKind::Stop => {
                for n in &names {
                    let procs = self.processes().await?;
                    if procs.iter().any(|p| p.name == *n && p.pid.is_none()) {
                        call(
                            self.http
                                .post(format!("{}/api/v1/processes/{n}/start", self.sup)),
                        )
                        .await
                        .with_context(|| format!("start {n}"))?;
                    }
                }
            }
            FaultKind::ErrorRate => {
                let v = self.capacity["error_rate"].clone();
                self.capacity("error_rate", v).await?
            }
            FaultKind::ServiceTime => {
                let v = self.capacity["service_time"].clone();
                self.capacity("service_time", v).await?
            }
            k @ (FaultKind::Latency | FaultKind::QueryTime | FaultKind::ReplicaLag) => {
                let field = match k {
                    FaultKind::Latency => "latency",
                    FaultKind::QueryTime => "query_time",
                    _ => "replica_lag",
                };
                for n in &names {
                    // A process restarted since has no faults to heal.
                    if let Err(e) = self.faults(n, json!({ field: "0s" })).await {
                        eprintln!("  (could not heal {field} on {n}: {e:#})");
                    }
                }
            }
            FaultKind::Partition => {
                for n in &names {
                    call(
                        self.http
                            .put(format!("{}/api/v1/faults/partition", self.sup))
                            .json(&json!({"member": n, "peers": []})),
                    )
                    .await?;
                }
            }
        }
        Ok(Some(format!(
            "healed {} {}",
            f.kind.name(),
            names.join(", ")
        )))
    }
}

/// Play `s` live against `ep`: check its targets, then drive the load
/// (through `target`) and the faults, healing each at its end.
pub async fn play(s: &Scenario, ep: &Endpoints, target: Arc<dyn Target>) -> anyhow::Result<Played> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut inj = Injector {
        http: http.clone(),
        sup: ep.supervisor.trim_end_matches('/').to_owned(),
        capacity: J::Null,
        resolved: BTreeMap::new(),
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
    call(http.get(format!("{collector}/api/v1/incidents")))
        .await
        .with_context(|| format!("the collector at {collector}"))?;
    inj.capacity = call(http.get(format!("{}/api/v1/web/capacity", inj.sup))).await?;

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
    let mut failures = Vec::new();
    for (at, apply, i) in timeline(s) {
        clock.sleep_until(start + at).await;
        let f = &s.faults[i];
        let done = if apply {
            inj.apply(i, f).await.map(Some)
        } else {
            inj.heal(i, f).await
        };
        let t = clock.now().duration_since(start).unwrap_or_default();
        match done {
            Ok(Some(line)) => eprintln!("  +{:>4.1}s {line}", t.as_secs_f64()),
            Ok(None) => {}
            Err(e) => {
                let e = format!(
                    "{}:{}: {} {}: {e:#}",
                    s.path.display(),
                    f.line,
                    if apply { "applying" } else { "healing" },
                    f.kind.name()
                );
                eprintln!("  +{:>4.1}s {e}", t.as_secs_f64());
                failures.push(e);
            }
        }
    }
    let report = load_task.await.context("the load generator")?;
    eprintln!(
        "  load done: sent {}, ok {}, errors {}, p95 {:.0} ms",
        report.sent, report.ok, report.errors, report.latency_ms.p95
    );
    if !failures.is_empty() {
        bail!(
            "{} fault action(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(Played {
        started_ms,
        ended_ms: unix_ms(clock.now()),
        load: report,
    })
}

/// Wait for the run's data to reach the collector, record its window as
/// bundle `name` (the incident starting at the scenario's `start`), and
/// download it.
pub async fn record(
    s: &Scenario,
    ep: &Endpoints,
    name: &str,
    played: &Played,
) -> anyhow::Result<Vec<u8>> {
    let http = reqwest::Client::builder()
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
                // Every warning and error, no spans: what replay and an operator
                // need, at a tenth of the size (successful requests' access lines
                // are most of a bundle).
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

/// Wait until the collector holds a scrape from after `end_ms` (every
/// sample of the run has then arrived), at most a minute.
async fn wait_for_data(http: &reqwest::Client, collector: &str, end_ms: i64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let url = format!("{collector}/api/v1/query");
    loop {
        let v = call(
            http.get(&url)
                .query(&[("query", "min(timestamp(up{job=~\"shop-.*\"}))")]),
        )
        .await
        .unwrap_or_default();
        let t = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok());
        if t.is_some_and(|t| (t * 1000.0) as i64 > end_ms) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the collector has no scrape of the sample app after the run's end within a minute"
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
            "load: {profile: steady, rps: 5, duration: 60s}\nfaults:\n  - {at: 1s, fault: kill, target: db-9}\n  - {at: 2s, fault: query_time, target: cache, value: 1s}\n  - {at: 3s, fault: kill, target: db:primary, for: 5s}\n  - {at: 4s, fault: partition, target: db-2, value: [db:primary, nosuch]}\nexpect: [no failover]\n",
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
