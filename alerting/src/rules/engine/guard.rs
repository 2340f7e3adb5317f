//! One rule's panic is that rule's failure, not the engine's: its
//! evaluation is caught and becomes its error (`health: err`), every
//! other rule keeps evaluating, the panic is counted, and the engine logs
//! it once per rule (the process' panic hook stays quiet for it).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a caught panic's error begins.
pub const PANIC: &str = "panic: ";

static PANICS: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

thread_local! {
    /// Whether this thread is inside [`isolated`].
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// The last panic caught here, as the hook saw it (message and place).
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Rule evaluations that panicked since the process started.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Chain a panic hook that keeps a rule's panic for its error instead of
/// printing it; every other panic goes to the hook that was there.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if INSIDE.with(Cell::get) {
                CAUGHT.with(|c| *c.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Run one rule's evaluation; a panic in it becomes `Err("panic: …")`.
pub(crate) fn isolated<T>(eval: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    install_hook();
    let was = INSIDE.with(|i| i.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(eval));
    INSIDE.with(|i| i.set(was));
    outcome.unwrap_or_else(|payload| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        let seen = CAUGHT.with(|c| c.borrow_mut().take());
        let message = seen.unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into())
        });
        Err(format!("{PANIC}{message}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_error_with_its_place_and_is_counted() {
        let before = panics();
        let r: Result<(), String> = isolated(|| panic!("bucket bounds"));
        let e = r.unwrap_err();
        assert!(e.starts_with(PANIC), "{e}");
        assert!(e.contains("bucket bounds"), "{e}");
        assert!(e.contains("guard.rs"), "the place is kept: {e}");
        assert!(panics() > before);
        assert_eq!(isolated(|| Ok::<_, String>(3)), Ok(3), "later rules run");
    }
}
