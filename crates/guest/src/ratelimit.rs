//! Rate limiting for logs the host can trigger over and over (pure, no I/O).
//!
//! A [`RateLimit`] lets `burst` messages through per window; the rest are counted, and the
//! first message let through in a later window carries that count so the log says how many
//! were left out.

use std::time::Duration;

use tokio::time::Instant;

/// Lets at most `burst` messages through per `window`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    passed: u32,
    suppressed: u32,
}

impl RateLimit {
    /// A limit of `burst` messages per `window`.
    pub fn new(burst: u32, window: Duration) -> RateLimit {
        RateLimit {
            burst,
            window,
            window_start: None,
            passed: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a message may be logged now, `n` being how many were left out since
    /// the last one logged; `None` when this one must be left out.
    pub fn check(&mut self, now: Instant) -> Option<u32> {
        let expired = self
            .window_start
            .is_none_or(|start| now >= start + self.window);
        if expired {
            self.window_start = Some(now);
            self.passed = 0;
        }
        if self.passed < self.burst {
            self.passed += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_rest_is_counted() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(2, Duration::from_secs(10));
        assert_eq!(limit.check(t0), Some(0));
        assert_eq!(limit.check(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.check(t0 + Duration::from_secs(9)), None);
        }
        assert_eq!(limit.check(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limit.check(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(limit.check(t0 + Duration::from_secs(12)), None);
    }
}
