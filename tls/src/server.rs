//! TLS on Keel's own listeners: a certificate and key from PEM files,
//! reloaded when the files change (no restart), and optionally client
//! certificates a CA signed (mutual TLS for agents on ingest).
//!
//! [`Acceptor`] holds the rustls config in force; [`Acceptor::reload_if_changed`]
//! (the server calls it on its clock) swaps in a new one when a file's
//! size or time changed, and keeps the old one if the new files do not
//! load. [`serve`] accepts TCP connections, does the handshake and serves
//! an axum router over HTTP/1.1 or HTTP/2 (ALPN), with the peer's address
//! as `ConnectInfo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// TLS handshakes in progress at once on one listener.
const MAX_HANDSHAKES: usize = 512;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `tls:` of a listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// PEM certificate chain the listener presents (empty: plain HTTP).
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
    /// PEM CA bundle: on the ingest listeners, a client (an agent) must
    /// present a certificate one of these signed (mutual TLS). Empty: no
    /// client certificate is asked for.
    pub client_ca_file: PathBuf,
}

/// Why a listener's TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {why}")]
pub struct ServerTlsError {
    /// The setting at fault.
    pub field: String,
    /// Why.
    pub why: String,
}

fn err(field: String, why: impl std::fmt::Display) -> ServerTlsError {
    ServerTlsError {
        field,
        why: why.to_string(),
    }
}

