//! Rate limits against a hostile or broken guest: token buckets and a log throttle.
//!
//! A [`TokenBucket`] holds up to `burst` tokens and regains `rate` per second; taking more than
//! it holds leaves a debt that must be paid back before the next take succeeds, so a guest that
//! sends a large read still pays for it in full. A [`Throttle`] lets through a few events per
//! period and counts the ones it held back, for logs and journal events a guest can trigger.
//! Both are pure: they are given the current instant.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket with a fractional balance that may go negative.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    balance: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens that regains `rate` tokens per second.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            balance: f64::from(burst.max(1)),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.balance = (self.balance + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// Whole tokens available now (0 while in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        if self.balance <= 0.0 {
            0
        } else {
            // Bounded by `burst`, a u32, so the cast cannot truncate.
            self.balance.floor() as u64
        }
    }

    /// Takes `n` tokens, going into debt if there are fewer.
    pub fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        // Precision loss only above 2^53 tokens, far beyond any read.
        self.balance -= n as f64;
    }

    /// Takes one token if at least one is available.
    pub fn try_take_one(&mut self, now: Instant) -> bool {
        if self.available(now) >= 1 {
            self.balance -= 1.0;
            true
        } else {
            false
        }
    }

    /// When at least one whole token will be available again (`now` if it already is).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.balance >= 1.0 {
            return now;
        }
        let wait = (1.0 - self.balance) / self.rate;
        now + Duration::from_secs_f64(wait)
    }
}

/// Lets through `per_period` events per `period`; counts the rest.
#[derive(Debug, Clone)]
pub struct Throttle {
    period: Duration,
    per_period: u32,
    window_start: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

impl Throttle {
    /// A throttle that passes `per_period` events in every `period`.
    pub fn new(per_period: u32, period: Duration) -> Throttle {
        Throttle {
            period,
            per_period,
            window_start: None,
            passed: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` if the event may go through, `n` being how many were held back before it;
    /// `None` if it must be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.period);
        if fresh {
            self.window_start = Some(now);
            self.passed = 0;
        }
        if self.passed < self.per_period {
            self.passed += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 20, t0);
        assert_eq!(b.available(t0), 20);
        b.take(25, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.ready_at(t0), t0 + Duration::from_millis(600));
        assert_eq!(b.available(t0 + Duration::from_millis(600)), 1);
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 20);
    }

    #[test]
    fn try_take_one_never_goes_into_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 2, t0);
        assert!(b.try_take_one(t0));
        assert!(b.try_take_one(t0));
        assert!(!b.try_take_one(t0));
        assert!(b.try_take_one(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_throttle_passes_a_few_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2, Duration::from_secs(10));
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(5)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(2));
    }
}
