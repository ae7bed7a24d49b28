//! The `exec` backend: run an operator's command for every action.
//!
//! Built from a template such as `/usr/local/bin/recover {action} {uuid} {name}` (see
//! [`crate::template`] for how it is split and filled in). The command runs directly, never
//! through a shell, because `{name}` comes from the guest. It is called for every action, `log`
//! included, so that an operator's script may record failures too. Exit status 0 is success;
//! anything else is [`HypervisorError::CommandFailed`]; a command still running after the
//! timeout (30 s unless [`ExecBackend::with_timeout`] says otherwise) is killed.

use std::time::Duration;

use crate::process::{self, display_argv};
use crate::template::{Template, Values};
use crate::{Action, BoxFuture, Hypervisor, HypervisorError, Instance};

/// How long a command may run unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a command template for each action.
#[derive(Debug, Clone)]
pub struct ExecBackend {
    template: Template,
    timeout: Duration,
}

impl ExecBackend {
    /// Parses `template`; fails with [`HypervisorError::InvalidTemplate`] when it is empty, has
    /// an unterminated quote, or puts a placeholder in the program word.
    pub fn new(template: &str) -> Result<ExecBackend, HypervisorError> {
        let template =
            Template::parse(template).map_err(|source| HypervisorError::InvalidTemplate {
                template: template.to_owned(),
                source,
            })?;
        Ok(ExecBackend {
            template,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same backend with a different time limit per command.
    pub fn with_timeout(mut self, timeout: Duration) -> ExecBackend {
        self.timeout = timeout;
        self
    }

    /// The argv this backend runs for `instance` and `action`.
    pub fn argv(&self, instance: &Instance, action: Action) -> Vec<String> {
        self.template.render(Values {
            uuid: &instance.uuid,
            name: &instance.name,
            action,
        })
    }

    async fn run(&self, instance: &Instance, action: Action) -> Result<(), HypervisorError> {
        let argv = self.argv(instance, action);
        let shown = display_argv(&argv);
        tracing::info!(instance = %instance.uuid, %action, command = %shown, "running recovery command");
        let finished = process::run(&argv, &shown, self.timeout).await?;
        if finished.status.success() {
            return Ok(());
        }
        tracing::warn!(
            instance = %instance.uuid,
            %action,
            status = %finished.status,
            stderr = %finished.stderr.escape_debug(),
            "recovery command failed"
        );
        Err(HypervisorError::CommandFailed {
            command: shown,
            status: finished.status.to_string(),
        })
    }
}

impl Hypervisor for ExecBackend {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn apply<'a>(
        &'a self,
        instance: &'a Instance,
        action: Action,
    ) -> BoxFuture<'a, Result<(), HypervisorError>> {
        Box::pin(self.run(instance, action))
    }
}
