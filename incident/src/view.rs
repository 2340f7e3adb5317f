//! A bundle as the dashboard's data source (replay mode): its samples in
//! an in-memory store, its dashboards and logs, served by the dashboard
//! API itself under `/api/v1/incidents/{name}/view/…`, so every panel
//! draws over the bundle's window exactly as it draws live.

use std::sync::Arc;

use super::bundle::Bundle;
use keel_dashboards::api::DashboardApi;
use keel_metricstore::{Store, StoreConfig};
use keel_series::labels::Labels;

/// One bundle loaded for viewing.
pub struct View {
    /// The dashboard API over the bundle.
    pub routes: axum::Router,
    /// The bundle's file time when loaded (a changed file is loaded again).
    pub modified: Option<std::time::SystemTime>,
    /// Its dashboards and logs live here while it is viewed.
    _dir: tempfile::TempDir,
}

impl View {
    /// Load `bundle` (read from a file last modified at `modified`).
    pub fn load(bundle: &Bundle, modified: Option<std::time::SystemTime>) -> Result<Self, String> {
        let h = &bundle.header;
        let start = h.from_ms - h.lead_in_ms;
        let store = Arc::new(Store::in_memory(StoreConfig {
            out_of_order_window_ms: h.to_ms - start + 3_600_000,
            ..StoreConfig::default()
        }));
        for chunk in bundle.series.chunks(500) {
            store
                .append(
                    chunk
                        .iter()
                        .map(|s| (Labels::new(s.labels.iter().collect()), s.samples.clone()))
                        .collect(),
                )
                .map_err(|e| e.to_string())?;
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dashboards = dir.path().join("dashboards");
        std::fs::create_dir_all(&dashboards).map_err(|e| e.to_string())?;
        for f in bundle.files.iter().filter(|f| f.kind == "dashboard") {
            // A bundle names its files; only the last path part is used.
            let name = std::path::Path::new(&f.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.is_empty() || name.starts_with('.') {
                continue;
            }
            std::fs::write(dashboards.join(name), &f.text).map_err(|e| e.to_string())?;
        }
        let logs = bundle.log_index(&dir.path().join("logs"))?;
        let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::ManualClock::new(
            keel_core::clock::from_unix_ms(h.to_ms),
        ));
        let api = DashboardApi {
            library: keel_dashboards::Library::open(&dashboards),
            gate: keel_promql::QueryGate::default(),
            store,
            logs: Arc::new(logs),
            state: None,
            clock,
        };
        Ok(Self {
            routes: keel_dashboards::api::routes(api).into(),
            modified,
            _dir: dir,
        })
    }
}
