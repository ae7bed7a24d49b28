//! Rate limits for log lines that a failing peer (a webhook subscriber, the VIM) would
//! otherwise repeat on every retry.

use std::time::Duration;

use tokio::time::Instant;

/// Lets one call through per period and counts the ones held back in between.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// At most one call per `every`.
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(calls held back since the last one let through)` when this call may log now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_per_period_goes_through_with_the_count_held_back() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(60));
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(59)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(60)), Some(2));
        assert_eq!(throttle.allow(start + Duration::from_secs(61)), None);
    }
}
