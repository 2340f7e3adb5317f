//! Sending the buffer to the collector: one lane a signal, so a backlog
//! of logs or spans never holds up the metrics the controller scales on
//! (as the OpenTelemetry Collector runs a pipeline a signal). In each lane
//! the oldest batch goes first, and while a backlog drains every other
//! send is the newest batch that may go ahead
//! ([`DiskBuffer::peek_fresh`]), so fresh data keeps flowing.
//!
//! One request a batch: OTLP/HTTP protobuf, `Content-Encoding: gzip`,
//! and the batch's id in `Keel-Batch-Id` on every attempt, so the
//! collector can drop a repeat after an answer was lost. A 2xx answer
//! acknowledges the batch; 429 and 503 are retried after their
//! `Retry-After` when they give one; other 5xx answers and network errors
//! are retried with jittered exponential backoff; a 4xx other than 429
//! means the collector will never take the batch, so it is counted as
//! rejected and dropped (retrying would wedge the buffer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::clock::SharedClock;
use rand::Rng;
use tokio::sync::Notify;

use crate::buffer::{Batch, BufferError, DiskBuffer, Signal};
use crate::config::RetryConfig;
use crate::stats::Stats;

/// The header carrying a batch's id.
pub const BATCH_ID_HEADER: &str = "keel-batch-id";

/// The buffer shared by the producers and the shipper.
#[derive(Debug)]
pub struct Shared {
    /// The buffer.
    pub buffer: Mutex<DiskBuffer>,
    /// Woken when a batch is pushed: one a signal, in [`Signal::index`] order.
    pub pushed: [Notify; 3],
    /// The agent's counters.
    pub stats: Stats,
    /// Why the last attempt to send failed, until one succeeds.
    pub last_send_error: Mutex<Option<String>>,
    /// The collector this lane ships to (its base URL).
    pub collector: String,
    /// How batches are sent there.
    pub protocol: Protocol,
}

/// How a lane's batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP protobuf, gzip: `<base>/v1/<signal>`.
    Otlp,
    /// Prometheus remote write 1.0 (the body is a snappy-compressed
    /// `WriteRequest`): to the URL as it is, strictly oldest first.
    RemoteWrite,
}

