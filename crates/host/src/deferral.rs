//! Failures left to the controller: when this agent leaves a corrective action to the
//! controller, and when it takes one back.
//!
//! With a controller, a guest's failure is journaled as `recovery_deferred` and the controller
//! decides (its recovery policy, or the VIM's). The controller owns a failure once it has
//! stored that event, that is once the link's acknowledged `seq` reaches the journal's: it
//! then orders the recovery through the agent's API even after it restarts. A failure the
//! controller has not taken when `recovery_wait_secs` run out, while the link is down, is
//! recovered by this agent itself (in mode `auto`), so a guest never stays dead because its
//! host is cut off from the controller; in mode `controller` it keeps waiting.
//!
//! [`LinkState`] is written by the controller link and read by every supervisor;
//! [`DeferralPolicy`] holds the agent-wide rules; [`Episode`] is one guest's failure in hand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tether_hypervisor::Action;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::RecoveryMode;
use crate::fsm::Cause;

/// How often a failure the controller has not yet taken is checked again, once its wait
/// is over and the link is still trying.
const RECHECK: Duration = Duration::from_secs(1);

/// What the controller link knows of the controller; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LinkState(Arc<Link>);

#[derive(Debug, Default)]
struct Link {
    up: AtomicBool,
    acked: AtomicU64,
}

impl LinkState {
    /// The controller answered; it holds every event up to `acked`.
    pub fn answered(&self, acked: u64) {
        self.0.acked.store(acked, Ordering::Relaxed);
        self.0.up.store(true, Ordering::Relaxed);
    }

    /// A call to the controller failed.
    pub fn failed(&self) {
        self.0.up.store(false, Ordering::Relaxed);
    }

    /// Whether the last call to the controller succeeded.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// The highest journal `seq` the controller acknowledged.
    pub fn acked(&self) -> u64 {
        self.0.acked.load(Ordering::Relaxed)
    }
}

/// What to do with a deferred failure whose wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The controller stored it: it decides.
    Taken,
    /// Not stored yet, but the link works (or the mode forbids acting): look again soon.
    Wait,
    /// Not stored and the link is down: recover locally.
    Fallback,
}

/// The agent-wide rules for leaving failures to the controller.
#[derive(Debug, Clone)]
pub struct DeferralPolicy {
    mode: RecoveryMode,
    link: Option<LinkState>,
    wait: Duration,
    written: watch::Receiver<u64>,
}

impl DeferralPolicy {
    /// The rules for `mode`, with `link` when a controller is configured; `written` is the
    /// journal writer's last `seq`.
    pub fn new(
        mode: RecoveryMode,
        link: Option<LinkState>,
        wait: Duration,
        written: watch::Receiver<u64>,
    ) -> DeferralPolicy {
        DeferralPolicy {
            mode,
            link,
            wait,
            written,
        }
    }

    /// Whether a failure asking for `action` is left to the controller now. `log` never is:
    /// it changes nothing, and the journal records it either way.
    pub fn defers(&self, action: Action) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        action != Action::Log
            && match self.mode {
                RecoveryMode::Local => false,
                RecoveryMode::Controller => true,
                RecoveryMode::Auto => link.is_up(),
            }
    }

    /// How long a deferred failure waits before [`DeferralPolicy::verdict`] is asked.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Whether the controller took a failure deferred at least `wait` ago. Its event has been
    /// written by now, so it is acknowledged when everything written is.
    pub fn verdict(&self) -> Verdict {
        let Some(link) = &self.link else {
            return Verdict::Fallback;
        };
        if link.acked() >= *self.written.borrow() {
            Verdict::Taken
        } else if link.is_up() || self.mode == RecoveryMode::Controller {
            Verdict::Wait
        } else {
            Verdict::Fallback
        }
    }
}

