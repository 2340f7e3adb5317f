//! Named crash points for crash tests: a test build (`debug_assertions`)
//! run with `KEEL_CRASH_AT=<name>` aborts the process the first time it
//! reaches [`point`]`(<name>)`, as a `kill -9` at that exact moment would,
//! so a test reaches "the SMTP server accepted the page, the acceptance is
//! not recorded yet" by name instead of by a timed SIGKILL. Release builds
//! compile every point to nothing.
//!
//! The points: `after_page_intent` (a page's intent is durable, nothing
//! sent), `after_smtp_accept` / `after_webhook_accept` (the receiver took
//! it, nothing recorded), `after_page_recorded` (its acceptance is
//! durable).

/// The environment variable naming the point to crash at.
pub const ENV: &str = "KEEL_CRASH_AT";

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
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
