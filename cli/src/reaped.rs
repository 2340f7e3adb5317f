//! A child process that is killed and waited for when dropped, so a
//! benchmark that fails half-way leaves nothing running.

use std::process::Child;

/// Kills and reaps its child on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
