//! The scenario file: a load profile, timed faults and expectations.
//!
//! ```yaml
//! description: the web tier fails most requests for a minute
//! load:                       # a built-in profile with rps and duration,
//!   profile: steady           #   a profile file (relative to this one),
//!   rps: 60                   #   or inline `segments:` as in a profile file
//!   duration: 90s
//! start: 5s                   # when the incident begins (default: the first fault)
//! faults:
//!   - at: 5s                  # from the load's start
//!     fault: error_rate       # kill | stop | error_rate | service_time | latency
//!     target: web             #   | query_time | replica_lag | partition
//!     value: 0.9
//!     for: 70s                # then healed (default: at the end)
//! expect:                     # the `keel replay --assert` forms
//!   - P0 within 70s
//! ```
//!
//! Problems are reported all at once, each with its file:line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_core::config::{ConfigError, parse_yaml};
use keel_replay::expect::Expect;
use keel_sampleapp::load::profile::{ProfileFile, SegmentFile};
use keel_sampleapp::load::{Profile, ProfileKind};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The longest scenario: long enough for a `for: 1m` alert, short enough
/// to rehearse (and run in CI) often.
pub const MAX_LENGTH: Duration = Duration::from_secs(300);

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL, kept down until healed (a crash).
    Kill,
    /// SIGTERM, kept down until healed (a graceful stop).
    Stop,
    /// Web requests failed on purpose (a fraction).
    ErrorRate,
    /// Web service time per request.
    ServiceTime,
    /// Network latency before each cache or db request.
    Latency,
    /// Time added to every db query.
    QueryTime,
    /// A replica applies what it pulls only once it is this old.
    ReplicaLag,
    /// A db member stops answering the members named by `value`.
    Partition,
}

/// Every fault with its name in a scenario file.
const KINDS: [(FaultKind, &str); 8] = [
    (FaultKind::Kill, "kill"),
    (FaultKind::Stop, "stop"),
    (FaultKind::ErrorRate, "error_rate"),
    (FaultKind::ServiceTime, "service_time"),
    (FaultKind::Latency, "latency"),
    (FaultKind::QueryTime, "query_time"),
    (FaultKind::ReplicaLag, "replica_lag"),
    (FaultKind::Partition, "partition"),
];

impl FaultKind {
    fn parse(s: &str) -> Option<Self> {
        KINDS.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    /// Its name in a scenario file.
    pub fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("?", |(_, n)| n)
    }

    /// The tiers this fault applies to.
    pub fn tiers(self) -> &'static [&'static str] {
        match self {
            Self::Kill | Self::Stop => &["lb", "web", "cache", "db"],
            Self::ErrorRate | Self::ServiceTime => &["web"],
            Self::Latency => &["cache", "db"],
            Self::QueryTime | Self::ReplicaLag | Self::Partition => &["db"],
        }
    }

    /// The field the supervisor's API sets for it (web capacity, or a
    /// process's faults); its name for the others.
    pub fn field(self) -> &'static str {
        self.name()
    }
}

/// A fault's value once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// kill, stop.
    None,
    /// error_rate.
    Fraction(f64),
    /// service_time, latency, query_time, replica_lag.
    Duration(Duration),
    /// partition: the peers it is cut from (targets, resolved when it starts).
    Peers(Vec<String>),
}

/// One timed fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The line it is written on.
    pub line: u64,
    /// From the load's start.
    pub at: Duration,
    /// What it does.
    pub kind: FaultKind,
    /// A process (`db-2`), a tier (`web`: every process of it), or a db
    /// role (`db:primary`, `db:replica`), resolved when it starts.
    pub target: String,
    /// How much.
    pub value: Value,
    /// Healed this long after `at` (None: when the scenario ends).
    pub lasts: Option<Duration>,
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (the file's stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// One line saying what happens.
    pub description: String,
    /// The load.
    pub profile: Profile,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// When the incident begins, from the load's start.
    pub start: Duration,
    /// The faults, by time.
    pub faults: Vec<Fault>,
    /// What Keel should do, as written.
    pub expect: Vec<String>,
    /// The same, parsed.
    pub expectations: Vec<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    description: String,
    load: Spanned<LoadFile>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    faults: Vec<Spanned<FaultFile>>,
    #[serde(default)]
    expect: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadFile {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    rps: Option<f64>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    segments: Option<Vec<Spanned<SegmentFile>>>,
    #[serde(default)]
    read_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultFile {
    at: String,
    fault: String,
    target: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default, rename = "for")]
    lasts: Option<String>,
}

