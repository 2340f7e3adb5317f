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

/// `keel config` shows every setting but no secret: passwords and tokens
/// print as `<redacted>`, a password inside a URL as `***`.
#[test]
fn keel_config_prints_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("keel.yaml"),
        "agent:\n  collector_token: agent-secret-1234567890\n\
         collector:\n  state: postgres://keel:pg-secret@db:5432/keel\n\
         \x20 auth:\n    senders: [{name: edge, token: sender-secret-1234567890}]\n\
         \x20 notify:\n    email:\n      password: smtp-secret\n\
         \x20   webhooks: [https://hooks.example.com/services/T0/B0/hook-secret]\n",
    )
    .expect("write");
    let out = Command::new(KEEL)
        .arg("config")
        .current_dir(dir.path())
        .output()
        .expect("run keel config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "agent-secret",
        "pg-secret",
        "sender-secret",
        "smtp-secret",
        "hook-secret",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert_eq!(text.matches("<redacted>").count(), 4, "{text}");
    assert!(
        text.contains("https://hooks.example.com/<redacted>"),
        "{text}"
    );
    assert!(text.contains("postgres://keel:***@db:5432/keel"), "{text}");
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
