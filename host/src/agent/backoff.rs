//! The restart schedule of a supervised agent: 1 s, doubling, capped at
//! 60 s; an agent that ran at least `stable_after` counts as healthy and the
//! next failure starts again at 1 s. Pure: no clock, no sleeping.

use std::time::Duration;

/// First restart delay.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Largest restart delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);

/// Restart delays for one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartBackoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    next: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_MAX_DELAY)
    }
}

impl RestartBackoff {
    /// A schedule starting at `initial`, doubling up to `max`, reset after a
    /// run of at least `stable_after`.
    pub fn new(initial: Duration, max: Duration, stable_after: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            stable_after,
            next: initial,
        }
    }

    /// The delay before restarting an agent that ran for `ran_for`.
    pub fn delay_after_run(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.stable_after {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_doubles_from_one_second_to_sixty() {
        let mut b = RestartBackoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| b.delay_after_run(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_stable_run_resets_the_schedule() {
        let mut b = RestartBackoff::default();
        for _ in 0..4 {
            b.delay_after_run(Duration::from_millis(10));
        }
        assert_eq!(
            b.delay_after_run(Duration::from_secs(59)),
            Duration::from_secs(16)
        );
        assert_eq!(
            b.delay_after_run(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(b.delay_after_run(Duration::ZERO), Duration::from_secs(2));
    }
}