fn builtin(name: &str) -> Option<ProfileKind> {
    Some(match name {
        "steady" => ProfileKind::Steady,
        "ramp" => ProfileKind::Ramp,
        "diurnal" => ProfileKind::Diurnal,
        "spike" => ProfileKind::Spike,
        _ => return None,
    })
}

/// A duration of the scenario (at most [`MAX_LENGTH`]), or a problem.
fn duration(at: &str, s: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match keel_core::duration::parse(s) {
        Ok(d) if d <= MAX_LENGTH => Some(d),
        Ok(_) => {
            problems.push(format!(
                "{at}: {s} is longer than a scenario's {}",
                humantime::format_duration(MAX_LENGTH)
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
    }
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(path, &shown, &text)
    }

    /// Check scenario `text` read from `path` (shown as `shown`).
    pub fn parse(path: &Path, shown: &str, text: &str) -> Result<Self, ConfigError> {
        let f: ScenarioFile = parse_yaml(shown, text)?;
        let mut problems = Vec::new();
        let line = |l: u64| format!("{shown}:{l}");
        let load_at = format!("{}: load", line(f.load.referenced.line()));
        let (profile, file_ratio) =
            load_profile(path, shown, &f.load.value, &load_at, &mut problems);
        let read_ratio = f.load.value.read_ratio.or(file_ratio).unwrap_or(0.8);
        if !(0.0..=1.0).contains(&read_ratio) {
            problems.push(format!(
                "{load_at}.read_ratio: must be between 0 and 1, got {read_ratio}"
            ));
        }
        let length = profile.as_ref().map(Profile::duration);
        if let Some(l) = length
            && l > MAX_LENGTH
        {
            problems.push(format!(
                "{load_at}: the load lasts {}, more than a scenario's {}",
                humantime::format_duration(l),
                humantime::format_duration(MAX_LENGTH)
            ));
        }
        let mut faults = Vec::new();
        for (i, s) in f.faults.iter().enumerate() {
            let at = format!("{}: faults[{i}]", line(s.referenced.line()));
            if let Some(fault) =
                check_fault(&at, s.referenced.line(), &s.value, length, &mut problems)
            {
                faults.push(fault);
            }
        }
        faults.sort_by_key(|f| f.at);
        let start = match &f.start {
            Some(s) => {
                let at = format!("{}: start", line(s.referenced.line()));
                let d = duration(&at, &s.value, &mut problems);
                if let (Some(d), Some(l)) = (d, length)
                    && d >= l
                {
                    problems.push(format!("{at}: {} is not within the load's length", s.value));
                }
                d.unwrap_or_default()
            }
            None => faults.first().map(|f| f.at).unwrap_or_default(),
        };
        let mut expectations = Vec::new();
        for (i, e) in f.expect.iter().enumerate() {
            match Expect::parse(&e.value) {
                Ok(x) => expectations.push(x),
                Err(why) => problems.push(format!(
                    "{}: expect[{i}]: {}",
                    line(e.referenced.line()),
                    why.trim_start_matches("--assert ")
                )),
            }
        }
        if f.expect.is_empty() {
            problems.push(
                "expect: a scenario says what Keel should do (at least one expectation)".into(),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: shown.to_owned(),
                problems,
            });
        }
        let profile = profile.ok_or_else(|| ConfigError::Invalid {
            path: shown.to_owned(),
            problems: vec![format!("{load_at}: no load")],
        })?;
        Ok(Scenario {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into()),
            path: path.to_path_buf(),
            description: f.description,
            profile,
            read_ratio,
            start,
            faults,
            expect: f.expect.into_iter().map(|e| e.value).collect(),
            expectations,
        })
    }

    /// The load's length.
    pub fn length(&self) -> Duration {
        self.profile.duration()
    }

    /// The committed bundle beside the file: `NAME.keelinc`.
    pub fn bundle_path(&self) -> PathBuf {
        self.path.with_extension(keel_incident::bundle::EXTENSION)
    }

    /// Every target named, with the line naming it (for checking against
    /// the running app before anything starts).
    pub fn targets(&self) -> Vec<(u64, &str, FaultKind)> {
        let mut v = Vec::new();
        for f in &self.faults {
            v.push((f.line, f.target.as_str(), f.kind));
            if let Value::Peers(p) = &f.value {
                // A peer: any process, or the failover controller.
                v.extend(p.iter().map(|p| (f.line, p.as_str(), FaultKind::Partition)));
            }
        }
        v
    }
}

