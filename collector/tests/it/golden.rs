//! Keel's PromQL engine against expected results computed by the real
//! Prometheus (see tests/golden/regen.py; CI re-confirms them with promtool),
//! and against Prometheus 3's answers where they differ from Debian's
//! promtool 2.42 (`prometheus3.yaml`, hand-checked, each case citing its
//! source; experimental functions on, as there), and on native histograms
//! (`native_histograms.yaml`, from Prometheus 3's own test file).

use std::path::Path;

#[test]
fn engine_matches_prometheus_on_every_golden_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checks = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let (n, f) = keel_alerting::promtest::run(&path.display().to_string(), &text, true)
            .unwrap_or_else(|e| panic!("{e}"));
        checks += n;
        failures.extend(f);
    }
    // 107 promtool-generated, 213 hand-checked against Prometheus 3, 185
    // native histogram cases from Prometheus 3's native_histograms.test.
    assert!(checks >= 564, "only {checks} golden checks found");
    let report: Vec<String> = failures.iter().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "{} of {checks} golden cases differ from Prometheus:\n{}",
        failures.len(),
        report.join("\n")
    );
}
