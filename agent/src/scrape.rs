//! Scraping Prometheus endpoints, with Prometheus' labelling rules.
//!
//! Each target gets `job` (the scrape job) and `instance` (host:port of
//! its URL) plus the job's extra labels. A scraped label that collides
//! with one of those is kept as `exported_<name>` unless the job sets
//! `honor_labels`, which keeps the target's value instead. Every scrape
//! also yields Prometheus' report series — `up` (1 or 0),
//! `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling` and `scrape_series_added` — so
//! a target that times out, answers garbage or is gone shows `up 0`, and
//! the reason is logged and kept for `keel agent status`.
//!
//! Staleness, as Prometheus writes it: a series that was in the last
//! scrape and is not in this one (or every series, when this scrape
//! failed) gets a staleness marker at this scrape's time; when a target
//! goes away, its series and report series all do ([`end_of_run`]).
//! Samples the target stamped with their own time are not tracked.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde::Serialize;

use keel_series::histogram::{CUSTOM_SCHEMA, Histogram};

use crate::config::ScrapeJob;
use crate::exposition;

/// One target of a job.
#[derive(Debug, Clone)]
pub struct Target {
    /// The job's name.
    pub job: String,
    /// The metrics URL.
    pub url: String,
    /// host:port, the `instance` label.
    pub instance: String,
    /// How often it is scraped.
    pub interval: Duration,
    /// How long a scrape may take.
    pub timeout: Duration,
    /// Keep the target's labels on collisions.
    pub honor_labels: bool,
    /// The job's extra labels.
    pub labels: BTreeMap<String, String>,
    /// The Accept header its scrapes send ([`ScrapeJob::accept`]).
    pub accept: String,
    /// How its native histograms are read.
    pub native: exposition::NativeHistograms,
    /// Its limits on one scrape.
    pub limits: Limits,
}

/// Limits on one scrape (Prometheus' `body_size_limit`, `sample_limit`;
/// 0: none). Past either, the scrape fails: `up` 0, nothing stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of body.
    pub body_size: u64,
    /// Most samples.
    pub samples: usize,
}

impl Target {
    /// The targets of a job.
    pub fn of(job: &ScrapeJob) -> Vec<Target> {
        job.targets
            .iter()
            .map(|url| Target {
                job: job.job.clone(),
                url: url.clone(),
                instance: reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port_or_known_default() {
                            Some(p) => format!("{host}:{p}"),
                            None => host,
                        })
                    })
                    .unwrap_or_else(|| url.clone()),
                interval: job.interval,
                timeout: job.timeout,
                honor_labels: job.honor_labels,
                labels: job.labels.clone(),
                accept: job.accept(),
                native: job.native_histograms(),
                limits: job.scrape_limits(),
            })
            .collect()
    }

    /// The labels every series of this target carries.
    pub fn target_labels(&self) -> Vec<(String, String)> {
        let mut l = vec![
            ("job".to_owned(), self.job.clone()),
            ("instance".to_owned(), self.instance.clone()),
        ];
        l.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        l
    }
}

/// One series point ready to ship: labels (with `__name__`), time, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Sorted label pairs, `__name__` included.
    pub labels: Vec<(String, String)>,
    /// Milliseconds since the epoch.
    pub t_ms: i64,
    /// The value.
    pub value: f64,
    /// The exemplar the target gave with it, if any.
    pub exemplar: Option<exposition::Exemplar>,
    /// A native histogram: the point's value then is this, not `value`.
    pub histogram: Option<Box<Histogram>>,
}

/// The last scrape of a target, for status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// The target's URL.
    pub url: String,
    /// Its job.
    pub job: String,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// When it ran (ms since the epoch; 0: not yet).
    pub last_scrape_ms: i64,
    /// How long it took.
    pub duration_seconds: f64,
    /// Samples it returned.
    pub samples: usize,
    /// Lines it could not parse.
    pub invalid_lines: usize,
}

/// What one scrape got.
#[derive(Debug)]
pub struct Outcome {
    /// The samples (empty when the scrape failed).
    pub samples: Vec<exposition::Sample>,
    /// The reason it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
    /// Lines that could not be parsed, and the first few of them.
    pub invalid_lines: usize,
    /// The first unparseable lines (line number, why).
    pub first_invalid: Vec<(usize, String)>,
    /// The families' type, help and unit, as the target stated them.
    pub families: exposition::Families,
}

