//! The guest's health as reported in each `challenge_response` (pure, no I/O).
//!
//! Three inputs make the answer: the registered applications (each with its own health and
//! requested corrective action, see [`crate::apps`]), the last health-script result, and the
//! configured `CORRECTIVE_ACTION`. [`merge`] combines them the way the reference daemon does,
//! with the action priority `stop > reboot > log > none`. [`Reporter`] then suppresses a
//! repeated report: an unhealthy verdict with the same action as one reported less than
//! [`REPORT_HOLD`] ago goes out with action `none`, so the host does not raise it again.

use std::time::Duration;

use tether_proto::{CorrectiveAction, Health};
use tokio::time::Instant;

/// How long an unhealthy report with the same action is not repeated.
pub const REPORT_HOLD: Duration = Duration::from_secs(60);

/// The health of one registered application at the latest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHealth {
    /// Whether the application answered healthy.
    pub healthy: bool,
    /// The action the application asks for when unhealthy.
    pub action: CorrectiveAction,
    /// The application's reason text.
    pub log: String,
}

/// The outcome of the latest health-script run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptHealth {
    /// False only when the script exited with status 1.
    pub unhealthy: bool,
    /// What the script printed (at most 256 bytes).
    pub output: String,
}

/// The merged health, before de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Healthy or not.
    pub health: Health,
    /// The action asked for.
    pub action: CorrectiveAction,
    /// The reason text.
    pub log: String,
}

/// Combines the applications, the script and the configured action into one verdict.
pub fn merge(apps: &[AppHealth], script: &ScriptHealth, configured: CorrectiveAction) -> Verdict {
    let worst_app =
        apps.iter()
            .filter(|a| !a.healthy)
            .reduce(|worst, a| if a.action > worst.action { a } else { worst });
    let health = if worst_app.is_some() || script.unhealthy {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    match worst_app {
        None => Verdict {
            health,
            action: configured,
            log: script.output.clone(),
        },
        Some(app) if script.unhealthy && configured > app.action => Verdict {
            health,
            action: configured,
            log: script.output.clone(),
        },
        Some(app) => Verdict {
            health,
            action: app.action,
            log: app.log.clone(),
        },
    }
}

/// Remembers the last unhealthy report, to hold back repeats.
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    last_unhealthy: Option<(CorrectiveAction, Instant)>,
}

impl Reporter {
    /// A reporter that has reported nothing yet.
    pub fn new() -> Reporter {
        Reporter::default()
    }

    /// The verdict to send now: `verdict` itself, or with action `none` when the same
    /// unhealthy action was reported less than [`REPORT_HOLD`] ago. A healthy verdict
    /// forgets the last report, so a new failure is reported at once.
    pub fn report(&mut self, mut verdict: Verdict, now: Instant) -> Verdict {
        if verdict.health == Health::Healthy {
            self.last_unhealthy = None;
            return verdict;
        }
        match self.last_unhealthy {
            Some((action, at)) if action == verdict.action && now < at + REPORT_HOLD => {
                verdict.action = CorrectiveAction::None;
            }
            _ => self.last_unhealthy = Some((verdict.action, now)),
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CorrectiveAction::{Log, None as NoAction, Reboot, Stop};

    fn app(healthy: bool, action: CorrectiveAction, log: &str) -> AppHealth {
        AppHealth {
            healthy,
            action,
            log: log.into(),
        }
    }

    fn script(unhealthy: bool, output: &str) -> ScriptHealth {
        ScriptHealth {
            unhealthy,
            output: output.into(),
        }
    }

    fn verdict(health: Health, action: CorrectiveAction, log: &str) -> Verdict {
        Verdict {
            health,
            action,
            log: log.into(),
        }
    }

    #[test]
    fn healthy_carries_the_configured_action_and_the_script_output() {
        let v = merge(&[], &script(false, "all good"), Reboot);
        assert_eq!(v, verdict(Health::Healthy, Reboot, "all good"));
    }

    #[test]
    fn unhealthy_script_carries_the_configured_action_and_its_reason() {
        let v = merge(&[], &script(true, "disk full"), Stop);
        assert_eq!(v, verdict(Health::Unhealthy, Stop, "disk full"));
    }

    #[test]
    fn the_most_severe_unhealthy_app_wins() {
        let apps = [
            app(false, Log, "a"),
            app(true, Stop, "healthy apps do not count"),
            app(false, Reboot, "b"),
            app(false, NoAction, "c"),
        ];
        let v = merge(&apps, &script(false, "script ok"), Log);
        assert_eq!(v, verdict(Health::Unhealthy, Reboot, "b"));
    }

    #[test]
    fn app_and_script_both_unhealthy_take_the_more_severe_action() {
        let apps = [app(false, Log, "app says log")];
        let v = merge(&apps, &script(true, "script says"), Reboot);
        assert_eq!(v, verdict(Health::Unhealthy, Reboot, "script says"));
        let apps = [app(false, Stop, "app says stop")];
        let v = merge(&apps, &script(true, "script says"), Reboot);
        assert_eq!(v, verdict(Health::Unhealthy, Stop, "app says stop"));
    }

    #[test]
    fn same_unhealthy_action_is_held_back_for_sixty_seconds() {
        let t0 = Instant::now();
        let mut r = Reporter::new();
        let bad = verdict(Health::Unhealthy, Reboot, "why");
        assert_eq!(r.report(bad.clone(), t0).action, Reboot);
        let later = t0 + Duration::from_secs(59);
        assert_eq!(
            r.report(bad.clone(), later),
            verdict(Health::Unhealthy, NoAction, "why")
        );
        assert_eq!(r.report(bad.clone(), t0 + REPORT_HOLD).action, Reboot);
        assert_eq!(
            r.report(bad, t0 + REPORT_HOLD + Duration::from_secs(1))
                .action,
            NoAction
        );
    }

    #[test]
    fn a_different_action_or_a_healthy_answer_reports_again() {
        let t0 = Instant::now();
        let mut r = Reporter::new();
        r.report(verdict(Health::Unhealthy, Reboot, ""), t0);
        let stop = verdict(Health::Unhealthy, Stop, "");
        assert_eq!(r.report(stop, t0 + Duration::from_secs(1)).action, Stop);
        let ok = verdict(Health::Healthy, Reboot, "");
        assert_eq!(r.report(ok, t0 + Duration::from_secs(2)).action, Reboot);
        let stop = verdict(Health::Unhealthy, Stop, "");
        assert_eq!(r.report(stop, t0 + Duration::from_secs(3)).action, Stop);
    }
}
