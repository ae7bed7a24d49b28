//! The lifecycle operations of every guest, shared by the HTTP API and the supervisors.
//!
//! The API starts an operation with [`Operations::begin`]: it checks that the instance is
//! supervised and has no operation running, files a record in state `voting`, and hands the
//! operation to the instance's supervisor, which runs it ([`crate::lifecycle::Run`]) and
//! writes every step back with [`Operations::update`]. Records are kept after they end, the
//! most recent [`KEEP_FINISHED`] of them, so `GET /v1/operations/{id}` can be asked later.
//! The lock is short and never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tether_proto::EventType;

use crate::journal::format_ts;
use crate::lifecycle::{OpState, Run, Scope, Step};
use crate::supervisor::{Command, Mailbox, Operate};

/// Finished operations remembered.
pub const KEEP_FINISHED: usize = 1000;

/// One operation as shown by `GET /v1/operations/{id}` (pinned keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationRecord {
    /// The operation id.
    pub id: String,
    /// The instance uuid.
    pub instance: String,
    /// The event asked for (`stop`, `reboot`, `pause`, …).
    pub action: &'static str,
    /// `vote` or `notify` when only that step runs; absent for the whole sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<&'static str>,
    /// Where it stands.
    pub state: OpState,
    /// Why it was rejected (the guest's words) or failed.
    pub reason: Option<String>,
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// Every step so far, with its timing.
    pub steps: Vec<Step>,
}

/// Why an operation cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginError {
    /// No supervised instance has this uuid.
    UnknownInstance,
    /// The instance already has an operation running (its id).
    Busy(String),
}

#[derive(Debug, Default)]
struct Table {
    records: HashMap<String, OperationRecord>,
    finished: VecDeque<String>,
    running: HashMap<Arc<str>, String>,
    controls: HashMap<Arc<str>, Mailbox>,
}

/// Shared handle on every operation; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    table: Arc<Mutex<Table>>,
}

impl Operations {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes operations on `uuid` go to the supervisor behind `commands`.
    pub(crate) fn attach(&self, uuid: &Arc<str>, commands: Mailbox) {
        self.lock().controls.insert(Arc::clone(uuid), commands);
    }

    /// Where commands for the supervisor of `uuid` go, if it runs.
    pub(crate) fn commands(&self, uuid: &str) -> Option<Mailbox> {
        self.lock().controls.get(uuid).cloned()
    }

    /// The supervisor of `uuid` has ended; an operation it was running fails.
    pub(crate) fn detach(&self, uuid: &str) {
        let mut table = self.lock();
        table.controls.remove(uuid);
        if let Some(id) = table.running.remove(uuid) {
            if let Some(record) = table.records.get_mut(&id) {
                record.state = OpState::Failed;
                record.reason = Some("supervision of the instance ended".to_owned());
            }
            remember(&mut table, id);
        }
    }

    /// Starts `event` on `uuid`; returns the new operation's id.
    pub fn begin(&self, uuid: &str, event: EventType) -> Result<String, BeginError> {
        self.begin_scoped(uuid, event, Scope::Full)
    }

    /// Starts the part `scope` of `event` on `uuid`; returns the new operation's id.
    pub fn begin_scoped(
        &self,
        uuid: &str,
        event: EventType,
        scope: Scope,
    ) -> Result<String, BeginError> {
        let mut table = self.lock();
        let Some((key, commands)) = table
            .controls
            .get_key_value(uuid)
            .map(|(k, c)| (Arc::clone(k), c.clone()))
        else {
            return Err(BeginError::UnknownInstance);
        };
        if let Some(id) = table.running.get(uuid) {
            return Err(BeginError::Busy(id.clone()));
        }
        let id = new_id(&table);
        let command = Command::Operate(Box::new(Operate {
            id: id.clone(),
            event,
            scope,
        }));
        if commands.try_send(command).is_err() {
            // The supervisor is ending or swamped with commands; a retry will tell which.
            return Err(BeginError::Busy(String::new()));
        }
        table.records.insert(
            id.clone(),
            OperationRecord {
                id: id.clone(),
                instance: uuid.to_owned(),
                action: event.as_str(),
                only: scope.only(),
                state: if scope == Scope::Notify {
                    OpState::Notifying
                } else {
                    OpState::Voting
                },
                reason: None,
                started_at: format_ts(std::time::SystemTime::now()),
                steps: Vec::new(),
            },
        );
        table.running.insert(key, id.clone());
        Ok(id)
    }

