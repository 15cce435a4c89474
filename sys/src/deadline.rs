//! Deadlines: one rule for turning "until then" into a `poll` timeout, and
//! one bounded condvar wait.
//!
//! The rule: the time left is rounded *up* to the next millisecond (so a
//! wait never returns a hair early and spins on a zero timeout), capped at
//! `i32::MAX` ms; no deadline means "wait forever" (`-1`). Owns no clock but
//! the monotonic one.

use std::sync::{Condvar, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A point in monotonic time to stop waiting at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now (saturating far in the future).
    ///
    /// ```
    /// use std::time::Duration;
    /// use nodeinit_sys::Deadline;
    /// let d = Deadline::after(Duration::from_millis(1500));
    /// assert!((1499..=1500).contains(&d.poll_timeout_ms()));
    /// assert!(!d.has_passed());
    /// ```
    pub fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Self(
            now.checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400)),
        )
    }

    /// At `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn has_passed(self) -> bool {
        self.remaining().is_zero()
    }

    /// The time left as a `poll(2)` timeout in milliseconds, rounded up.
    pub fn poll_timeout_ms(self) -> i32 {
        duration_to_poll_ms(self.remaining())
    }
}

/// The `poll(2)` timeout for waiting until the nearest of `deadlines`
/// (`-1`: none, wait forever).
///
/// ```
/// use std::time::Duration;
/// use nodeinit_sys::deadline::{poll_timeout_ms, Deadline};
/// assert_eq!(poll_timeout_ms([None, None]), -1);
/// let soon = Deadline::after(Duration::from_millis(10));
/// assert!(poll_timeout_ms([None, Some(soon)]) <= 10);
/// ```
pub fn poll_timeout_ms(deadlines: impl IntoIterator<Item = Option<Deadline>>) -> i32 {
    deadlines
        .into_iter()
        .flatten()
        .min()
        .map_or(-1, Deadline::poll_timeout_ms)
}

/// `duration` as whole milliseconds for `poll(2)`, rounded up, at most
/// `i32::MAX`.
pub fn duration_to_poll_ms(duration: Duration) -> i32 {
    i32::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
}

/// Waits on `condvar` until `done` holds or `deadline` passes (`None`:
/// forever). Returns the guard and whether `done` held. A poisoned mutex is
/// taken over (the data is still the caller's to judge).
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// use nodeinit_sys::{deadline::wait_until, Deadline};
/// let (m, cv) = (Mutex::new(0), Condvar::new());
/// let (guard, done) = wait_until(&cv, m.lock().unwrap(), Some(Deadline::after(Duration::from_millis(5))), |n| *n > 0);
/// assert!(!done && *guard == 0);
/// ```
pub fn wait_until<'a, T>(
    condvar: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Deadline>,
    mut done: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    loop {
        if done(&mut guard) {
            return (guard, true);
        }
        match deadline {
            None => {
                guard = condvar.wait(guard).unwrap_or_else(PoisonError::into_inner);
            }
            Some(d) => {
                let left = d.remaining();
                if left.is_zero() {
                    return (guard, false);
                }
                guard = condvar
                    .wait_timeout(guard, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rounds_up_and_caps() {
        assert_eq!(duration_to_poll_ms(Duration::ZERO), 0);
        assert_eq!(duration_to_poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_to_poll_ms(Duration::from_micros(1001)), 2);
        assert_eq!(duration_to_poll_ms(Duration::from_millis(7)), 7);
        assert_eq!(duration_to_poll_ms(Duration::from_secs(u64::MAX)), i32::MAX);
        assert_eq!(Deadline::at(Instant::now()).poll_timeout_ms(), 0);
    }

    #[test]
    fn a_wait_ends_when_the_condition_holds_or_the_deadline_passes() {
        let shared = Arc::new((Mutex::new(false), Condvar::new()));
        let s = Arc::clone(&shared);
        let t = std::thread::spawn(move || {
            *s.0.lock().unwrap() = true;
            s.1.notify_all();
        });
        let (guard, done) = wait_until(&shared.1, shared.0.lock().unwrap(), None, |v| *v);
        assert!(done && *guard);
        drop(guard);
        t.join().unwrap();
        let d = Deadline::after(Duration::from_millis(20));
        let (_g, done) = wait_until(&shared.1, shared.0.lock().unwrap(), Some(d), |v| !*v);
        // Not done, and never given up before the deadline.
        assert!(!done);
        assert!(d.has_passed());
    }
}