/// One guest's failure while it is in hand, from the first deferral until the guest
/// heartbeats healthy again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The action the failure asked for.
    pub action: Action,
    /// What failed.
    pub cause: Cause,
    /// When to ask for a verdict; `None` once the controller took it or the agent acted.
    pub check_at: Option<Instant>,
    /// The agent recovered the guest itself after the controller did not take the failure.
    pub recovered_locally: bool,
}

impl Episode {
    /// A failure just deferred at `now`.
    pub fn deferred(action: Action, cause: Cause, policy: &DeferralPolicy, now: Instant) -> Self {
        Episode {
            action,
            cause,
            check_at: Some(now + policy.wait()),
            recovered_locally: false,
        }
    }

    /// Applies a verdict reached at `now`; answers whether to recover locally now.
    pub fn settle(&mut self, verdict: Verdict, now: Instant) -> bool {
        match verdict {
            Verdict::Taken => {
                self.check_at = None;
                false
            }
            Verdict::Wait => {
                self.check_at = Some(now + RECHECK);
                false
            }
            Verdict::Fallback => {
                self.check_at = None;
                self.recovered_locally = true;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RecoveryMode, link: Option<LinkState>, written: u64) -> DeferralPolicy {
        // The last value stays readable after the sender is gone.
        let (_, rx) = watch::channel(written);
        DeferralPolicy::new(mode, link, Duration::from_secs(10), rx)
    }

    #[test]
    fn without_a_controller_nothing_is_deferred() {
        let p = policy(RecoveryMode::Controller, None, 0);
        assert!(!p.defers(Action::Reboot));
        assert_eq!(p.verdict(), Verdict::Fallback);
    }

    #[test]
    fn auto_defers_only_while_the_link_works_and_never_a_log() {
        let link = LinkState::default();
        let p = policy(RecoveryMode::Auto, Some(link.clone()), 5);
        assert!(!p.defers(Action::Reboot), "never answered yet");
        link.answered(3);
        assert!(p.defers(Action::Reboot) && p.defers(Action::Stop));
        assert!(!p.defers(Action::Log));
        link.failed();
        assert!(!p.defers(Action::Stop));
        let local = policy(RecoveryMode::Local, Some(link.clone()), 5);
        link.answered(5);
        assert!(!local.defers(Action::Reboot));
        let controller = policy(RecoveryMode::Controller, Some(link.clone()), 5);
        link.failed();
        assert!(controller.defers(Action::Reboot));
    }

    #[test]
    fn a_failure_is_taken_once_everything_written_is_acknowledged() {
        let link = LinkState::default();
        let p = policy(RecoveryMode::Auto, Some(link.clone()), 7);
        link.answered(6);
        assert_eq!(p.verdict(), Verdict::Wait, "link up, still sending");
        link.failed();
        assert_eq!(
            p.verdict(),
            Verdict::Fallback,
            "cut off before it was stored"
        );
        link.answered(7);
        assert_eq!(p.verdict(), Verdict::Taken);
        link.failed();
        assert_eq!(
            p.verdict(),
            Verdict::Taken,
            "stored before the link went down"
        );
        let strict = policy(RecoveryMode::Controller, Some(LinkState::default()), 7);
        assert_eq!(
            strict.verdict(),
            Verdict::Wait,
            "controller mode never acts alone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_episode_rechecks_until_settled() {
        let p = policy(RecoveryMode::Auto, Some(LinkState::default()), 1);
        let t0 = Instant::now();
        let mut e = Episode::deferred(Action::Reboot, Cause::Lost, &p, t0);
        assert_eq!(e.check_at, Some(t0 + Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(10);
        assert!(!e.settle(Verdict::Wait, t1));
        assert_eq!(e.check_at, Some(t1 + RECHECK));
        assert!(e.settle(Verdict::Fallback, t1));
        assert!(e.recovered_locally && e.check_at.is_none());
        let mut taken = Episode::deferred(Action::Stop, Cause::Unhealthy, &p, t0);
        assert!(!taken.settle(Verdict::Taken, t1));
        assert!(!taken.recovered_locally && taken.check_at.is_none());
    }
}
