//! Process limits the server depends on, and rate-limited complaints when
//! it hits them.
//!
//! Owns raising `RLIMIT_NOFILE` (each live allocation costs the server 4
//! FDs, each connection 1) and the back-off bookkeeping for `accept` under
//! `EMFILE`/`ENFILE`. It must never lower a limit.

use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raise the soft `RLIMIT_NOFILE` of this process to its hard limit and
/// return the new `(soft, hard)`. The host calls it at start; the server
/// calls it again when it starts (harmless: it never lowers anything).
///
/// ```
/// let (soft, hard) = nodeinit_handoff::raise_nofile_limit().unwrap();
/// assert_eq!(soft, hard);
/// ```
///
/// # Errors
///
/// `getrlimit`/`setrlimit` failing, with the limits involved.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| std::io::Error::other(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| {
            std::io::Error::other(format!(
                "setrlimit(RLIMIT_NOFILE) from {soft} to {hard}: {e}"
            ))
        })?;
    }
    Ok((hard.max(soft), hard))
}

/// At most `burst` log lines per `interval`, counting what it swallowed.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    burst: u32,
    /// When the current interval began, and lines logged in it.
    window: Option<(Instant, u32)>,
    suppressed: u64,
}

impl RateLimit {
    /// One line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self::with_burst(interval, 1)
    }

    /// `burst` lines per `interval`: a few in a row stay readable, a flood
    /// is one line per interval saying how many were not logged.
    pub(crate) fn with_burst(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            window: None,
            suppressed: 0,
        }
    }

    /// Whether a line about `what` (plural: "invalid handoff messages") may
    /// be logged now; when lines were swallowed before it, one line says
    /// how many first.
    pub(crate) fn admit(&mut self, what: &str) -> bool {
        match self.allow(Instant::now()) {
            None => false,
            Some(0) => true,
            Some(suppressed) => {
                tracing::info!(
                    suppressed,
                    "{suppressed} more lines about {what} were not logged (at most {} per {:?})",
                    self.burst,
                    self.interval
                );
                true
            }
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match &mut self.window {
            Some((start, logged)) if now.duration_since(*start) < self.interval => {
                if *logged < self.burst {
                    *logged += 1;
                    return Some(std::mem::take(&mut self.suppressed));
                }
                self.suppressed += 1;
                None
            }
            _ => {
                self.window = Some((now, 1));
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Exponential back-off for `accept` while the process is out of FDs:
/// 50 ms doubling to 1 s, reset by the next successful accept.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
    until: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self {
            delay: Self::FIRST,
            until: None,
        }
    }

    /// Stop accepting until `now + delay`; the delay doubles.
    pub(crate) fn pause(&mut self, now: Instant) {
        self.until = Some(now + self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// An accept worked: the next pause starts short again.
    pub(crate) fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    /// When accepting resumes, if paused.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the pause is over at `now` (clears it).
    pub(crate) fn expired(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now >= until => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_swallows() {
        let mut limit = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        for i in 1..1000u64 {
            assert_eq!(limit.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.allow(t0 + Duration::from_secs(61)), Some(999));
    }

    #[test]
    fn a_burst_is_logged_then_the_rest_counted() {
        let mut limit = RateLimit::with_burst(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let allowed: Vec<Option<u64>> = (0..6u64)
            .map(|i| limit.allow(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(allowed, [Some(0), Some(0), Some(0), None, None, None]);
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let mut b = AcceptBackoff::new();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..8 {
            b.pause(t0);
            delays.push(b.until().unwrap() - t0);
        }
        assert_eq!(delays[0], Duration::from_millis(50));
        assert_eq!(delays[1], Duration::from_millis(100));
        assert_eq!(*delays.last().unwrap(), Duration::from_secs(1));
        assert!(!b.expired(t0));
        assert!(b.expired(t0 + Duration::from_secs(1)));
        b.reset();
        b.pause(t0);
        assert_eq!(b.until().unwrap() - t0, Duration::from_millis(50));
    }
}
