//! A supervisor's side of a lifecycle operation: feeds the [`Run`] what happens to the guest
//! and carries out what it decides, in both the connected and the connecting phase.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tether_hypervisor::{Action, HypervisorError, Instance};
use tether_proto::{Message, VoteResult};
use tokio::time::Instant;

use super::link::Link;
use super::{Operate, Supervisor};
use crate::journal::{Details, EventKind};
use crate::lifecycle::{Effect, Guest, Run, RunInput};
use crate::recovery::error_chain;

type ActFuture = Pin<Box<dyn Future<Output = Result<(), HypervisorError>> + Send>>;

/// The operation a supervisor is running.
pub(super) struct Current {
    id: String,
    run: Run,
    acting: Option<ActFuture>,
}

impl Supervisor {
    /// Starts operation `id` for `event`, as the API asked.
    pub(super) fn begin_operation(&mut self, op: Operate, link: Option<&mut Link>, now: Instant) {
        let Operate { id, event, scope } = op;
        if let Some(current) = &self.operation {
            let busy = format!("operation {} is still running", current.id);
            self.settings.operations.refuse(&id, &busy);
            return;
        }
        let mut effects = Vec::new();
        let Some(run) = Run::start_scoped(event, scope, self.guest_now(), now, &mut effects) else {
            let reason = format!("{event} is not an operation");
            self.settings.operations.refuse(&id, &reason);
            return;
        };
        tracing::info!(instance = %self.uuid, operation = %id, action = %event,
            only = scope.only(), "Operation started");
        let details = Details {
            operation: Some(id.clone()),
            action: Some(event.as_str()),
            ..Details::default()
        };
        self.journal(EventKind::OperationStarted, details);
        self.operation = Some(Box::new(Current {
            id,
            run,
            acting: None,
        }));
        self.carry_out_effects(effects, link);
    }

    /// Feeds the running operation one input; a stray one (no operation, or an answer that
    /// came after its step timed out) is logged and dropped.
    pub(super) fn operation_input(
        &mut self,
        input: RunInput,
        link: Option<&mut Link>,
        now: Instant,
    ) {
        let guest = self.guest_now();
        let answered = match &input {
            RunInput::Answer(answer) => Some((answer.event_type, answer.vote_result)),
            _ => None,
        };
        let mut effects = Vec::new();
        let taken = match self.operation.as_mut() {
            Some(current) => current.run.step(input, guest, now, &mut effects),
            None => false,
        };
        if taken {
            self.carry_out_effects(effects, link);
        } else if let Some((event, result)) = answered {
            if let Some(suppressed) = self.throttles.mismatch_log.allow(now) {
                tracing::info!(instance = %self.uuid, %event, %result, suppressed,
                    "Ignored an action_response that no running step waits for");
            }
        }
    }

    /// When the running operation must be stepped with [`RunInput::Timer`].
    pub(super) fn operation_deadline(&self) -> Option<Instant> {
        self.operation.as_ref().and_then(|c| c.run.deadline())
    }

    /// Whether the hypervisor is carrying out the operation's action.
    pub(super) fn operation_acting(&self) -> bool {
        self.operation.as_ref().is_some_and(|c| c.acting.is_some())
    }

    /// The guest as an operation sees it now.
    fn guest_now(&self) -> Guest {
        Guest {
            heartbeating: self.connected && self.fsm.is_heartbeating(),
            invocation_id: self.fsm.invocation_id(),
            notices: self.fsm.guest().map(|g| g.notices).unwrap_or_default(),
        }
    }

    fn carry_out_effects(&mut self, effects: Vec<Effect>, mut link: Option<&mut Link>) {
        for effect in effects {
            match effect {
                Effect::Notify(notify) => match link.as_deref_mut() {
                    Some(link) => link.queue(&Message::ActionNotify(notify)),
                    None => tracing::debug!(instance = %self.uuid,
                        "Not connected; the notification will time out"),
                },
                Effect::Hold(hold) => self.fsm.hold(hold),
                Effect::Release => self.fsm.release(),
                Effect::Quiesce(hold) => self.fsm.quiesce(hold),
                Effect::Act(action) => self.start_act(action),
                Effect::Finished => self.operation_finished(),
            }
        }
        if let Some(current) = &self.operation {
            self.settings.operations.update(&current.id, &current.run);
        }
        if self
            .operation
            .as_ref()
            .is_some_and(|c| c.run.state().is_final())
        {
            self.operation = None;
        }
    }

    fn start_act(&mut self, action: Action) {
        let name = self.fsm.guest().map(|g| g.name.clone()).unwrap_or_default();
        let instance = Instance {
            uuid: self.uuid.to_string(),
            name,
        };
        let hypervisor = Arc::clone(&self.settings.hypervisor);
        tracing::info!(instance = %self.uuid, %action, "Operation acting through the hypervisor");
        if let Some(current) = self.operation.as_mut() {
            current.acting = Some(Box::pin(async move {
                hypervisor.apply(&instance, action).await
            }));
        }
    }

    fn operation_finished(&mut self) {
        let Some(current) = &self.operation else {
            return;
        };
        let (state, reason) = (current.run.state(), current.run.reason().map(str::to_owned));
        tracing::info!(instance = %self.uuid, operation = %current.id,
            action = %current.run.event(), outcome = state.as_str(),
            reason = reason.as_deref().unwrap_or(""), "Operation finished");
        let only = current.run.scope().only();
        let details = Details {
            operation: Some(current.id.clone()),
            action: Some(current.run.event().as_str()),
            outcome: Some(state.as_str()),
            reason,
            only,
            vote_result: only.and(current.run.answer()).map(VoteResult::as_str),
            ..Details::default()
        };
        self.journal(EventKind::OperationFinished, details);
    }
}

/// Resolves when the running operation's action finishes; never resolves when none runs.
/// Cancel-safe: dropping this future leaves the action running. A free function, so that it
/// borrows only the operation while the supervisor waits on other things too.
pub(super) async fn acted(operation: &mut Option<Box<Current>>) -> Result<(), String> {
    let Some(acting) = operation.as_mut().and_then(|c| c.acting.as_mut()) else {
        return std::future::pending().await;
    };
    let result = acting.as_mut().await.map_err(|e| error_chain(&e));
    if let Some(current) = operation.as_mut() {
        current.acting = None;
    }
    result
}
