//! Taking turns: tests that start processes or time retries hold the
//! turn while they run, so on two cores they do not run beside each
//! other. A crate's integration tests are one binary (one process), so
//! this one lock spans all its files.

use tokio::sync::{Mutex, MutexGuard};

static TURN: Mutex<()> = Mutex::const_new(());

/// Wait for the turn; it is given back when the guard drops.
pub async fn take() -> MutexGuard<'static, ()> {
    TURN.lock().await
}

/// [`take`] for a test without an async runtime.
pub fn take_blocking() -> MutexGuard<'static, ()> {
    TURN.blocking_lock()
}