/// Scrape `t` once.
pub async fn scrape(client: &reqwest::Client, t: &Target) -> Outcome {
    let start = Instant::now();
    let got = async {
        let resp = client
            .get(&t.url)
            .header("Accept", &t.accept)
            .timeout(t.timeout)
            .send()
            .await
            .map_err(|e| describe(&e, t.timeout))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let format = exposition::Format::of_content_type(
            resp.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        // Read chunk by chunk, so a body past the limit is not all held.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, t.timeout))? {
            body.extend_from_slice(&chunk);
            if t.limits.body_size > 0 && body.len() as u64 > t.limits.body_size {
                return Err(format!(
                    "body larger than body_size_limit ({} bytes)",
                    t.limits.body_size
                ));
            }
        }
        Ok((body, format))
    }
    .await;
    let duration = start.elapsed();
    match got {
        Err(error) => Outcome {
            samples: Vec::new(),
            error: Some(error),
            duration,
            invalid_lines: 0,
            first_invalid: Vec::new(),
            families: exposition::Families::new(),
        },
        Ok((body, format)) => {
            let mut p = exposition::parse_body(&body, format, &t.native);
            let over = t.limits.samples > 0 && p.samples.len() > t.limits.samples;
            let error = if over {
                // Past the limit, the scrape fails and nothing is kept.
                let n = std::mem::take(&mut p.samples).len();
                Some(format!(
                    "{n} samples, more than sample_limit ({})",
                    t.limits.samples
                ))
            } else {
                // A body with lines but not one sample is not a metrics page.
                (p.samples.is_empty() && p.invalid_lines > 0).then(|| {
                    let (at, why) = p.first_invalid.first().cloned().unwrap_or_default();
                    format!(
                        "not {}: {} unparseable part(s), first at {} {at}: {why}",
                        format.name(),
                        p.invalid_lines,
                        format.position()
                    )
                })
            };
            Outcome {
                samples: p.samples,
                error,
                duration,
                invalid_lines: p.invalid_lines,
                first_invalid: p.first_invalid,
                families: p.families,
            }
        }
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {}", keel_core::duration::format(timeout))
    } else if e.is_connect() {
        format!("cannot connect: {}", keel_tls::describe(e))
    } else {
        keel_tls::describe(e)
    }
}

/// The series a target's last scrapes yielded, for staleness: by a hash
/// of the label set, the labels (`k\0v\0…`, compact: a target can have
/// tens of thousands) and the scrape that last saw it.
#[derive(Debug, Default)]
pub struct Staleness {
    seen: HashMap<u64, Seen>,
    scrape: u64,
}

/// A tracked series: its labels, the scrape that last saw it, and, for
/// a native histogram, its schema (its marker is a histogram's, with
/// custom buckets for one with custom buckets, so that it travels as the
/// series did).
#[derive(Debug)]
struct Seen {
    labels: String,
    scrape: u64,
    histogram: Option<i32>,
}

fn hash_labels(labels: &[(String, String)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

fn encode(labels: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in labels {
        s.push_str(k);
        s.push('\0');
        s.push_str(v);
        s.push('\0');
    }
    s
}

fn decode(s: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = s.split('\0').collect();
    parts
        .chunks_exact(2)
        .map(|kv| (kv[0].to_owned(), kv[1].to_owned()))
        .collect()
}

impl Staleness {
    /// Note this scrape's tracked series; returns how many are new.
    fn observe<'a>(&mut self, scraped: impl Iterator<Item = &'a Point>) -> usize {
        self.scrape += 1;
        let mut added = 0;
        for p in scraped {
            let histogram = p.histogram.as_ref().map(|h| h.schema);
            match self.seen.entry(hash_labels(&p.labels)) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let seen = e.get_mut();
                    seen.scrape = self.scrape;
                    seen.histogram = histogram;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Seen {
                        labels: encode(&p.labels),
                        scrape: self.scrape,
                        histogram,
                    });
                    added += 1;
                }
            }
        }
        added
    }

    /// Note every one of `points` as seen now; the markers at `now_ms`
    /// for series the previous call saw and this one did not (for
    /// collections that are not scrapes: the agent's host metrics).
    pub fn track(&mut self, points: &[Point], now_ms: i64) -> Vec<Point> {
        self.observe(points.iter());
        self.gone(now_ms)
    }

    /// Markers at `now_ms` for the series this scrape did not see, which
    /// are forgotten.
    fn gone(&mut self, now_ms: i64) -> Vec<Point> {
        let scrape = self.scrape;
        let mut out = Vec::new();
        self.seen.retain(|_, seen| {
            if seen.scrape == scrape {
                return true;
            }
            out.push(Point {
                labels: decode(&seen.labels),
                t_ms: now_ms,
                value: keel_core::stale::marker(),
                exemplar: None,
                histogram: seen.histogram.map(|schema| {
                    Box::new(Histogram {
                        schema: if schema == CUSTOM_SCHEMA { schema } else { 0 },
                        sum: keel_core::stale::marker(),
                        ..Histogram::default()
                    })
                }),
            });
            false
        });
        out
    }
}

