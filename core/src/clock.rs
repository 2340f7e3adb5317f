//! The injected clock.
//!
//! Production code gets a [`SystemClock`]; tests and replays get a
//! [`ManualClock`] whose time moves only when the caller moves it, so that
//! time-based logic is tested without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, oneshot};

/// A boxed, sendable future, as returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time that logic depends on.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// A future that completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: SystemTime) -> Sleep;

    /// A future that completes after `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep {
        self.sleep_until(self.now() + d)
    }

    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

/// Milliseconds since the Unix epoch (negative before it), saturating at
/// the ends of i64 (about ±292 million years).
pub fn unix_ms(t: SystemTime) -> i64 {
    checked_unix_ms(t).unwrap_or_else(|| {
        if t >= std::time::UNIX_EPOCH {
            i64::MAX
        } else {
            i64::MIN
        }
    })
}

/// Milliseconds since the Unix epoch, `None` where they do not fit an i64.
pub fn checked_unix_ms(t: SystemTime) -> Option<i64> {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(e) => i64::try_from(e.duration().as_millis()).ok().map(|v| -v),
    }
}

/// The time `ms` milliseconds from the Unix epoch (the inverse of [`unix_ms`]).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        std::time::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// A fixed schedule on a clock: ticks at `first`, `first + every`, …;
/// ticks the clock passed while the caller was busy (or that it jumped
/// over) are skipped, not run late in a burst, and a jump during the
/// caller's work never pushes the next tick later.
#[derive(Debug, Clone)]
pub struct Ticker {
    next: SystemTime,
    every: Duration,
}

impl Ticker {
    /// A schedule whose first tick is at `first`.
    pub fn new(first: SystemTime, every: Duration) -> Self {
        Self { next: first, every }
    }

    /// Sleep until the next tick; the time woken (the next tick is then
    /// the first of the schedule after it).
    pub async fn tick(&mut self, clock: &dyn Clock) -> SystemTime {
        clock.sleep_until(self.next).await;
        let woke = clock.now();
        while self.next <= woke && !self.every.is_zero() {
            self.next += self.every;
        }
        woke
    }
}

/// The operating system's wall clock, with tokio timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        match deadline.duration_since(SystemTime::now()) {
            Ok(wait) if !wait.is_zero() => Box::pin(tokio::time::sleep(wait)),
            // Already due: a zero-length tokio sleep would still wait for
            // the next timer tick (1 ms), capping loops at ~1,000 rounds/s.
            _ => Box::pin(std::future::ready(())),
        }
    }
}

#[derive(Debug)]
struct Sleeper {
    deadline: SystemTime,
    wake: oneshot::Sender<()>,
}

#[derive(Debug)]
struct ManualState {
    now: SystemTime,
    sleepers: Vec<Sleeper>,
}

/// A clock that moves only when told to.
///
/// Tests drive it with [`ManualClock::advance`] / [`ManualClock::set`], and
/// can await [`ManualClock::next_deadline`] to learn when the code under test
/// next wants to wake up (the "run until idle" pattern, with no real sleep).
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
    registered: Arc<Notify>,
}

impl ManualClock {
    /// A manual clock that starts at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            state: Arc::new(Mutex::new(ManualState {
                now: start,
                sleepers: Vec::new(),
            })),
            registered: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // A panic while holding this lock can only come from a bug in this
        // module; the state stays consistent, so recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move time to `t` (never backwards) and wake every sleeper whose
    /// deadline has passed.
    pub fn set(&self, t: SystemTime) {
        let mut st = self.lock();
        if t > st.now {
            st.now = t;
        }
        let now = st.now;
        let (due, keep): (Vec<_>, Vec<_>) = st.sleepers.drain(..).partition(|s| s.deadline <= now);
        st.sleepers = keep;
        drop(st);
        for s in due {
            let _ = s.wake.send(());
        }
    }

    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let t = self.lock().now + d;
        self.set(t);
    }

    /// The earliest deadline anyone is sleeping on, if any.
    pub fn peek_deadline(&self) -> Option<SystemTime> {
        self.lock().sleepers.iter().map(|s| s.deadline).min()
    }

    /// Wait until at least one sleeper is registered and return the earliest
    /// deadline. Use it to step time exactly to the next event.
    pub async fn next_deadline(&self) -> SystemTime {
        loop {
            let notified = self.registered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.peek_deadline() {
                return d;
            }
            notified.await;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().now
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep {
        let mut st = self.lock();
        if deadline <= st.now {
            return Box::pin(std::future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        st.sleepers.push(Sleeper { deadline, wake: tx });
        drop(st);
        self.registered.notify_waiters();
        Box::pin(async move {
            // The sender is dropped only if the clock is dropped: then no one
            // can ever wake us, and returning is the only sensible choice.
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ticker_keeps_its_schedule_and_skips_what_the_clock_jumped_over() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(t0);
        let mut t = Ticker::new(t0, Duration::from_secs(10));
        assert_eq!(t.tick(&clock).await, t0, "the first tick at once");
        // The clock jumps 25 s: one tick now, the next on the schedule
        // (t0 + 30 s), not 10 s after the jump.
        clock.set(t0 + Duration::from_secs(25));
        assert_eq!(t.tick(&clock).await, t0 + Duration::from_secs(25));
        let next = tokio::spawn({
            let clock = clock.clone();
            async move { t.tick(&clock).await }
        });
        assert_eq!(clock.next_deadline().await, t0 + Duration::from_secs(30));
        clock.set(t0 + Duration::from_secs(30));
        assert_eq!(next.await.expect("tick"), t0 + Duration::from_secs(30));
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_time_reaches_them() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(t0);
        let c2 = clock.clone();
        let task = tokio::spawn(async move {
            c2.sleep_until(t0 + Duration::from_secs(5)).await;
            c2.now()
        });
        let d = clock.next_deadline().await;
        assert_eq!(d, t0 + Duration::from_secs(5));
        clock.advance(Duration::from_secs(4));
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(1));
        let woke_at = task.await.expect("task");
        assert_eq!(woke_at, t0 + Duration::from_secs(5));
        assert_eq!(clock.peek_deadline(), None);
    }

    #[tokio::test]
    async fn manual_clock_never_moves_backwards() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let clock = ManualClock::new(t0);
        clock.set(SystemTime::UNIX_EPOCH);
        assert_eq!(clock.now(), t0);
        clock.sleep_until(t0).await; // already due: returns at once
    }
}
