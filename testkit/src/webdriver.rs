//! A W3C WebDriver session on `chromedriver` driving Debian's headless
//! `chromium`: enough of the protocol (navigate, run a script, wait for a
//! condition, screenshot, the console log) for `keel bench dashboard` and
//! the browser test, over plain HTTP + JSON.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What went wrong with the browser.
#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    /// chromedriver would not start.
    #[error("starting chromedriver (Debian: apt-get install chromium chromium-driver): {0}")]
    Start(std::io::Error),
    /// A WebDriver request failed.
    #[error("WebDriver request: {0}")]
    Http(#[from] reqwest::Error),
    /// chromedriver or the browser answered something else.
    #[error("{0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, WebDriverError>;

/// A browser session; chromedriver is stopped when dropped.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
}

impl Browser {
    /// Start chromedriver on a free port and open a headless session of
    /// `/usr/bin/chromium` at `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        let port = crate::free_port().map_err(WebDriverError::Start)?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(WebDriverError::Start)?;
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            http,
            base: String::new(),
            driver,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.http.get(format!("{url}/status")).send().await.is_err() {
            if Instant::now() > deadline {
                return Err(WebDriverError::Protocol(format!(
                    "chromedriver did not answer on {url}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")],
            },
        }}});
        let v: Value = b
            .http
            .post(format!("{url}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let Some(id) = v["value"]["sessionId"].as_str() else {
            return Err(WebDriverError::Protocol(format!(
                "chromedriver opened no session: {v}"
            )));
        };
        b.base = format!("{url}/session/{id}");
        Ok(b)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            r = r.json(&body);
        }
        let v: Value = r.send().await?.json().await?;
        Ok(v["value"].clone())
    }

    /// Load `url` (returns when the document has loaded).
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await?;
        Ok(())
    }

    /// Run `script` (a function body) in the page; what it returns.
    pub async fn js(&self, script: &str) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Wait (up to `limit`) until `script` returns something truthy.
    pub async fn until(&self, what: &str, script: &str, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.js(script).await?;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.contains_key("error"),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(WebDriverError::Protocol(format!(
                    "timed out waiting for: {what} (last: {v})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        Ok(base64_decode(v.as_str().unwrap_or_default()))
    }

    /// The console's errors since the last call.
    pub async fn console_errors(&self) -> Result<Vec<String>> {
        let v = self
            .call(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await?;
        let Some(entries) = v.as_array() else {
            return Err(WebDriverError::Protocol(format!(
                "the browser log is not readable: {v}"
            )));
        };
        Ok(entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }
}

impl Browser {
    /// End the session, so chromedriver closes the browser (killing
    /// chromedriver alone leaves Chromium running). Plain blocking HTTP,
    /// as it runs in `drop`.
    fn quit(&self) {
        use std::io::{Read as _, Write as _};
        let Some((host, path)) = self
            .base
            .strip_prefix("http://")
            .and_then(|r| r.split_once('/'))
        else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = write!(
            s,
            "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        // The answer comes once the browser has quit (chromedriver may keep
        // the connection open after it, so read the answer, not to the end).
        let _ = s.read(&mut [0u8; 4096]);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.base.is_empty() {
            self.quit();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::base64_decode("AAEC/w=="), [0, 1, 2, 255]);
    }
}