/// The report series' names, in the order they are written.
const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The series points of one scrape of `t` at `now_ms`, with Prometheus'
/// labelling, staleness markers for the series that left (`stale` holds
/// what the last scrapes saw) and the report series. Takes the samples
/// out of `o` (their strings move, not copied: a scrape can be tens of
/// thousands of series).
pub fn points(t: &Target, o: &mut Outcome, stale: &mut Staleness, now_ms: i64) -> Vec<Point> {
    let target = t.target_labels();
    let n = if o.error.is_none() {
        o.samples.len()
    } else {
        0
    };
    let mut out = Vec::with_capacity(o.samples.len() + REPORT.len());
    // Whether each point is tracked for staleness (no time of its own).
    let mut tracked = Vec::with_capacity(o.samples.len());
    if o.error.is_none() {
        for s in o.samples.drain(..) {
            let mut labels: Vec<(String, String)> = Vec::with_capacity(s.labels.len() + 2);
            for (k, v) in s.labels {
                let clash = target.iter().any(|(tk, _)| *tk == k);
                if !clash || t.honor_labels {
                    labels.push((k, v));
                } else {
                    labels.push((format!("exported_{k}"), v));
                }
            }
            for (k, v) in &target {
                if !labels.iter().any(|(lk, _)| lk == k) {
                    labels.push((k.clone(), v.clone()));
                }
            }
            labels.retain(|(_, v)| !v.is_empty());
            labels.sort();
            tracked.push(s.timestamp_ms.is_none());
            out.push(Point {
                labels,
                t_ms: s.timestamp_ms.unwrap_or(now_ms),
                value: s.value,
                exemplar: s.exemplar,
                histogram: s.histogram,
            });
        }
    }
    let added = stale.observe(
        out.iter()
            .zip(&tracked)
            .filter(|(_, t)| **t)
            .map(|(p, _)| p),
    );
    out.extend(stale.gone(now_ms));
    let values = [
        if o.error.is_none() { 1.0 } else { 0.0 },
        o.duration.as_secs_f64(),
        n as f64,
        n as f64,
        added as f64,
    ];
    out.extend(report(&target, now_ms, values));
    out
}

/// The report series of `target` at `now_ms`, valued by `values`.
fn report(target: &[(String, String)], now_ms: i64, values: [f64; REPORT.len()]) -> Vec<Point> {
    REPORT
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut labels = target.to_vec();
            labels.push(("__name__".into(), (*name).into()));
            labels.sort();
            Point {
                labels,
                t_ms: now_ms,
                value,
                exemplar: None,
                histogram: None,
            }
        })
        .collect()
}

