//! The dashboards of a directory: loaded at start, reloaded when a file
//! changes, appears or goes away. A file that stops being valid keeps
//! its last good version, with the error beside it for the page and the
//! log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use keel_core::clock::SharedClock;
use serde::Serialize;

use super::model::Dashboard;

/// One file's dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its name in URLs: the file name without `.yaml`/`.yml`.
    pub uid: String,
    /// The file.
    pub file: String,
    /// The last version that loaded (none if it never did).
    #[serde(serialize_with = "shared")]
    pub dashboard: Option<Arc<Dashboard>>,
    /// Why the file as it is now does not load.
    pub error: Option<String>,
}

fn shared<S: serde::Serializer>(d: &Option<Arc<Dashboard>>, s: S) -> Result<S::Ok, S::Error> {
    d.as_deref().serialize(s)
}

/// Every dashboard of a directory.
pub struct Library {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
    entries: BTreeMap<String, Entry>,
}

/// The dashboard files of `dir`, sorted, with their modification times.
fn stamps(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut v: Vec<(PathBuf, Option<SystemTime>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, t)
        })
        .collect();
    v.sort();
    v
}

impl Library {
    /// Load every dashboard in `dir` (none if it does not exist).
    pub fn open(dir: &Path) -> Arc<Self> {
        let lib = Arc::new(Library {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner::default()),
        });
        lib.reload_if_changed();
        lib
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reload the files that changed; drop those that went away.
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.dir);
        let mut inner = self.lock();
        if inner.stamps == now {
            return;
        }
        let before: BTreeMap<PathBuf, Option<SystemTime>> = inner.stamps.iter().cloned().collect();
        let mut entries = BTreeMap::new();
        for (path, t) in &now {
            let uid = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let old = inner.entries.remove(&uid);
            if before.get(path) == Some(t)
                && let Some(old) = old
            {
                entries.insert(uid, old);
                continue;
            }
            let last_good = old.and_then(|o| o.dashboard);
            let file = path.display().to_string();
            let entry = match keel_core::config::load_yaml::<Dashboard>(path) {
                Ok(d) => {
                    tracing::info!(%file, "dashboard loaded");
                    Entry {
                        uid: uid.clone(),
                        file,
                        dashboard: Some(Arc::new(d)),
                        error: None,
                    }
                }
                Err(e) => {
                    tracing::warn!(%file, error = %e, "dashboard file is invalid; keeping its last good version");
                    Entry {
                        uid: uid.clone(),
                        file,
                        dashboard: last_good,
                        error: Some(e.to_string()),
                    }
                }
            };
            entries.insert(uid, entry);
        }
        inner.entries = entries;
        inner.stamps = now;
    }

    /// Every dashboard, by uid.
    pub fn list(&self) -> Vec<Entry> {
        self.lock().entries.values().cloned().collect()
    }

    /// One dashboard.
    pub fn get(&self, uid: &str) -> Option<Entry> {
        self.lock().entries.get(uid).cloned()
    }

    /// Check the directory every `every` on `clock` (the task ends with
    /// the runtime).
    pub fn watch(self: &Arc<Self>, clock: SharedClock, every: Duration) {
        let lib = self.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(every).await;
                let l = lib.clone();
                let _ = tokio::task::spawn_blocking(move || l.reload_if_changed()).await;
            }
        });
    }
}
