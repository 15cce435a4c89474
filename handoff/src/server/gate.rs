//! The readiness gate the server waits on before serving namespace requests.
//!
//! Owns the "is the node ready" state as the server sees it. The host opens
//! it when its readiness backend signals ready (or fails it with a reason).
//! Requests that arrive earlier wait here — a bounded queue, see
//! `ServerConfig::max_queued_requests` — instead of being rejected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nodeinit_sys::deadline::{self, Deadline};

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Closed,
    Open,
    Failed(String),
}

/// A shareable open/closed/failed flag with waiting. Clones share state.
///
/// ```
/// use nodeinit_handoff::ReadyGate;
/// let gate = ReadyGate::new();
/// assert!(!gate.is_open());
/// gate.open();
/// assert!(gate.is_open());
/// ```
#[derive(Debug, Clone)]
pub struct ReadyGate {
    inner: Arc<(Mutex<Inner>, Condvar)>,
}

/// Called after every state change (the server's event loop wakes on it).
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    state: State,
    wakers: Vec<Waker>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("state", &self.state)
            .field("wakers", &self.wakers.len())
            .finish()
    }
}

/// What a wait on the gate ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The node is ready.
    Open,
    /// The boot failed; the reason given to [`ReadyGate::fail`].
    Failed(String),
    /// The wait timed out.
    TimedOut,
    /// The waiter's stop flag was set (server shutting down).
    Interrupted,
}

impl Default for ReadyGate {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadyGate {
    /// A closed gate.
    pub fn new() -> Self {
        Self {
            inner: Arc::new((
                Mutex::new(Inner {
                    state: State::Closed,
                    wakers: Vec::new(),
                }),
                Condvar::new(),
            )),
        }
    }

    /// An already open gate (the node is ready, or readiness is not gated).
    pub fn opened() -> Self {
        let gate = Self::new();
        gate.open();
        gate
    }

    fn set(&self, state: State) {
        let (lock, changed) = &*self.inner;
        let wakers = {
            let mut inner = lock.lock().unwrap_or_else(PoisonError::into_inner);
            inner.state = state;
            inner.wakers.clone()
        };
        changed.notify_all();
        for wake in wakers {
            wake();
        }
    }

    /// Call `waker` after every change of the gate's state.
    pub(crate) fn add_waker(&self, waker: Waker) {
        let (lock, _) = &*self.inner;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wakers
            .push(waker);
    }

    /// The gate's state without waiting: `Some(Open)`, `Some(Failed(..))`,
    /// or `None` while closed.
    pub(crate) fn peek(&self) -> Option<GateOutcome> {
        let (lock, _) = &*self.inner;
        match &lock.lock().unwrap_or_else(PoisonError::into_inner).state {
            State::Open => Some(GateOutcome::Open),
            State::Failed(reason) => Some(GateOutcome::Failed(reason.clone())),
            State::Closed => None,
        }
    }

    /// Open the gate: queued requests proceed, later ones do not wait.
    pub fn open(&self) {
        self.set(State::Open);
    }

    /// Fail the gate: queued and later requests get `not_ready` with `reason`.
    pub fn fail(&self, reason: impl Into<String>) {
        self.set(State::Failed(reason.into()));
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        let (lock, _) = &*self.inner;
        lock.lock().unwrap_or_else(PoisonError::into_inner).state == State::Open
    }

    /// Wake every waiter so it re-checks its stop flag. Set the flag first.
    pub fn interrupt(&self) {
        let (lock, changed) = &*self.inner;
        // Taking the lock orders this wake-up after any waiter's flag check.
        drop(lock.lock().unwrap_or_else(PoisonError::into_inner));
        changed.notify_all();
    }

    /// Wait until the gate opens or fails, at most `timeout`, or until `stop`
    /// is set (followed by [`ReadyGate::interrupt`]).
    pub fn wait(&self, timeout: Duration, stop: &AtomicBool) -> GateOutcome {
        let (lock, changed) = &*self.inner;
        let inner = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (inner, _) =
            deadline::wait_until(changed, inner, Some(Deadline::after(timeout)), |inner| {
                !matches!(inner.state, State::Closed) || stop.load(Ordering::Acquire)
            });
        match &inner.state {
            State::Open => GateOutcome::Open,
            State::Failed(reason) => GateOutcome::Failed(reason.clone()),
            State::Closed if stop.load(Ordering::Acquire) => GateOutcome::Interrupted,
            State::Closed => GateOutcome::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_released_by_open_fail_and_interrupt() {
        for (action, expected) in [
            (0, GateOutcome::Open),
            (1, GateOutcome::Failed("no cgroup2".into())),
            (2, GateOutcome::Interrupted),
        ] {
            let gate = ReadyGate::new();
            let stop = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (gate, stop) = (gate.clone(), stop.clone());
                std::thread::spawn(move || gate.wait(Duration::from_secs(600), &stop))
            };
            // Open, fail and the stop flag are sticky: it does not matter
            // whether the waiter is already waiting.
            match action {
                0 => gate.open(),
                1 => gate.fail("no cgroup2"),
                _ => {
                    stop.store(true, Ordering::Release);
                    gate.interrupt();
                }
            }
            assert_eq!(waiter.join().unwrap(), expected);
        }
    }

    #[test]
    fn closed_gate_times_out() {
        assert_eq!(
            ReadyGate::new().wait(Duration::ZERO, &AtomicBool::new(false)),
            GateOutcome::TimedOut
        );
    }
}