/// A target that went away: staleness markers at `now_ms` for every
/// series of its last scrape and for its report series.
pub fn end_of_run(t: &Target, stale: &mut Staleness, now_ms: i64) -> Vec<Point> {
    stale.scrape += 1;
    let mut out = stale.gone(now_ms);
    out.extend(report(
        &t.target_labels(),
        now_ms,
        [keel_core::stale::marker(); REPORT.len()],
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(honor: bool) -> Target {
        Target {
            job: "web".into(),
            url: "http://10.0.0.1:9100/metrics".into(),
            instance: "10.0.0.1:9100".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            honor_labels: honor,
            labels: BTreeMap::from([("tier".to_owned(), "web".to_owned())]),
            accept: ScrapeJob::default().accept(),
            native: exposition::NativeHistograms::default(),
            limits: Limits::default(),
        }
    }

    fn outcome(body: &str) -> Outcome {
        let p = exposition::parse(body);
        Outcome {
            samples: p.samples,
            error: None,
            duration: Duration::from_millis(20),
            invalid_lines: p.invalid_lines,
            first_invalid: p.first_invalid,
            families: p.families,
        }
    }

    fn get<'a>(p: &'a Point, k: &str) -> Option<&'a str> {
        p.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn colliding_labels_are_exported_unless_honoured() {
        let body = "reqs{job=\"inner\",instance=\"pod-1\",code=\"200\"} 5\n";
        let p = points(
            &target(false),
            &mut outcome(body),
            &mut Staleness::default(),
            1000,
        );
        assert_eq!(p.len(), 6);
        assert_eq!(get(&p[0], "job"), Some("web"));
        assert_eq!(get(&p[0], "exported_job"), Some("inner"));
        assert_eq!(get(&p[0], "instance"), Some("10.0.0.1:9100"));
        assert_eq!(get(&p[0], "exported_instance"), Some("pod-1"));
        assert_eq!(get(&p[0], "tier"), Some("web"));
        let p = points(
            &target(true),
            &mut outcome(body),
            &mut Staleness::default(),
            1000,
        );
        assert_eq!(get(&p[0], "job"), Some("inner"));
        assert_eq!(get(&p[0], "instance"), Some("pod-1"));
        assert_eq!(get(&p[0], "exported_job"), None);
        let up = p
            .iter()
            .find(|p| get(p, "__name__") == Some("up"))
            .expect("up");
        assert_eq!((up.value, get(up, "job")), (1.0, Some("web")));
    }

    #[test]
    fn a_failed_scrape_is_up_zero_with_no_samples() {
        let mut o = Outcome {
            samples: Vec::new(),
            error: Some("timed out after 1s".into()),
            duration: Duration::from_secs(1),
            invalid_lines: 0,
            first_invalid: Vec::new(),
            families: exposition::Families::new(),
        };
        let p = points(&target(false), &mut o, &mut Staleness::default(), 1000);
        let names: Vec<&str> = p.iter().filter_map(|p| get(p, "__name__")).collect();
        assert_eq!(names, REPORT);
        assert_eq!(p[0].value, 0.0);
        assert_eq!(p[2].value, 0.0);
    }

    /// (name, value) of each point, stale markers shown as "stale".
    fn seen(p: &[Point]) -> Vec<(String, String)> {
        p.iter()
            .map(|p| {
                let v = if keel_core::stale::is_stale(p.value) {
                    "stale".to_owned()
                } else {
                    p.value.to_string()
                };
                let name = get(p, "__name__").unwrap_or_default();
                let code = get(p, "code")
                    .map(|c| format!("{{{c}}}"))
                    .unwrap_or_default();
                (format!("{name}{code}"), v)
            })
            .collect()
    }

    #[test]
    fn series_that_leave_a_scrape_or_a_failed_scrape_are_marked_stale() {
        let t = target(false);
        let mut stale = Staleness::default();
        let first = "reqs{code=\"200\"} 1\nreqs{code=\"500\"} 2\nstamped 3 1000\n";
        let p = points(&t, &mut outcome(first), &mut stale, 1000);
        // Two new tracked series (the stamped one is not tracked).
        assert_eq!(seen(&p)[7], ("scrape_series_added".into(), "2".into()));
        // code="500" left: one marker at this scrape's time, nothing new.
        let p = points(&t, &mut outcome("reqs{code=\"200\"} 4\n"), &mut stale, 2000);
        let s = seen(&p);
        assert_eq!(s[1], ("reqs{500}".into(), "stale".into()));
        assert_eq!(p[1].t_ms, 2000);
        assert_eq!(s[6], ("scrape_series_added".into(), "0".into()));
        // It stays gone: no second marker.
        let p = points(&t, &mut outcome("reqs{code=\"200\"} 5\n"), &mut stale, 3000);
        assert!(!seen(&p).iter().any(|(_, v)| v == "stale"));
        // A failed scrape: every tracked series is stale, up is 0.
        let mut failed = Outcome {
            samples: Vec::new(),
            error: Some("cannot connect".into()),
            duration: Duration::from_millis(1),
            invalid_lines: 0,
            first_invalid: Vec::new(),
            families: exposition::Families::new(),
        };
        let p = points(&t, &mut failed, &mut stale, 4000);
        let s = seen(&p);
        assert_eq!(s[0], ("reqs{200}".into(), "stale".into()));
        assert_eq!(s[1], ("up".into(), "0".into()));
        assert_eq!(s.len(), 1 + REPORT.len());
        // Back: the series is new again.
        let p = points(&t, &mut outcome("reqs{code=\"200\"} 6\n"), &mut stale, 5000);
        assert_eq!(
            seen(&p).last(),
            Some(&("scrape_series_added".into(), "1".into()))
        );
        // The target goes away: its series and report series are stale.
        let p = end_of_run(&t, &mut stale, 6000);
        let s = seen(&p);
        assert_eq!(s.len(), 1 + REPORT.len());
        assert!(s.iter().all(|(_, v)| v == "stale"), "{s:?}");
        assert_eq!(get(&p[0], "job"), Some("web"));
    }

    #[test]
    fn a_native_histogram_that_leaves_gets_a_histogram_marker() {
        let t = target(false);
        let mut stale = Staleness::default();
        let h = |labels: &[(&str, &str)]| exposition::Sample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value: 0.0,
            timestamp_ms: None,
            exemplar: None,
            histogram: Some(Box::new(Histogram {
                count: 1.0,
                ..Histogram::default()
            })),
        };
        let mut o = outcome("up_like 1\n");
        o.samples.push(h(&[("__name__", "lat")]));
        let p = points(&t, &mut o, &mut stale, 1000);
        assert!(p.iter().any(|p| p.histogram.is_some()));
        let p = points(&t, &mut outcome("up_like 1\n"), &mut stale, 2000);
        let marker = p
            .iter()
            .find(|p| get(p, "__name__") == Some("lat"))
            .expect("a marker for lat");
        assert!(marker.histogram.as_deref().is_some_and(Histogram::is_stale));
        assert_eq!(marker.t_ms, 2000);
        assert_eq!(marker.histogram.as_ref().map(|h| h.schema), Some(0));
        // A custom-bucket series' marker has custom buckets, so it travels
        // (and is stored) as the series did.
        let mut o = outcome("up_like 1\n");
        let mut custom = h(&[("__name__", "rpc")]);
        if let Some(c) = custom.histogram.as_mut() {
            c.schema = CUSTOM_SCHEMA;
            c.custom_values = std::sync::Arc::from([0.5]);
        }
        o.samples.push(custom);
        points(&t, &mut o, &mut stale, 3000);
        let p = points(&t, &mut outcome("up_like 1\n"), &mut stale, 4000);
        let marker = p
            .iter()
            .find(|p| get(p, "__name__") == Some("rpc"))
            .and_then(|p| p.histogram.as_deref())
            .expect("a histogram marker for rpc");
        assert!(marker.is_stale() && marker.is_custom(), "{marker:?}");
        assert!(marker.validate().is_ok());
    }

    #[test]
    fn host_series_that_disappear_are_marked_stale_once() {
        let point = |dev: &str| Point {
            labels: vec![
                ("__name__".into(), "node_network_up".into()),
                ("device".into(), dev.into()),
            ],
            t_ms: 0,
            value: 1.0,
            exemplar: None,
            histogram: None,
        };
        let mut stale = Staleness::default();
        assert!(
            stale
                .track(&[point("eth0"), point("eth1")], 1000)
                .is_empty()
        );
        let gone = stale.track(&[point("eth0")], 2000);
        assert_eq!(
            seen(&gone),
            vec![("node_network_up".to_owned(), "stale".to_owned())]
        );
        assert_eq!(
            (get(&gone[0], "device"), gone[0].t_ms),
            (Some("eth1"), 2000)
        );
        assert!(stale.track(&[point("eth0")], 3000).is_empty());
    }
}