fn load_profile(
    path: &Path,
    shown: &str,
    l: &LoadFile,
    at: &str,
    problems: &mut Vec<String>,
) -> (Option<Profile>, Option<f64>) {
    match (&l.profile, &l.segments) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push(format!(
                "{at}: give either profile (steady, ramp, diurnal, spike or a profile file) or inline segments"
            ));
            (None, None)
        }
        (None, Some(segments)) => {
            if l.rps.is_some() || l.duration.is_some() {
                problems.push(format!(
                    "{at}: rps and duration apply to a built-in profile; segments set their own"
                ));
            }
            let file = ProfileFile {
                segments: segments.clone(),
                read_ratio: None,
            };
            match Profile::from_parsed(shown, file) {
                Ok(p) => (Some(p), None),
                Err(ConfigError::Invalid { problems: p, .. }) => {
                    // "line 7: segments[1].duration: …" → "file:7: load.segments[1]…"
                    problems.extend(p.into_iter().map(|p| match p.strip_prefix("line ") {
                        Some(rest) => match rest.split_once(": ") {
                            Some((n, what)) => format!("{shown}:{n}: load.{what}"),
                            None => format!("{at}: {p}"),
                        },
                        None => format!("{at}: load.{p}"),
                    }));
                    (None, None)
                }
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    (None, None)
                }
            }
        }
        (Some(name), None) => match builtin(name) {
            Some(kind) => {
                let rps = match l.rps {
                    Some(r) if r.is_finite() && r > 0.0 => Some(r),
                    Some(r) => {
                        problems.push(format!("{at}.rps: must be a positive rate, got {r}"));
                        None
                    }
                    None => {
                        problems.push(format!("{at}.rps: profile {name} needs a rate"));
                        None
                    }
                };
                let d = match &l.duration {
                    Some(d) => duration(&format!("{at}.duration"), d, problems).filter(|d| {
                        let ok = !d.is_zero();
                        if !ok {
                            problems.push(format!("{at}.duration: must be more than 0"));
                        }
                        ok
                    }),
                    None => {
                        problems.push(format!("{at}.duration: profile {name} needs a length"));
                        None
                    }
                };
                (rps.zip(d).map(|(r, d)| Profile::builtin(kind, r, d)), None)
            }
            None => {
                if l.rps.is_some() || l.duration.is_some() {
                    problems.push(format!(
                        "{at}: rps and duration apply to a built-in profile; a profile file sets its own"
                    ));
                }
                let file = path.parent().unwrap_or(Path::new(".")).join(name);
                match Profile::from_file(&file) {
                    Ok(p) => {
                        let r = p.read_ratio;
                        (Some(p), r)
                    }
                    Err(ConfigError::Read { .. }) => {
                        problems.push(format!(
                            "{at}.profile: {name:?} is not steady, ramp, diurnal or spike, and there is no file {}",
                            file.display()
                        ));
                        (None, None)
                    }
                    Err(e) => {
                        problems.push(format!("{at}.profile: {e}"));
                        (None, None)
                    }
                }
            }
        },
    }
}

