//! Prometheus `file_sd`: scrape targets listed in files that something
//! else keeps up to date (the sample app's supervisor, a deploy tool, a
//! cron job), re-read on an interval so that instances that come, go or
//! move to another port are scraped without restarting the agent.
//!
//! A file is JSON or YAML: a list of target groups, each
//! `{"targets": ["host:port", …], "labels": {"name": "value", …}}`. As in
//! Prometheus, a group's `job` label overrides the scrape job's name, an
//! `instance` label overrides the address, `__metrics_path__` and
//! `__scheme__` shape the URL (default `/metrics` and `http`), other
//! `__`-prefixed labels are dropped, and the rest are target labels. A
//! file that cannot be read or parsed keeps its last good targets (and
//! the error is logged), so a half-written file never drops a target.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ScrapeJob;
use crate::scrape::Target;

/// One target group of a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Why a file's targets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// Not readable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a list of target groups.
    #[error("{0}")]
    Parse(#[from] keel_core::config::ConfigError),
}

/// What one reading of a job's files found.
#[derive(Debug, Default)]
pub struct Found {
    /// Targets by file.
    pub targets: BTreeMap<PathBuf, Vec<Target>>,
    /// Files that failed (their last good targets are the caller's to keep).
    pub failed: Vec<(PathBuf, SdError)>,
}

/// The targets of `job` from its `file_sd` files.
pub fn read(job: &ScrapeJob) -> Found {
    let mut found = BTreeMap::new();
    let mut failed = Vec::new();
    for pattern in &job.file_sd {
        let Ok(paths) = glob::glob(pattern) else {
            continue;
        };
        for path in paths.flatten() {
            match read_file(job, &path) {
                Ok(t) => {
                    found.insert(path, t);
                }
                Err(e) => failed.push((path, e)),
            }
        }
    }
    Found {
        targets: found,
        failed,
    }
}

/// The targets one file lists for `job`.
fn read_file(job: &ScrapeJob, path: &std::path::Path) -> Result<Vec<Target>, SdError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SdError::Read {
        path: shown.clone(),
        source,
    })?;
    let groups: Vec<Group> = keel_core::config::parse_yaml(&shown, &text)?;
    Ok(groups.into_iter().flat_map(|g| targets(job, g)).collect())
}

fn targets(job: &ScrapeJob, g: Group) -> Vec<Target> {
    let scheme = g.labels.get("__scheme__").map_or("http", String::as_str);
    let path = g
        .labels
        .get("__metrics_path__")
        .map_or("/metrics", String::as_str);
    let name = g.labels.get("job").unwrap_or(&job.job);
    let mut labels = job.labels.clone();
    labels.extend(
        g.labels
            .iter()
            .filter(|(k, _)| !k.starts_with("__") && *k != "job" && *k != "instance")
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    g.targets
        .iter()
        .map(|addr| Target {
            job: name.clone(),
            url: format!("{scheme}://{addr}{path}"),
            instance: g.labels.get("instance").unwrap_or(addr).clone(),
            interval: job.interval,
            timeout: job.timeout,
            honor_labels: job.honor_labels,
            labels: labels.clone(),
            accept: job.accept(),
            native: job.native_histograms(),
            limits: job.scrape_limits(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_become_targets_with_prometheus_label_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.json"),
            r#"[{"targets":["127.0.0.1:9000","127.0.0.1:9001"],"labels":{"job":"shop-web","tier":"web","__metrics_path__":"/m","__meta_x":"y"}},
                {"targets":["10.0.0.1:80"],"labels":{"instance":"db-1","__scheme__":"https"}}]"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("b.yaml"), "- targets: ['h:1']\n").expect("write");
        std::fs::write(dir.path().join("c.json"), "[{\"targets\": ").expect("write");
        let job = ScrapeJob {
            job: "shop".into(),
            file_sd: vec![dir.path().join("*").display().to_string()],
            labels: [("env".to_owned(), "test".to_owned())].into(),
            ..ScrapeJob::default()
        };
        let Found {
            targets: found,
            failed,
        } = read(&job);
        let all: Vec<&Target> = found.values().flatten().collect();
        let urls: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|t| (t.job.as_str(), t.url.as_str(), t.instance.as_str()))
            .collect();
        assert_eq!(
            urls,
            vec![
                ("shop-web", "http://127.0.0.1:9000/m", "127.0.0.1:9000"),
                ("shop-web", "http://127.0.0.1:9001/m", "127.0.0.1:9001"),
                ("shop", "https://10.0.0.1:80/metrics", "db-1"),
                ("shop", "http://h:1/metrics", "h:1"),
            ]
        );
        let labels: Vec<_> = all[0].labels.iter().collect();
        assert_eq!(
            labels,
            vec![
                (&"env".to_owned(), &"test".to_owned()),
                (&"tier".to_owned(), &"web".to_owned())
            ]
        );
        assert_eq!(failed.len(), 1, "the half-written file is an error");
        assert!(
            failed[0].1.to_string().contains("c.json"),
            "{}",
            failed[0].1
        );
    }
}
