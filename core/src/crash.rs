//! Named crash points for crash tests: a test build (`debug_assertions`)
//! run with `KEEL_CRASH_AT=<name>` aborts the process the first time it
//! reaches [`point`]`(<name>)`, as a `kill -9` at that exact moment would,
//! so a test reaches "the SMTP server accepted the page, the acceptance is
//! not recorded yet" by name instead of by a timed SIGKILL. Release builds
//! compile every point to nothing.
//!
//! `KEEL_HOLD_AT=<name>` instead stops the whole process there (SIGSTOP
//! to itself, the first time it is reached), as a long pause or a frozen
//! VM would: every thread halts, lease renewals too, until the test sends
//! SIGCONT. That is how a test holds a leader past its lease at the
//! moment it is about to act.
//!
//! The points: `before_fenced_write` (a leader's changes, stamped with
//! its fencing token, are about to be written), `after_page_intent` (a page's intent is durable, nothing
//! sent), `after_smtp_accept` / `after_webhook_accept` (the receiver took
//! it, nothing recorded), `after_page_recorded` (its acceptance is
//! durable).

/// The environment variable naming the point to crash at.
pub const ENV: &str = "KEEL_CRASH_AT";

/// The environment variable naming the point to stop the process at.
pub const HOLD_ENV: &str = "KEEL_HOLD_AT";

/// Abort here if `KEEL_CRASH_AT` names this point (test builds only).
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    {
        static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let at = AT.get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()));
        if at.as_deref() == Some(name) {
            eprintln!("{ENV}={name}: crashing here");
            std::process::abort();
        }
        static HOLD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        static HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let hold = HOLD.get_or_init(|| std::env::var(HOLD_ENV).ok().filter(|s| !s.is_empty()));
        if hold.as_deref() == Some(name) && !HELD.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("{HOLD_ENV}={name}: stopping here until SIGCONT");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            eprintln!("{HOLD_ENV}={name}: continued");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