fn check_fault(
    at: &str,
    line: u64,
    f: &FaultFile,
    length: Option<Duration>,
    problems: &mut Vec<String>,
) -> Option<Fault> {
    let n = problems.len();
    let kind = FaultKind::parse(&f.fault);
    if kind.is_none() {
        problems.push(format!(
            "{at}.fault: {:?} is not a fault; use one of {}",
            f.fault,
            KINDS.map(|(_, n)| n).join(", ")
        ));
    }
    let start = duration(&format!("{at}.at"), &f.at, problems);
    let lasts = f
        .lasts
        .as_deref()
        .and_then(|s| duration(&format!("{at}.for"), s, problems));
    if lasts.is_some_and(|d| d.is_zero()) {
        problems.push(format!("{at}.for: must be more than 0"));
    }
    if let (Some(s), Some(l)) = (start, length)
        && s >= l
    {
        problems.push(format!(
            "{at}.at: {} is not within the load's {}",
            f.at,
            humantime::format_duration(l)
        ));
    }
    if let (Some(s), Some(d), Some(l)) = (start, lasts, length)
        && s.saturating_add(d) > l
    {
        problems.push(format!(
            "{at}.for: it would end after the load's {} (leave `for` out to heal it when the load ends)",
            humantime::format_duration(l)
        ));
    }
    if f.target.trim().is_empty() {
        problems.push(format!(
            "{at}.target: name a process, a tier, db:primary or db:replica"
        ));
    }
    let value = kind.and_then(|k| check_value(at, k, f.value.as_ref(), problems));
    if problems.len() > n {
        return None;
    }
    Some(Fault {
        line,
        at: start?,
        kind: kind?,
        target: f.target.trim().to_owned(),
        value: value?,
        lasts,
    })
}

