//! TLS on the collector's listeners (`collector.tls`): a client that does
//! not trust the CA fails the handshake; a rotated certificate is served
//! without a restart; with `client_ca_file`, an agent's client
//! certificate is required on ingest (mutual TLS) but not on the API.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{config, gauge, point, request};
use keel_collector::server::{Running, start};
use keel_core::clock::{SharedClock, SystemClock};
use keel_testkit::https::Pki;
use keel_tls::TlsConfig;
use prost::Message;

async fn collector(dir: &std::path::Path, pki: &Pki) -> Running {
    let mut c = config(&dir.join("data"));
    c.tls = keel_tls::server::ServerTlsConfig {
        cert_file: pki.cert_file.clone(),
        key_file: pki.key_file.clone(),
        client_ca_file: pki.ca_file.clone(),
    };
    let clock: SharedClock = Arc::new(SystemClock);
    start(&c, clock).await.expect("collector starts")
}

fn client(tls: TlsConfig) -> reqwest::Client {
    tls.client(reqwest::Client::builder(), "test")
        .expect("client")
}

fn trusting(ca: &std::path::Path) -> TlsConfig {
    TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    }
}

async fn query(http: &reqwest::Client, c: &Running) -> Result<reqwest::StatusCode, String> {
    http.get(format!("https://{}/api/v1/query?query=vector(1)", c.api))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| keel_tls::describe(&e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_tls_and_a_client_that_does_not_trust_the_ca_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path()).expect("certificates");
    let c = collector(dir.path(), &pki).await;
    assert_eq!(c.scheme(), "https");
    let e = query(&client(TlsConfig::default()), &c)
        .await
        .expect_err("the system's roots do not have the test CA");
    assert!(e.contains("UnknownIssuer"), "{e}");
    let ok = query(&client(trusting(&pki.ca_file)), &c).await;
    assert_eq!(
        ok,
        Ok(reqwest::StatusCode::OK),
        "no client certificate on the API"
    );
    // Plain HTTP to a TLS port gets no answer it can read.
    let plain = reqwest::get(format!("http://{}/api/v1/query?query=vector(1)", c.api)).await;
    assert!(plain.is_err() || !plain.expect("answer").status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path()).expect("certificates");
    let c = collector(dir.path(), &pki).await;
    let old = client(trusting(&pki.ca_file));
    assert_eq!(query(&old, &c).await, Ok(reqwest::StatusCode::OK));
    let new_ca = pki.rotate_server().expect("rotate");
    let new = client(trusting(&new_ca));
    keel_testkit::until(
        "the rotated certificate is served",
        Duration::from_secs(30),
        async || query(&new, &c).await.ok(),
    )
    .await;
    // A new connection (the old client's pooled one goes on as it was).
    let e = query(&client(trusting(&pki.ca_file)), &c)
        .await
        .expect_err("the old CA signed no more");
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_wants_the_agents_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path()).expect("certificates");
    let c = collector(dir.path(), &pki).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let body = |name: &str| {
        request(
            "mtls-agent",
            vec![gauge(name, "", vec![point(now, 1.0, vec![])])],
        )
        .encode_to_vec()
    };
    let send = |http: reqwest::Client, body: Vec<u8>| {
        let url = format!("https://{}/v1/metrics", c.otlp_http);
        async move {
            http.post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .map(|r| r.status())
                .map_err(|e| keel_tls::describe(&e))
        }
    };
    // TLS 1.3 lets the client send before the server has judged its
    // (missing) certificate: the failure is the server's alert or the
    // connection it closed, and nothing of the batch is stored.
    let without = send(client(trusting(&pki.ca_file)), body("mtls_refused")).await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let with = send(
        client(TlsConfig {
            ca_file: Some(pki.ca_file.clone()),
            cert_file: Some(pki.client_cert_file.clone()),
            key_file: Some(pki.client_key_file.clone()),
        }),
        body("mtls_up"),
    )
    .await;
    assert_eq!(with, Ok(reqwest::StatusCode::OK));
    let names = c.store.label_values("__name__");
    assert!(
        names.iter().any(|n| n == "mtls_up"),
        "the batch sent with the certificate is stored: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "mtls_refused"),
        "the one without is not: {names:?}"
    );
}

/// A client config trusting `pki`'s CA, presenting its client
/// certificate, offering HTTP/2 by ALPN (as gRPC clients do).
fn grpc_client_config(pki: &Pki) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_file).expect("ca") {
        roots.add(c.expect("pem")).expect("root");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.client_cert_file)
        .expect("cert")
        .map(|c| c.expect("pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.client_key_file).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// OTLP over gRPC on the TLS listener: HTTP/2 by ALPN, the client's
/// certificate, a metrics export answered with grpc-status 0 and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_ingest_works_over_tls_with_a_client_certificate() {
    use http_body_util::BodyExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path()).expect("certificates");
    let c = collector(dir.path(), &pki).await;
    let mut send = h2(&pki, c.otlp_grpc).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let msg = request(
        "grpc-tls",
        vec![gauge("grpc_tls_up", "", vec![point(now, 1.0, vec![])])],
    )
    .encode_to_vec();
    // A gRPC message: not compressed, its length, the protobuf.
    let mut body = vec![0u8];
    body.extend((msg.len() as u32).to_be_bytes());
    body.extend(msg);
    let req = hyper::Request::post(format!(
        "https://127.0.0.1:{}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        c.otlp_grpc.port()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(bytes_of(body)))
    .expect("request");
    let answer = send.send_request(req).await.expect("answer");
    assert_eq!(answer.status(), 200);
    let collected = answer.into_body().collect().await.expect("body");
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    assert_eq!(status.as_deref(), Some("0"), "gRPC OK");
    assert!(
        c.store
            .label_values("__name__")
            .iter()
            .any(|n| n == "grpc_tls_up"),
        "stored"
    );
}

/// An HTTP/2 connection over TLS to `addr` (ALPN must pick h2), with
/// `pki`'s client certificate.
async fn h2(
    pki: &Pki,
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<hyper::body::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(grpc_client_config(pki)))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 by ALPN"
    );
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2");
    tokio::spawn(conn);
    send
}

fn bytes_of(v: Vec<u8>) -> hyper::body::Bytes {
    hyper::body::Bytes::from(v)
}

/// A browser's change over HTTP/2 (no Host header, the host in
/// `:authority`) passes the Origin check when it is this Keel's, and is
/// refused when it is another site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_http2_change_is_checked_against_its_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path()).expect("certificates");
    let c = collector(dir.path(), &pki).await;
    let mut send = h2(&pki, c.api).await;
    let origin = format!("https://127.0.0.1:{}", c.api.port());
    for (from, want) in [(origin.as_str(), 200), ("https://evil.example", 403)] {
        let req = hyper::Request::post(format!("{origin}/-/reload"))
            .header("origin", from)
            .body(http_body_util::Full::new(bytes_of(Vec::new())))
            .expect("request");
        let answer = send.send_request(req).await.expect("answer");
        assert_eq!(answer.status(), want, "Origin {from}");
    }
}
