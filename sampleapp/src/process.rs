//! The life of one sample-app process: read the spec, set up telemetry,
//! bind, report readiness to the supervisor, serve until told to stop,
//! drain, exit.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::spec::{ProcessSpec, TierSpec};
use crate::telemetry::{Identity, init_logging, init_tracing};
use crate::{cache, db, lb, web};

/// The line a child prints on stdout once it listens: `KEEL_READY <addr>`.
pub const READY_PREFIX: &str = "KEEL_READY ";

/// Set by the supervisor: the child exits when its stdin closes, i.e. when
/// the supervisor is gone, so that no process outlives `keel up`.
pub const SUPERVISED_ENV: &str = "KEEL_SUPERVISED";

/// Longest a process waits for in-flight requests after SIGTERM.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Read a spec file; errors name the file, line and column.
pub fn read_spec(path: &Path) -> anyhow::Result<ProcessSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

/// Run the process described by the spec at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let spec = read_spec(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let provider = runtime.block_on(run_spec(spec))?;
    // The batch span processor flushes on its own thread: outside the runtime.
    if let Err(e) = provider.shutdown() {
        eprintln!("keel sampleapp: flushing spans failed: {e}");
    }
    Ok(())
}

async fn run_spec(
    spec: ProcessSpec,
) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    let id = Identity::new(spec.tier.tier(), &spec.name);
    init_logging(&id, &spec.log_file)?;
    let provider = init_tracing(&id, spec.otlp_endpoint.as_deref(), spec.otlp_flush_interval)?;
    watch_parent();
    let listener = TcpListener::bind(spec.listen)
        .await
        .with_context(|| format!("{}: cannot listen on {}", spec.name, spec.listen))?;
    let addr = listener.local_addr()?;
    let router: Router = match spec.tier {
        TierSpec::Lb {
            config,
            backends,
            admin_listen,
        } => {
            let (shop, admin) = lb::router(&id, config, backends);
            let l = TcpListener::bind(admin_listen)
                .await
                .with_context(|| format!("{}: cannot listen on {admin_listen}", spec.name))?;
            tokio::spawn(async move { axum::serve(l, admin).await });
            shop
        }
        TierSpec::Web {
            capacity,
            cache,
            db,
            session_ttl,
            product_ttl,
            warm_up,
        } => web::router(
            &id,
            web::WebSettings {
                capacity,
                cache,
                db,
                session_ttl,
                product_ttl,
                warm_up,
            },
        ),
        TierSpec::Cache { config } => cache::router(&id, config),
        TierSpec::Db {
            config,
            role,
            epoch,
            data_dir,
        } => db::router(&id, &spec.name, config, role, epoch, &data_dir).await?,
    };
    announce_ready(addr)?;
    tracing::info!(%addr, tier = id.tier, "listening");
    serve(listener, router).await?;
    tracing::info!("stopped");
    Ok(provider)
}

/// Tell the supervisor where this process listens.
fn announce_ready(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_PREFIX}{addr}")?;
    out.flush()
}

/// Exit when the supervisor goes away (its end of our stdin closes).
fn watch_parent() {
    if std::env::var_os(SUPERVISED_ENV).is_none() {
        return;
    }
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

use keel_core::shutdown::shutdown_signal;

/// Serve until a shutdown signal, then let in-flight requests finish (at
/// most [`DRAIN_LIMIT`]).
async fn serve(listener: TcpListener, router: Router) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("draining");
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => { r??; }
        _ = async { let _ = rx.await; tokio::time::sleep(DRAIN_LIMIT).await } => {
            tracing::warn!("drain limit reached; exiting with requests in flight");
        }
    }
    Ok(())
}