impl ServerTlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Every problem, under `at` (`collector.tls`): both files or none,
    /// each readable PEM, the key the certificate's.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        let (cert, key) = (
            self.cert_file.as_os_str().is_empty(),
            self.key_file.as_os_str().is_empty(),
        );
        if cert != key {
            problems.push(format!(
                "{at}: give both cert_file and key_file, or neither"
            ));
            return;
        }
        if cert && !self.client_ca_file.as_os_str().is_empty() {
            problems.push(format!(
                "{at}.client_ca_file: client certificates need TLS: give cert_file and key_file"
            ));
            return;
        }
        if self.enabled()
            && let Err(e) = self.load(at, true)
        {
            problems.push(e.to_string());
        }
    }

    /// The rustls config these files make; `clients`: ask for (and
    /// require) client certificates when `client_ca_file` is set.
    pub fn load(&self, at: &str, clients: bool) -> Result<rustls::ServerConfig, ServerTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates(&self.cert_file, &format!("{at}.cert_file"))?;
        let key_field = format!("{at}.key_file");
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            err(
                key_field.clone(),
                format!("{} holds no PEM private key: {e}", self.key_file.display()),
            )
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(at.to_owned(), e))?;
        let builder = if clients && !self.client_ca_file.as_os_str().is_empty() {
            let field = format!("{at}.client_ca_file");
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(&self.client_ca_file, &field)? {
                roots.add(c).map_err(|e| err(field.clone(), e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| err(field, e))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| err(key_field, format!("does not go with the certificate: {e}")))?;
        // gRPC needs HTTP/2, browsers and most clients take either.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn certificates(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            err(
                field.to_owned(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| err(field.to_owned(), format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            field.to_owned(),
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// What identifies a version of the files: each one's length and time.
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(spec: &ServerTlsConfig) -> Stamp {
    [&spec.cert_file, &spec.key_file, &spec.client_ca_file]
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// A listener's TLS config in force, and how to make it again.
pub struct Acceptor {
    spec: ServerTlsConfig,
    at: String,
    clients: bool,
    current: RwLock<Arc<rustls::ServerConfig>>,
    seen: Mutex<Stamp>,
}

impl Acceptor {
    /// Load `spec` (named `at` in errors); `clients`: this listener asks
    /// for client certificates when the spec has a client CA.
    pub fn new(
        spec: &ServerTlsConfig,
        at: &str,
        clients: bool,
    ) -> Result<Arc<Self>, ServerTlsError> {
        let seen = stamp(spec);
        let config = spec.load(at, clients)?;
        Ok(Arc::new(Self {
            spec: spec.clone(),
            at: at.to_owned(),
            clients,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    /// If a file changed since the last load, load them again: `Ok(true)`
    /// when the new config is in force; an error (the old one stays) when
    /// the new files do not load — a half-written pair is tried again at
    /// the next call.
    pub fn reload_if_changed(&self) -> Result<bool, ServerTlsError> {
        let now = stamp(&self.spec);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let config = self.spec.load(&self.at, self.clients)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *seen = now;
        Ok(true)
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Reload each of `acceptors` whose files changed, after every
/// `wait()` (the server's clock: `clock.sleep(2 s)`), for ever; a
/// reload that fails is logged and the old certificate stays.
pub async fn reload_forever<F: std::future::Future<Output = ()>>(
    acceptors: Vec<Arc<Acceptor>>,
    mut wait: impl FnMut() -> F,
) {
    loop {
        wait().await;
        for a in &acceptors {
            match a.reload_if_changed() {
                Ok(true) => tracing::info!(listener = %a.at, "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the new TLS files do not load; the old certificate stays")
                }
            }
        }
    }
}

/// Serve `router` on `listener` over TLS: each connection's handshake
/// with the config in force when it arrived, then HTTP/1.1 or HTTP/2,
/// the peer's address as `ConnectInfo`. A failed handshake (an untrusted
/// certificate, a missing client certificate) ends that connection only.
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router, tls: Arc<Acceptor>) {
    // Handshakes in progress at most; past it a new connection is closed
    // at once (the key exchange costs CPU, a silent client a socket).
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes at once: connection closed");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            drop(permit);
            serve_connection(stream, peer, router).await;
        });
    }
}

async fn serve_connection(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    router: axum::Router,
) {
    use tower::ServiceExt as _;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, as PEM.
    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_reload_that_does_not_load_keeps_the_old_certificate_and_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ServerTlsConfig {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
            client_ca_file: PathBuf::new(),
        };
        let (cert, key) = pair();
        std::fs::write(&spec.cert_file, &cert).expect("write");
        std::fs::write(&spec.key_file, &key).expect("write");
        let a = Acceptor::new(&spec, "collector.tls", false).expect("loads");
        assert!(
            !a.reload_if_changed().expect("unchanged"),
            "nothing changed"
        );
        let before = a.current();
        // A key that is not the certificate's (one half of a rotation).
        let (_, other_key) = pair();
        std::fs::write(&spec.key_file, format!("{other_key}\n")).expect("write");
        let e = a.reload_if_changed().expect_err("the pair does not match");
        assert!(e.to_string().starts_with("collector.tls.key_file:"), "{e}");
        assert!(Arc::ptr_eq(&before, &a.current()), "the old config stays");
        // Not PEM at all.
        std::fs::write(&spec.cert_file, "not a certificate\n").expect("write");
        let e = a.reload_if_changed().expect_err("no certificate");
        assert!(e.to_string().starts_with("collector.tls.cert_file:"), "{e}");
        // The whole new pair: in force.
        let (cert2, key2) = pair();
        std::fs::write(&spec.key_file, &key2).expect("write");
        std::fs::write(&spec.cert_file, &cert2).expect("write");
        assert!(a.reload_if_changed().expect("loads"), "reloaded");
        assert!(!Arc::ptr_eq(&before, &a.current()));
    }

    #[test]
    fn half_a_pair_or_client_certificates_without_tls_are_config_errors() {
        let mut problems = Vec::new();
        ServerTlsConfig {
            cert_file: "/x.pem".into(),
            ..Default::default()
        }
        .validate("collector.tls", &mut problems);
        ServerTlsConfig {
            client_ca_file: "/ca.pem".into(),
            ..Default::default()
        }
        .validate("agent.tls", &mut problems);
        ServerTlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ..Default::default()
        }
        .validate("collector.tls", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("both cert_file and key_file"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("agent.tls.client_ca_file:"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("collector.tls.cert_file: cannot read /nonexistent/cert.pem"),
            "{problems:?}"
        );
    }
}
