//! HTTPS as a client, everywhere Keel accepts a URL (the agent's
//! collector, scrape targets, webhook receivers): rustls, the system's
//! roots (and `SSL_CERT_FILE`), plus a CA bundle a config names
//! (`tls_config: {ca_file: …}`, as Prometheus writes it). A certificate
//! that does not verify is an error that says why, never a silent skip.
//!
//! [`server`]: TLS on Keel's own listeners (certificates reloaded when
//! their files change, mutual TLS for agents).
//!
//! Owns: building `reqwest` clients (their CA, client identity and
//! bearer token) and describing their errors, and the TLS side of
//! listeners. Never depends on another Keel crate, so the
//! agent can use it.

pub mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `tls_config:` of a URL Keel connects to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted besides the system's (empty:
    /// the system's only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate Keel presents as a client (mutual TLS), with
    /// `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file would not read.
    #[error("{field}: cannot read {path}: {source}")]
    Read {
        /// The setting that named it.
        field: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("{field}: {path} holds no PEM certificate{why}")]
    NoCertificate {
        /// The setting that named it.
        field: String,
        /// The file.
        path: PathBuf,
        /// The parser's complaint, if any.
        why: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

impl TlsConfig {
    /// Push a problem if the CA file is named but does not read as a
    /// PEM bundle of certificates; `at` is where the setting is
    /// (`agent.collector_tls`), so a bad file stops the start, not each
    /// request later.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if let Some(f) = &self.ca_file
            && let Err(e) = read_bundle(f, &format!("{at}.ca_file"))
        {
            problems.push(e.to_string());
        }
        if let Err(e) = self.identity(at) {
            problems.push(e.to_string());
        }
    }

    /// The client certificate and key, if both are given (one alone is
    /// an error).
    fn identity(&self, at: &str) -> Result<Option<reqwest::Identity>, TlsError> {
        let (cert, key) = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => {
                return Err(TlsError::Build(format!(
                    "{at}: give both cert_file and key_file for a client certificate, or neither"
                )));
            }
        };
        let read = |p: &PathBuf, field: &str| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                field: format!("{at}.{field}"),
                path: p.clone(),
                source,
            })
        };
        let mut pem = read(cert, "cert_file")?;
        pem.push(b'\n');
        pem.extend(read(key, "key_file")?);
        reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
            TlsError::Build(format!(
                "{at}: the client certificate and key: {}",
                describe(&e)
            ))
        })
    }

    /// Trust this config's CA bundle in `builder` (`at` names the
    /// setting in errors).
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
        at: &str,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        let builder = match self.identity(at)? {
            Some(id) => builder.identity(id),
            None => builder,
        };
        let Some(path) = &self.ca_file else {
            return Ok(builder);
        };
        let field = format!("{at}.ca_file");
        let certs = read_bundle(path, &field)?;
        Ok(certs
            .into_iter()
            .fold(builder, |b, c| b.add_root_certificate(c)))
    }

    /// A client for this config: `builder`'s settings and its CA bundle.
    pub fn client(
        &self,
        builder: reqwest::ClientBuilder,
        at: &str,
    ) -> Result<reqwest::Client, TlsError> {
        self.apply(builder, at)?
            .build()
            .map_err(|e| TlsError::Build(describe(&e)))
    }
}

/// Headers carrying `Authorization: Bearer <token>` (none for `None`)
/// for a client's `default_headers`, marked sensitive so the token never
/// shows in logs. An error when the token cannot be a header value.
pub fn bearer(token: Option<&str>) -> Result<reqwest::header::HeaderMap, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// The certificates of a PEM bundle.
fn read_bundle(path: &Path, field: &str) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        field: field.into(),
        path: path.into(),
        source,
    })?;
    let none = |why: String| TlsError::NoCertificate {
        field: field.into(),
        path: path.into(),
        why,
    };
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(none(String::new())),
        Err(e) => Err(none(format!(": {}", describe(&e)))),
    }
}

/// An error and every cause under it, `: `-joined: reqwest's own text
/// ("error sending request") hides the certificate problem in its
/// sources ("invalid peer certificate: UnknownIssuer").
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_named_with_its_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = TlsConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..Default::default()
        };
        let mut problems = Vec::new();
        missing.validate("agent.collector_tls", &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("agent.collector_tls.ca_file: "),
            "{problems:?}"
        );
        let e = missing
            .client(reqwest::Client::builder(), "agent.collector_tls")
            .expect_err("no file");
        assert!(
            e.to_string()
                .starts_with("agent.collector_tls.ca_file: cannot read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let not_pem = TlsConfig {
            ca_file: Some(empty),
            ..Default::default()
        };
        let e = not_pem
            .client(reqwest::Client::builder(), "webhook")
            .expect_err("no certificate");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let mut problems = Vec::new();
        not_pem.validate("webhook", &mut problems);
        assert!(
            problems[0].contains("holds no PEM certificate"),
            "found when the config is checked: {problems:?}"
        );
    }
}