impl Shared {
    /// Write a batch to the buffer and wake the shipper.
    pub fn push(&self, b: &Batch) -> Result<(), BufferError> {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b)?;
        Stats::add(&self.stats.buffered, b.signal, u64::from(b.records));
        self.pushed[b.signal.index()].notify_one();
        Ok(())
    }

    /// The lane to `collector` over `buffer`, nothing pushed yet.
    pub fn new(buffer: DiskBuffer, stats: Stats, collector: String) -> Self {
        Self {
            buffer: Mutex::new(buffer),
            pushed: [Notify::new(), Notify::new(), Notify::new()],
            stats,
            last_send_error: Mutex::new(None),
            collector,
            protocol: Protocol::Otlp,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    /// The collector took it.
    Accepted,
    /// Try again, after this long if the collector said.
    Retry(Option<Duration>, String),
    /// The collector will never take it.
    Rejected(String),
}

/// Send one batch once, over OTLP.
pub async fn send(client: &reqwest::Client, base: &str, b: &Batch, timeout: Duration) -> Attempt {
    send_as(Protocol::Otlp, client, base, b, timeout).await
}

/// Send one batch once, as `protocol` says.
pub async fn send_as(
    protocol: Protocol,
    client: &reqwest::Client,
    base: &str,
    b: &Batch,
    timeout: Duration,
) -> Attempt {
    let (url, encoding) = match protocol {
        Protocol::Otlp => (
            format!("{}{}", base.trim_end_matches('/'), b.signal.path()),
            "gzip",
        ),
        Protocol::RemoteWrite => (base.to_owned(), "snappy"),
    };
    let mut req = client
        .post(&url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", encoding)
        .header(BATCH_ID_HEADER, format!("{:032x}", b.id));
    if protocol == Protocol::RemoteWrite {
        req = req.header("X-Prometheus-Remote-Write-Version", "0.1.0");
    }
    let resp = req.timeout(timeout).body(b.body.clone()).send().await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(None, format!("{url}: {}", keel_tls::describe(&e))),
    };
    let status = resp.status();
    if status.is_success() {
        return Attempt::Accepted;
    }
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let why = format!(
        "{url}: HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    // A refused token (401/403) is a setting to fix, not bad data: the
    // batch stays buffered and is sent again once the token is right.
    if matches!(status.as_u16(), 401 | 403 | 429) || status.is_server_error() {
        Attempt::Retry(after, why)
    } else {
        Attempt::Rejected(why)
    }
}

/// The wait before attempt `n + 1` after `n` failures: doubling from
/// `initial`, capped at `max`, jittered to between half and all of it.
pub fn backoff(cfg: &RetryConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let full = cfg
        .initial
        .saturating_mul(1u32 << failures.min(20))
        .min(cfg.max);
    let half = full / 2;
    half + full.mul_f64(rng.random_range(0.0..=0.5))
}

/// Ship the buffer to its collector forever (until the task is
/// dropped): a lane a signal.
pub async fn run(
    shared: Arc<Shared>,
    client: reqwest::Client,
    retry: RetryConfig,
    metrics_reorder_window: Duration,
    clock: SharedClock,
) {
    let base = shared.collector.clone();
    let lane = |signal| {
        lane(
            signal,
            &shared,
            &client,
            &base,
            &retry,
            metrics_reorder_window,
            &clock,
        )
    };
    tokio::join!(
        lane(Signal::Metrics),
        lane(Signal::Logs),
        lane(Signal::Traces)
    );
}

/// Ship the batches of `signal` forever.
async fn lane(
    signal: Signal,
    shared: &Shared,
    client: &reqwest::Client,
    base: &str,
    retry: &RetryConfig,
    metrics_reorder_window: Duration,
    clock: &SharedClock,
) {
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut failures = 0u32;
    let window_ms = i64::try_from(metrics_reorder_window.as_millis()).unwrap_or(i64::MAX);
    let mut fresh_turn = false;
    loop {
        let next = {
            let b = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
            // A failing batch is retried as it is, lane unchanged. Remote
            // write goes strictly oldest first: Prometheus, Mimir and
            // Thanos refuse a series' samples older than one they hold.
            if failures == 0 && shared.protocol != Protocol::RemoteWrite {
                fresh_turn = !fresh_turn;
            }
            let fresh = if fresh_turn {
                b.peek_fresh(signal, window_ms)
            } else {
                Ok(None)
            };
            match fresh {
                Ok(None) => b.peek_signal(signal),
                other => other,
            }
        };
        let b = match next {
            Ok(Some(b)) => b,
            Ok(None) => {
                shared.pushed[signal.index()].notified().await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "disk buffer: cannot read the next batch");
                clock.sleep(backoff(retry, failures, &mut rng)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        match send_as(shared.protocol, client, base, &b, retry.timeout).await {
            Attempt::Accepted => {
                failures = 0;
                *shared
                    .last_send_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                Stats::add(&shared.stats.sent, b.signal, u64::from(b.records));
                let acked = shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ack(b.id);
                if let Err(e) = acked {
                    tracing::error!(error = %e, "disk buffer: cannot record an acknowledgement");
                }
            }
            Attempt::Rejected(why) => {
                failures = 0;
                Stats::add(&shared.stats.rejected, b.signal, u64::from(b.records));
                tracing::warn!(records = b.records, signal = b.signal.name(), %why, "the collector rejected a batch; dropped");
                let _ = shared
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ack(b.id);
            }
            Attempt::Retry(after, why) => {
                Stats::add(&shared.stats.failed, b.signal, 1);
                *shared
                    .last_send_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                let wait = after.unwrap_or_else(|| backoff(retry, failures, &mut rng));
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(%why, retry_in = ?wait, failures = failures + 1, "sending a batch failed; it stays buffered");
                }
                failures = failures.saturating_add(1);
                clock.sleep(wait).await;
            }
        }
    }
}

use rand::SeedableRng;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Batch, Signal};

    /// `app` on a free port, a buffer holding a batch of each `(id,
    /// signal)`, and the shipper sending it there (abort the task to stop).
    async fn ship_to(
        app: axum::Router,
        batches: &[(u128, Signal)],
    ) -> (Arc<Shared>, tokio::task::JoinHandle<()>, tempfile::TempDir) {
        ship_as(app, batches, Protocol::Otlp).await
    }

    /// As [`ship_to`], sending as `protocol`.
    async fn ship_as(
        app: axum::Router,
        batches: &[(u128, Signal)],
        protocol: Protocol,
    ) -> (Arc<Shared>, tokio::task::JoinHandle<()>, tempfile::TempDir) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, app).await });
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = DiskBuffer::open(dir.path(), 1 << 30, false).expect("open");
        for &(id, signal) in batches {
            buffer
                .push(&Batch {
                    id,
                    signal,
                    records: 1,
                    created_ms: id as i64,
                    cursor: None,
                    body: vec![0; 10],
                })
                .expect("push");
        }
        let base = match protocol {
            Protocol::Otlp => format!("http://{addr}"),
            Protocol::RemoteWrite => format!("http://{addr}/w"),
        };
        let mut shared = Shared::new(buffer, Stats::default(), base);
        shared.protocol = protocol;
        let shared = Arc::new(shared);
        let clock: SharedClock = Arc::new(keel_core::clock::SystemClock);
        let task = tokio::spawn(run(
            shared.clone(),
            reqwest::Client::new(),
            RetryConfig::default(),
            Duration::from_secs(300),
            clock,
        ));
        (shared, task, dir)
    }

    /// The order in which a backlog of batches 1..=6 of `signal`, sent
    /// as `protocol` to `path`, arrives.
    async fn drain_order(path: &str, signal: Signal, protocol: Protocol) -> Vec<u128> {
        let got = Arc::new(Mutex::new(Vec::<u128>::new()));
        let seen = got.clone();
        let app = axum::Router::new().route(
            path,
            axum::routing::post(move |h: axum::http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    let id = h
                        .get(BATCH_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| u128::from_str_radix(v, 16).ok())
                        .unwrap_or(0);
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                }
            }),
        );
        let backlog: Vec<_> = (1..=6).map(|id| (id, signal)).collect();
        let (shared, task, _dir) = ship_as(app, &backlog, protocol).await;
        while shared
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
            .batches
            > 0
        {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[tokio::test]
    async fn a_backlog_drains_with_the_newest_batches_sent_between_its_oldest() {
        assert_eq!(
            drain_order("/v1/logs", Signal::Logs, Protocol::Otlp).await,
            vec![6, 1, 5, 2, 4, 3],
            "newest and oldest take turns"
        );
    }

    /// A remote TSDB refuses a series' samples older than one it holds:
    /// remote write never lets a newer batch ahead.
    #[tokio::test]
    async fn remote_write_drains_strictly_oldest_first() {
        assert_eq!(
            drain_order("/w", Signal::Metrics, Protocol::RemoteWrite).await,
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_ne!(
            drain_order("/v1/metrics", Signal::Metrics, Protocol::Otlp).await,
            vec![1, 2, 3, 4, 5, 6],
            "OTLP metrics within the window do take turns"
        );
    }

    #[tokio::test]
    async fn a_collector_refusing_logs_still_gets_the_metrics() {
        let metrics = Arc::new(Notify::new());
        let seen = metrics.clone();
        let app = axum::Router::new()
            .route(
                "/v1/logs",
                axum::routing::post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route(
                "/v1/metrics",
                axum::routing::post(move || {
                    let seen = seen.clone();
                    async move { seen.notify_one() }
                }),
            );
        // A backlog of logs the collector will not take, then metrics.
        let (shared, task, _dir) = ship_to(
            app,
            &[(1, Signal::Logs), (2, Signal::Logs), (3, Signal::Metrics)],
        )
        .await;
        tokio::time::timeout(Duration::from_secs(30), metrics.notified())
            .await
            .expect("the metrics batch arrives behind the refused logs");
        // Acknowledged: only the two log batches are left, still retried.
        let left = loop {
            let left = {
                let b = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
                (b.stats().batches == 2).then(|| b.peek().expect("peek").map(|x| x.id))
            };
            if let Some(left) = left {
                break left;
            }
            tokio::task::yield_now().await;
        };
        task.abort();
        assert_eq!(left, Some(1), "the log backlog is kept");
        let count = |c: &[std::sync::atomic::AtomicU64; 3], s: Signal| {
            c[s.index()].load(std::sync::atomic::Ordering::Relaxed)
        };
        assert!(count(&shared.stats.failed, Signal::Logs) >= 1);
        assert_eq!(count(&shared.stats.sent, Signal::Metrics), 1);
        assert_eq!(count(&shared.stats.sent, Signal::Logs), 0);
    }

    /// A refused sender token (401/403) is a setting to fix: the batch
    /// is kept and retried; a batch the collector calls bad (400) is not.
    #[tokio::test]
    async fn an_auth_refusal_keeps_the_batch_and_bad_data_does_not() {
        let status = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let answer = status.clone();
        let app = axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move || {
                let code = answer.load(std::sync::atomic::Ordering::SeqCst);
                async move { axum::http::StatusCode::from_u16(code).unwrap_or_default() }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        let batch = Batch {
            id: 1,
            signal: Signal::Logs,
            records: 1,
            created_ms: 0,
            cursor: None,
            body: vec![0; 10],
        };
        let client = reqwest::Client::new();
        for (code, keep) in [(401, true), (403, true), (400, false), (413, false)] {
            status.store(code, std::sync::atomic::Ordering::SeqCst);
            let a = send(&client, &base, &batch, Duration::from_secs(5)).await;
            let kept = matches!(a, Attempt::Retry(..));
            assert_eq!(kept, keep, "HTTP {code}");
            if !keep {
                assert!(matches!(a, Attempt::Rejected(_)), "HTTP {code}");
            }
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let cfg = RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (failures, full) in [(0, 100), (1, 200), (3, 800), (5, 2000), (30, 2000)] {
            for _ in 0..50 {
                let d = backoff(&cfg, failures, &mut rng).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "{failures}: {d} not in {full}/2..={full}"
                );
            }
        }
    }
}
