//! Every example the repository ships loads: configs and load profiles
//! cannot drift from the code that reads them.

use std::path::Path;
use std::process::Command;

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[test]
fn keel_example_yaml_loads_and_equals_the_defaults() {
    let out = Command::new(KEEL)
        .args(["config", "--config"])
        .arg(root().join("keel.example.yaml"))
        .output()
        .expect("run keel config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(KEEL)
        .arg("config")
        .current_dir(empty.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let defaults: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        from_file, defaults,
        "keel.example.yaml documents values that are not the defaults"
    );
}

#[test]
fn every_shipped_load_profile_loads() {
    let dir = root().join("incidents/profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("profiles dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            keel_sampleapp::load::Profile::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the shipped profiles in {}", dir.display());
}
