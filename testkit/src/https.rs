//! A local HTTPS server whose certificate a throwaway CA signed (for
//! `127.0.0.1` and `localhost`): what the tests of Keel's HTTPS clients
//! connect to, trusting the CA through `tls_config.ca_file` or not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A running HTTPS server; stops when dropped.
pub struct Https {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA's certificate (PEM), to trust.
    pub ca_file: PathBuf,
    /// Another CA's certificate, that did not sign the server's.
    pub other_ca_file: PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Https {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// Making the certificates failed.
    #[error("certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused them.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Binding or writing the CA file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A self-signed CA.
fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// Serve `router` over HTTPS on a free port of 127.0.0.1.
pub async fn serve(router: axum::Router) -> Result<Https, HttpsError> {
    let issuer = ca("keel test CA")?;
    let other = ca("another CA")?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &issuer)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, issuer.pem())?;
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other.pem())?;
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(Https {
        addr,
        ca_file,
        other_ca_file,
        _dir: dir,
        task,
    })
}

/// Certificates in files, for a Keel listener with TLS: a CA, a server
/// certificate it signed (for `127.0.0.1` and `localhost`) with its key,
/// and a client certificate it signed (mutual TLS) with its key.
pub struct Pki {
    /// The CA (PEM), for clients to trust and for `client_ca_file`.
    pub ca_file: PathBuf,
    /// The server's certificate and key.
    pub cert_file: PathBuf,
    /// The server's key.
    pub key_file: PathBuf,
    /// A client certificate the CA signed, and its key.
    pub client_cert_file: PathBuf,
    /// The client certificate's key.
    pub client_key_file: PathBuf,
    dir: PathBuf,
}

impl Pki {
    /// Write a fresh CA, server and client certificate into `dir`.
    pub fn new(dir: &std::path::Path) -> Result<Self, HttpsError> {
        let issuer = ca("keel test CA")?;
        let me = Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server-key.pem"),
            client_cert_file: dir.join("client.pem"),
            client_key_file: dir.join("client-key.pem"),
            dir: dir.to_path_buf(),
        };
        std::fs::write(&me.ca_file, issuer.pem())?;
        me.write_pair(
            &issuer,
            &me.cert_file,
            &me.key_file,
            &["127.0.0.1", "localhost"],
        )?;
        me.write_pair(
            &issuer,
            &me.client_cert_file,
            &me.client_key_file,
            &["agent"],
        )?;
        Ok(me)
    }

    fn write_pair(
        &self,
        issuer: &CertifiedIssuer<'static, KeyPair>,
        cert_file: &std::path::Path,
        key_file: &std::path::Path,
        names: &[&str],
    ) -> Result<(), HttpsError> {
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?
                .signed_by(&key, issuer)?;
        // The key first, then the certificate, each renamed into place:
        // a listener reloading between the two sees one file changed and
        // the pair not matching, keeps its old one, and tries again.
        let tmp = self.dir.join(".tmp.pem");
        std::fs::write(&tmp, key.serialize_pem())?;
        std::fs::rename(&tmp, key_file)?;
        std::fs::write(&tmp, cert.pem())?;
        std::fs::rename(&tmp, cert_file)?;
        Ok(())
    }

    /// Replace the server's certificate and key with ones a new CA signed
    /// (as a rotation would): the new CA's file.
    pub fn rotate_server(&self) -> Result<PathBuf, HttpsError> {
        let issuer = ca("keel rotated CA")?;
        let ca_file = self.dir.join("rotated-ca.pem");
        std::fs::write(&ca_file, issuer.pem())?;
        self.write_pair(
            &issuer,
            &self.cert_file,
            &self.key_file,
            &["127.0.0.1", "localhost"],
        )?;
        Ok(ca_file)
    }
}
