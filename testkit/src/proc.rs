//! Child processes that never outlive the test or bench that started
//! them, and ports to give them.

use std::process::Child;

/// Kills and reaps its child on drop, so a test or benchmark that fails
/// half-way leaves nothing running (and no zombie: PID 1 here reaps none).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on 127.0.0.1 now (the OS picks it; nothing holds it
/// afterwards, so use it at once).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