    /// Copies what `run` knows into the record `id`; an ended run frees its instance.
    pub(crate) fn update(&self, id: &str, run: &Run) {
        let mut table = self.lock();
        let Some(record) = table.records.get_mut(id) else {
            return;
        };
        record.state = run.state();
        record.reason = run.reason().map(str::to_owned);
        record.started_at = format_ts(run.started_at());
        if record.steps.len() != run.steps().len() {
            record.steps = run.steps().to_vec();
        }
        if run.state().is_final() {
            finished(&mut table, id);
        }
    }

    /// A supervisor could not start operation `id` (an event no operation can be).
    pub(crate) fn refuse(&self, id: &str, reason: &str) {
        let mut table = self.lock();
        let Some(record) = table.records.get_mut(id) else {
            return;
        };
        record.state = OpState::Failed;
        record.reason = Some(reason.to_owned());
        finished(&mut table, id);
    }

    /// The operation `id`, if known.
    pub fn get(&self, id: &str) -> Option<OperationRecord> {
        self.lock().records.get(id).cloned()
    }
}

/// Frees the instance of operation `id`, which has ended (if it is the one running there),
/// and remembers the operation.
fn finished(table: &mut Table, id: &str) {
    let instance = table.records.get(id).map(|r| r.instance.clone());
    if let Some(instance) = instance {
        if table
            .running
            .get(instance.as_str())
            .is_some_and(|running| running == id)
        {
            table.running.remove(instance.as_str());
        }
    }
    remember(table, id.to_owned());
}

/// Remembers a finished operation, forgetting the oldest beyond [`KEEP_FINISHED`].
fn remember(table: &mut Table, id: String) {
    table.finished.push_back(id);
    while table.finished.len() > KEEP_FINISHED {
        if let Some(old) = table.finished.pop_front() {
            table.records.remove(&old);
        }
    }
}

/// A fresh id: 16 hex digits, unused so far.
fn new_id(table: &Table) -> String {
    loop {
        let id = format!("{:016x}", fastrand::u64(..));
        if !table.records.contains_key(&id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(ops: &Operations, uuid: &str) -> crate::supervisor::Inbox {
        let (tx, rx) = crate::supervisor::mailbox();
        ops.attach(&Arc::from(uuid), tx);
        rx
    }

    #[test]
    fn an_unknown_instance_cannot_begin() {
        let ops = Operations::default();
        assert_eq!(
            ops.begin("u1", EventType::Stop),
            Err(BeginError::UnknownInstance)
        );
    }

    #[test]
    fn one_operation_at_a_time_per_instance() {
        let ops = Operations::default();
        let mut rx = attached(&ops, "u1");
        let _other = attached(&ops, "u2");
        let id = ops.begin("u1", EventType::Pause).unwrap();
        assert_eq!(
            ops.begin("u1", EventType::Stop),
            Err(BeginError::Busy(id.clone()))
        );
        assert!(ops.begin("u2", EventType::Stop).is_ok());
        assert!(matches!(
            rx.try_recv(),
            Some(Command::Operate(op))
                if op.id == id && op.event == EventType::Pause && op.scope == Scope::Full
        ));
        let record = ops.get(&id).unwrap();
        assert_eq!((record.state, record.action), (OpState::Voting, "pause"));
    }

    #[test]
    fn a_detached_instance_fails_its_operation_and_frees_nothing_else() {
        let ops = Operations::default();
        let _rx = attached(&ops, "u1");
        let id = ops.begin("u1", EventType::Reboot).unwrap();
        ops.detach("u1");
        let record = ops.get(&id).unwrap();
        assert_eq!(record.state, OpState::Failed);
        assert_eq!(
            ops.begin("u1", EventType::Reboot),
            Err(BeginError::UnknownInstance)
        );
    }

    #[test]
    fn finished_operations_are_forgotten_oldest_first() {
        let ops = Operations::default();
        let mut rx = attached(&ops, "u1");
        let mut ids = Vec::new();
        for _ in 0..=KEEP_FINISHED {
            let id = ops.begin("u1", EventType::Stop).unwrap();
            assert!(rx.try_recv().is_some());
            ops.refuse(&id, "test");
            ids.push(id);
        }
        assert!(ops.get(&ids[0]).is_none());
        assert!(ops.get(&ids[1]).is_some());
        assert_eq!(ops.get(&ids[KEEP_FINISHED]).unwrap().state, OpState::Failed);
    }
}
