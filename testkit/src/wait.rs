//! Waiting on a condition, never on a clock: poll until it holds or a
//! deadline passes, and say what never happened.

use std::time::{Duration, Instant};

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {limit:?} waiting for {what}")]
pub struct Timeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub limit: Duration,
}

/// Poll `check` every `every` until it returns `Some`, for at most
/// `limit`; the value, or a [`Timeout`] naming `what`.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Result<T, Timeout> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Timeout {
                what: what.to_owned(),
                limit,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// [`within`] for tests: polls every 25 ms and panics with the message
/// when `limit` passes.
pub async fn until<T>(what: &str, limit: Duration, check: impl AsyncFnMut() -> Option<T>) -> T {
    match within(what, limit, Duration::from_millis(25), check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub async fn listening(what: &str, port: u16, limit: Duration) -> Result<(), Timeout> {
    within(what, limit, Duration::from_millis(20), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
}
