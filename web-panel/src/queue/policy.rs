//! Retry policies, one per job kind: how long to wait before the next
//! attempt, and when to give up (attempt count and/or a deadline measured
//! from when the job was enqueued).

use std::time::Duration;

use crate::clock::{millis, UnixMillis};

/// Delay between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    Fixed(Duration),
    /// `base * 2^(n-1)`, capped at `cap`, then spread by ±`jitter` (a
    /// fraction, 0.0–1.0) so failed jobs do not retry in lock-step.
    Exponential {
        base: Duration,
        cap: Duration,
        jitter: f64,
    },
}

/// When and how often a failed job is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Total attempts, the first included. `None`: no limit.
    pub max_attempts: Option<u32>,
    /// No attempt starts later than this after the job was enqueued.
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Ten attempts, exponential from 1 s up to 10 min.
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(600)).max_attempts(10)
    }
}

impl RetryPolicy {
    /// Retries every `every`; "every 5 minutes for 24 hours" is
    /// `fixed(300 s).max_attempts(288)`.
    pub fn fixed(every: Duration) -> Self {
        Self {
            backoff: Backoff::Fixed(every),
            max_attempts: None,
            max_age: None,
        }
    }

    pub fn exponential(base: Duration, cap: Duration) -> Self {
        Self {
            backoff: Backoff::Exponential {
                base,
                cap,
                jitter: 0.2,
            },
            max_attempts: None,
            max_age: None,
        }
    }

    /// One attempt, no retries.
    pub fn once() -> Self {
        Self::fixed(Duration::ZERO).max_attempts(1)
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    pub fn jitter(mut self, fraction: f64) -> Self {
        if let Backoff::Exponential { jitter, .. } = &mut self.backoff {
            *jitter = fraction.clamp(0.0, 1.0);
        }
        self
    }

    /// The wait after the `attempt`-th failed attempt (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, cap, jitter } => {
                let exp = attempt.saturating_sub(1).min(62);
                let raw = base.saturating_mul(1u32 << exp.min(31));
                let capped = raw.min(cap);
                let spread = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
                capped.mul_f64(spread).min(cap)
            }
        }
    }

    /// When to run again after `attempts` failed attempts, or `None` to
    /// give up.
    pub fn next_run(
        &self,
        attempts: u32,
        created_at: UnixMillis,
        now: UnixMillis,
    ) -> Option<UnixMillis> {
        if self.max_attempts.is_some_and(|max| attempts >= max) {
            return None;
        }
        let at = now.saturating_add(millis(self.delay(attempts)));
        if let Some(age) = self.max_age {
            if at > created_at.saturating_add(millis(age)) {
                return None;
            }
        }
        Some(at)
    }

    /// Whether a job claimed for the `attempts`-th time may still run.
    pub fn allows_attempt(&self, attempts: u32, created_at: UnixMillis, now: UnixMillis) -> bool {
        let within_count = self.max_attempts.is_none_or(|max| attempts <= max);
        let within_age = self
            .max_age
            .is_none_or(|age| now <= created_at.saturating_add(millis(age)));
        within_count && within_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_every_five_minutes_for_a_day_gives_288_attempts() {
        let p = RetryPolicy::fixed(Duration::from_secs(300)).max_attempts(288);
        let mut now = 0;
        let mut attempts = 1;
        while let Some(next) = p.next_run(attempts, 0, now) {
            assert_eq!(next - now, 300_000);
            now = next;
            attempts += 1;
        }
        assert_eq!(attempts, 288);
        assert_eq!(now, 287 * 300_000);
    }

    #[test]
    fn exponential_is_capped_and_jittered_within_bounds() {
        let p = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..40 {
            let d = p.delay(attempt);
            let ideal =
                Duration::from_secs(1u64 << (attempt - 1).min(20)).min(Duration::from_secs(60));
            assert!(d <= Duration::from_secs(60), "attempt {attempt}: {d:?}");
            assert!(
                d >= ideal.mul_f64(0.8),
                "attempt {attempt}: {d:?} < 0.8 * {ideal:?}"
            );
        }
    }

    #[test]
    fn deadline_stops_retries() {
        let p = RetryPolicy::fixed(Duration::from_secs(10)).max_age(Duration::from_secs(25));
        assert_eq!(p.next_run(1, 0, 0), Some(10_000));
        assert_eq!(p.next_run(2, 0, 10_000), Some(20_000));
        assert_eq!(p.next_run(3, 0, 20_000), None);
    }
}
