//! The dashboard in headless Firefox (Debian's `firefox-esr`), driven over
//! Marionette, Firefox's own remote protocol (Debian ships no
//! geckodriver): every page draws under `keel up` with no script errors.
//!
//! Runs with `KEEL_TEST_FIREFOX=1` (`.ci/run` installs `firefox-esr` and
//! sets it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// A Marionette session: length-prefixed JSON over TCP.
struct Marionette {
    stream: TcpStream,
    id: u64,
}

impl Marionette {
    fn connect(port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("marionette on {port}: {e}"),
                // Firefox is starting: there is nothing to await but the port.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut m = Marionette { stream, id: 0 };
        let hello = m.read();
        assert_eq!(hello["applicationType"], "gecko", "{hello}");
        m.call("WebDriver:NewSession", json!({"capabilities": {}}));
        m
    }

    fn read(&mut self) -> Value {
        let mut len = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.stream.read_exact(&mut b).expect("read");
            if b[0] == b':' {
                break;
            }
            len.push(b[0]);
        }
        let n: usize = String::from_utf8_lossy(&len).parse().expect("length");
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body).expect("read body");
        serde_json::from_slice(&body).expect("json")
    }

    /// Send a command; its result (panics on a protocol error).
    fn call(&mut self, name: &str, params: Value) -> Value {
        self.id += 1;
        let msg = json!([0, self.id, name, params]).to_string();
        write!(self.stream, "{}:{msg}", msg.len()).expect("write");
        loop {
            let v = self.read();
            if v[1] == self.id {
                assert!(v[2].is_null(), "{name}: {}", v[2]);
                return v[3].clone();
            }
        }
    }

    fn js(&mut self, script: &str) -> Value {
        self.call(
            "WebDriver:ExecuteScript",
            json!({"script": script, "args": []}),
        )["value"]
            .clone()
    }

    /// Wait until `script` returns something other than null/false.
    fn until(&mut self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_draws_in_firefox() {
    if std::env::var_os("KEEL_TEST_FIREFOX").is_none() {
        eprintln!("KEEL_TEST_FIREFOX unset: the Firefox test is skipped");
        return;
    }
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, lines) = keel_up(dir.path(), &[]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let ui = printed_url(&lines, "dashboard");
    let origin = ui.trim_end_matches("/ui/").to_owned();
    let mut load = spawn_load(&lines, dir.path(), "steady", "30", "40s");
    let _load = StopOnDrop(load.id() as i32);
    // A profile of its own, Marionette on a free port.
    let profile = dir.path().join("firefox-profile");
    std::fs::create_dir_all(&profile).expect("mkdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    std::fs::write(
        profile.join("user.js"),
        format!("user_pref(\"marionette.port\", {port});\nuser_pref(\"browser.shell.checkDefaultBrowser\", false);\n"),
    )
    .expect("user.js");
    let mut ff = std::process::Command::new("firefox-esr")
        .args(["--headless", "--marionette", "--no-remote", "--profile"])
        .arg(&profile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("firefox-esr must be installed");
    let _ff = StopOnDrop(ff.id() as i32);
    let mut m = tokio::task::block_in_place(|| Marionette::connect(port));
    tokio::task::block_in_place(|| {
        m.call(
            "WebDriver:SetWindowRect",
            json!({"width": 1440, "height": 1000}),
        );
        let pages = [
            (
                "/ui/d/overview?range=5m&live=1",
                "return document.querySelector('[data-panel=\"1.0\"] canvas') && document.querySelector('[data-panel=\"0.0\"] .stat') ? 1 : null;",
            ),
            (
                "/ui/d/service?range=5m",
                "return document.body.dataset.drawn ? 1 : null;",
            ),
            (
                "/ui/d/hosts?range=5m",
                "return document.body.dataset.drawn ? 1 : null;",
            ),
            (
                "/ui/logs?q=*&range=5m",
                "return document.querySelector('#log-results a.trace-link') ? 1 : null;",
            ),
            (
                "/ui/traces?range=5m",
                "return document.querySelector('#trace-results table') ? 1 : null;",
            ),
            (
                "/ui/alerts",
                "return document.querySelector('#alerts') ? 1 : null;",
            ),
            (
                "/ui/events?range=15m",
                "return document.querySelector('#events') ? 1 : null;",
            ),
            (
                "/ui/build?expr=up",
                "return document.querySelector('#b-yaml') && document.querySelector('#b-yaml').textContent.includes('expr: up') ? 1 : null;",
            ),
        ];
        for (path, drawn) in pages {
            m.call(
                "WebDriver:Navigate",
                json!({"url": format!("{origin}{path}")}),
            );
            // Script errors from here on (a module that fails to load
            // leaves the page empty, which `drawn` catches).
            m.js("window.__errors = []; window.addEventListener('error', (e) => window.__errors.push(String(e.message))); window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason))); return 1;");
            m.until(path, drawn);
            let errors = m.js("return window.__errors;");
            assert_eq!(errors, json!([]), "{path}: script errors");
            let broken = m.js("return Array.from(document.querySelectorAll('.status.error, .error')).map((e) => e.textContent);");
            assert_eq!(broken, json!([]), "{path}: errors on the page");
        }
        // One trace, from a log line.
        m.call(
            "WebDriver:Navigate",
            json!({"url": format!("{origin}/ui/logs?q=*&range=5m")}),
        );
        let href = m.until(
            "a trace link",
            "const a = document.querySelector('#log-results a.trace-link'); return a ? a.getAttribute('href') : null;",
        );
        let id = href
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("/ui/trace/")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The log line can be indexed before its spans: wait for the trace.
        while status_of(&format!("{origin}/api/v1/traces/{id}")) != 200 {
            assert!(Instant::now() < deadline, "trace {id} never stored");
            std::thread::sleep(Duration::from_millis(100));
        }
        m.call(
            "WebDriver:Navigate",
            json!({"url": format!("{origin}/ui/trace/{id}")}),
        );
        m.until(
            "the waterfall",
            "return document.querySelectorAll('#waterfall .span-row').length > 0 ? 1 : null;",
        );
        let shot = m.call("WebDriver:TakeScreenshot", json!({"full": false}));
        assert!(
            shot["value"].as_str().is_some_and(|s| s.len() > 1000),
            "a screenshot"
        );
        m.call("WebDriver:DeleteSession", json!({}));
    });
    load.kill().ok();
    let _ = load.wait();
    ff.kill().ok();
    let _ = ff.wait();
    child.kill().ok();
}

/// A GET's status, from inside `block_in_place`.
fn status_of(url: &str) -> u16 {
    tokio::runtime::Handle::current().block_on(async {
        reqwest::get(url)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}
