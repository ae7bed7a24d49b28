//! The `log` backend: record the action and touch nothing.
//!
//! For hosts where tether only watches (a first deployment, a dry run) and for the `log`
//! corrective action. Every action succeeds at once.

use crate::{Action, BoxFuture, Hypervisor, HypervisorError, Instance};

/// Logs each action and reports success.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogBackend;

impl LogBackend {
    /// A log-only backend.
    pub fn new() -> LogBackend {
        LogBackend
    }
}

impl Hypervisor for LogBackend {
    fn name(&self) -> &'static str {
        "log"
    }

    fn apply<'a>(
        &'a self,
        instance: &'a Instance,
        action: Action,
    ) -> BoxFuture<'a, Result<(), HypervisorError>> {
        tracing::warn!(
            instance = %instance.uuid,
            name = %instance.name.escape_debug(),
            %action,
            "corrective action recorded only (log backend)"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn succeeds_for_every_action() {
        let instance = Instance {
            uuid: "u".into(),
            name: "n".into(),
        };
        for action in Action::ALL {
            assert!(LogBackend::new().apply(&instance, action).await.is_ok());
        }
        assert_eq!(LogBackend::new().name(), "log");
    }
}
