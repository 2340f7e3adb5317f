//! What the controller's tests share: explicit times (the manual Clock's
//! epoch for these tests, and a second) and a set of ready instances.

use keel_controller::Instances;

/// The tests' start time (ms).
pub const T0: i64 = 1_796_000_000_000;
/// A second (ms).
pub const S: i64 = 1000;

/// Instance names `i0`, `i1`, …
pub fn names(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("i{i}")).collect()
}

/// `n` instances, all ready.
pub fn inst(n: u32) -> Instances {
    Instances {
        current: n,
        ready: names(n),
        all: names(n),
    }
}
