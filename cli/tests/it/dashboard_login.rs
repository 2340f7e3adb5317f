//! Logging in to the dashboard in a real headless browser (Debian's
//! `chromium`), against `keel collector` with `collector.auth.login`:
//! people added with `keel user add` while it runs, a wrong password
//! said so, a viewer's alerts page without the buttons that change
//! anything, log out back to the form, and an editor silencing an alert
//! from the page (its CSRF token carried). A token from `keel token
//! create` works for the CLI's `KEEL_TOKEN`.
//!
//! Runs with `KEEL_TEST_BROWSER=1`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use keel_testkit::webdriver;

const RULES: &str = r#"groups:
  - name: login
    interval: 1s
    rules:
      - alert: LoginTestAlert
        expr: vector(1)
        severity: P1
        annotations: {summary: "always firing, for the login test"}
"#;

/// `keel --config CONFIG ARGS…` with `stdin` on its standard input.
fn keel(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(KEEL)
        .args(["--config", "keel.yaml"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("keel runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_log_in_to_the_dashboard_and_a_viewer_cannot_change_anything() {
    if std::env::var_os("KEEL_TEST_BROWSER").is_none() {
        eprintln!("KEEL_TEST_BROWSER unset: the headless browser login test is skipped");
        return;
    }
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("collector");
    std::fs::write(
        dir.path().join("keel.yaml"),
        format!(
            "collector:\n  data_dir: {}\n  auth:\n    login: true\n  rules:\n    files: [{}]\n",
            data.display(),
            dir.path().join("rules.yml").display()
        ),
    )
    .expect("write");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write");
    std::fs::create_dir_all(&data).expect("mkdir");
    let command = collector_command(&dir.path().join("keel.yaml"));
    let (child, _otlp, api) = start_collector(command, &data);
    let _stop = StopOnDrop(child.id() as i32);

    // People, added while the collector runs.
    for (name, role) in [("vic", "viewer"), ("ed", "editor")] {
        let (ok, out, err) = keel(
            dir.path(),
            &["user", "add", name, "--role", role, "--password-stdin"],
            "a long password\n",
        );
        assert!(ok, "keel user add {name}: {err}");
        assert!(
            out.contains(&format!("user {name} added ({role})")),
            "{out}"
        );
    }
    let (ok, _, err) = keel(
        dir.path(),
        &["user", "add", "weak", "--password-stdin"],
        "short\n",
    );
    assert!(!ok && err.contains("at least 10 characters"), "{err}");
    let (_, list, _) = keel(dir.path(), &["user", "list"], "");
    assert!(list.contains("vic") && list.contains("editor"), "{list}");
    // A token for the CLI: without it `keel query` is refused.
    let (ok, token, err) = keel(
        dir.path(),
        &[
            "token",
            "create",
            "cli",
            "--role",
            "viewer",
            "--expires",
            "1h",
        ],
        "",
    );
    assert!(ok && err.contains("shown once"), "{err}");
    let token = token.trim().to_owned();
    let query = |with: Option<&str>| {
        let mut c = Command::new(KEEL);
        c.args(["query", "--url", &api, "vector(7)"]);
        c.env_remove("KEEL_TOKEN");
        if let Some(t) = with {
            c.env("KEEL_TOKEN", t);
        }
        c.output().expect("keel query")
    };
    let refused = query(None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("log in first"),
        "{refused:?}"
    );
    let answered = query(Some(&token));
    assert!(answered.status.success(), "{answered:?}");
    assert!(
        String::from_utf8_lossy(&answered.stdout).contains('7'),
        "{answered:?}"
    );

    let browser = webdriver::Browser::start(1280, 900)
        .await
        .expect("chromium and chromedriver (Debian's chromium-driver) must be installed");
    let until = |what: &'static str, script: &'static str| {
        let b = &browser;
        async move {
            b.until(what, script, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{e:#}"))
        }
    };
    let log_in = |user: &str, password: &str| {
        format!(
            "document.querySelector('#login-user').value = {user:?};
             document.querySelector('#login-password').value = {password:?};
             document.querySelector('#login-submit').click(); return 1;"
        )
    };
    browser
        .goto(&format!("{api}/ui/alerts"))
        .await
        .expect("navigate");
    until(
        "the login form",
        "return document.querySelector('#login') ? 1 : null;",
    )
    .await;
    browser
        .js(&log_in("vic", "not the password"))
        .await
        .expect("script");
    let said = until(
        "a wrong password is said so",
        "const s = document.querySelector('#login-status'); return s && s.textContent ? s.textContent : null;",
    )
    .await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("wrong user name or password")),
        "{said}"
    );

    // A viewer sees the firing alert and no button that changes anything.
    browser
        .js(&log_in("vic", "a long password"))
        .await
        .expect("script");
    until(
        "the viewer's alerts page shows the firing alert",
        "return document.querySelector('tr.alert-row[data-alert=\"LoginTestAlert\"]') ? 1 : null;",
    )
    .await;
    let who = browser
        .js("return document.querySelector('#whoami').textContent;")
        .await
        .expect("script");
    assert_eq!(who, "vic (viewer)");
    let buttons = browser
        .js("return document.querySelectorAll('#main button').length;")
        .await
        .expect("script");
    assert_eq!(buttons, 0, "a viewer's alerts page has no buttons");
    let png = browser.screenshot().await.expect("screenshot");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir");
    std::fs::write(shots.join("login-viewer.png"), png).expect("write");

    // Log out: back to the form, and the API refuses the old session.
    browser
        .js("document.querySelector('#logout').click(); return 1;")
        .await
        .expect("script");
    until(
        "the form after logging out",
        "return document.querySelector('#login') ? 1 : null;",
    )
    .await;
    let after = until(
        "the old session is refused",
        "if (window.__after === undefined) { window.__after = null; fetch('/api/v1/alerts').then(r => { window.__after = r.status; }); } return window.__after;",
    )
    .await;
    assert_eq!(after, 401, "the cookie is cleared and the session ended");

    // An editor silences the alert from the page.
    browser
        .js(&log_in("ed", "a long password"))
        .await
        .expect("script");
    until(
        "the editor's alerts page offers a silence",
        "return document.querySelector('tr.alert-row[data-alert=\"LoginTestAlert\"] button.silence') ? 1 : null;",
    )
    .await;
    browser
        .js("document.querySelector('tr.alert-row[data-alert=\"LoginTestAlert\"] button.silence').click(); return 1;")
        .await
        .expect("script");
    until(
        "the silence is listed",
        "return document.querySelector('#silences tr.silence-row') ? 1 : null;",
    )
    .await;
    // Only the wrong password's 401, and the logged-out probe's, may be
    // in the console.
    let errors = browser.console_errors().await.expect("console");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("401")
                && (e.contains("/api/v1/login") || e.contains("/api/v1/alerts"))),
        "console errors: {errors:?}"
    );
}