fn check_value(
    at: &str,
    kind: FaultKind,
    v: Option<&serde_json::Value>,
    problems: &mut Vec<String>,
) -> Option<Value> {
    use serde_json::Value as J;
    let name = kind.name();
    match (kind, v) {
        (FaultKind::Kill | FaultKind::Stop, None) => Some(Value::None),
        (FaultKind::Kill | FaultKind::Stop, Some(_)) => {
            problems.push(format!("{at}.value: {name} takes no value"));
            None
        }
        (FaultKind::ErrorRate, Some(J::Number(x))) => match x.as_f64() {
            Some(r) if (0.0..=1.0).contains(&r) => Some(Value::Fraction(r)),
            _ => {
                problems.push(format!(
                    "{at}.value: error_rate is a fraction between 0 and 1, got {x}"
                ));
                None
            }
        },
        (
            FaultKind::ServiceTime
            | FaultKind::Latency
            | FaultKind::QueryTime
            | FaultKind::ReplicaLag,
            Some(J::String(s)),
        ) => {
            let d = keel_core::duration::parse(s)
                .map_err(|e| problems.push(format!("{at}.value: {e}")))
                .ok()?;
            let max = if kind == FaultKind::ReplicaLag {
                keel_sampleapp::fault::MAX_APPLY_DELAY
            } else {
                keel_sampleapp::fault::MAX_DELAY
            };
            if d > max {
                problems.push(format!(
                    "{at}.value: {name} is at most {}, got {s}",
                    humantime::format_duration(max)
                ));
                return None;
            }
            Some(Value::Duration(d))
        }
        (FaultKind::Partition, Some(J::String(s))) => Some(Value::Peers(vec![s.clone()])),
        (FaultKind::Partition, Some(J::Array(a))) if !a.is_empty() => {
            let peers: Vec<String> = a
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            if peers.len() != a.len() {
                problems.push(format!(
                    "{at}.value: partition names peers (process names or db:primary)"
                ));
                return None;
            }
            Some(Value::Peers(peers))
        }
        (_, _) => {
            let want = match kind {
                FaultKind::ErrorRate => "a fraction between 0 and 1",
                FaultKind::Partition => {
                    "the members it is cut from (db:primary, or a list of names)"
                }
                _ => "a duration such as 500ms",
            };
            problems.push(format!("{at}.value: {name} needs {want}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(Path::new("incidents/x.yaml"), "x.yaml", text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_scenario_reads_with_its_faults_in_time_order() {
        let s = parse(
            "load: {profile: steady, rps: 50, duration: 60s}\nfaults:\n  - {at: 20s, fault: kill, target: db:primary, for: 10s}\n  - {at: 5s, fault: error_rate, target: web, value: 0.5}\nexpect: [P0 within 30s]\n",
        )
        .unwrap();
        assert_eq!(s.name, "x");
        assert_eq!(s.length(), Duration::from_secs(60));
        assert_eq!(s.faults[0].kind, FaultKind::ErrorRate);
        assert_eq!(s.faults[0].value, Value::Fraction(0.5));
        assert_eq!(s.faults[1].lasts, Some(Duration::from_secs(10)));
        assert_eq!(s.start, Duration::from_secs(5), "the first fault starts it");
        assert_eq!(s.bundle_path(), Path::new("incidents/x.keelinc"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let e = parse(
            "load:\n  profile: steady\n  rps: -1\nfaults:\n  - at: 100s\n    fault: explode\n    target: web\n  - at: 1s\n    fault: latency\n    target: cache\n    value: 0.5\n  - at: 1s\n    fault: error_rate\n    target: web\n    value: 2\nexpect:\n  - P0 eventually\n",
        )
        .unwrap_err();
        for want in [
            "x.yaml:2: load.rps: must be a positive rate",
            "x.yaml:2: load.duration: profile steady needs a length",
            "x.yaml:5: faults[0].fault: \"explode\" is not a fault",
            "x.yaml:8: faults[1].value: latency needs a duration",
            "x.yaml:12: faults[2].value: error_rate is a fraction",
            "x.yaml:17: expect[0]:",
        ] {
            assert!(e.contains(want), "{want:?} missing from:\n{e}");
        }
    }

    #[test]
    fn inline_segments_and_profile_files_are_checked_too() {
        let s = parse(
            "load:\n  segments:\n    - {duration: 10s, rps: 20}\n    - {duration: 5s, from: 20, to: 60}\n  read_ratio: 0.5\nexpect: [no failover]\n",
        )
        .unwrap();
        assert_eq!(s.length(), Duration::from_secs(15));
        assert_eq!(s.read_ratio, 0.5);
        let e = parse("load:\n  segments:\n    - {duration: 0s, rps: 20}\nexpect: [no failover]\n")
            .unwrap_err();
        assert!(e.contains("duration: must be more than 0"), "{e}");
        let e = parse("load: {profile: nosuch.yaml}\nexpect: [no failover]\n").unwrap_err();
        assert!(
            e.contains("x.yaml:1: load.profile: \"nosuch.yaml\" is not steady"),
            "{e}"
        );
        let e = parse("load: {profile: steady, rps: 5, duration: 10m}\nexpect: [no failover]\n")
            .unwrap_err();
        assert!(
            e.contains("x.yaml:1: load.duration: 10m is longer than a scenario's 5m"),
            "{e}"
        );
        let e = parse("load: {profile: steady, rps: 5, duration: 18446744073709551615s}\nexpect: [no failover]\n")
            .unwrap_err();
        assert!(e.contains("longer than a scenario's"), "no overflow: {e}");
        let e = parse("load:\n  segments:\n    - {duration: 10000000000000000000s, rps: 1}\n    - {duration: 10000000000000000000s, rps: 1}\nexpect: [no failover]\n")
            .unwrap_err();
        assert!(
            e.contains("more than a scenario's 5m"),
            "segments that overflow a sum: {e}"
        );
        let e = parse("load: {profile: steady, rps: 5, duration: 60s}\nfaults:\n  - {at: 50s, fault: kill, target: web, for: 18446744073709551615s}\nexpect: [no failover]\n")
            .unwrap_err();
        assert!(e.contains("x.yaml:3: faults[0].for:"), "{e}");
        let e = parse("load: {profile: steady, rps: 5, duration: 10s}\nbogus: 1\n").unwrap_err();
        assert!(
            e.contains("x.yaml:2"),
            "unknown fields are named with their line: {e}"
        );
    }
}
