//! Sizes of what the agent holds per guest: the supervisor task's future, and a [`Command`]
//! (what a mailbox queues). The future is multiplied by the number of guests (10,000 on a large
//! host), so a field added to the task's state shows up here before it shows up in the agent's
//! resident memory. Run with `--nocapture` to see the figures.

use std::mem::{size_of, size_of_val};
use std::sync::Arc;
use std::time::Duration;

use super::{mailbox, Command, Settings, Supervisor};
use crate::config::RecoveryMode;
use crate::deferral::DeferralPolicy;
use crate::operations::Operations;
use crate::recovery::{RecoveryHistory, RecoveryLimit};
use crate::status::{AgentView, Reporting};

fn settings(journal: &std::path::Path) -> Arc<Settings> {
    let (journal, writer) = crate::journal::open(journal).unwrap();
    Arc::new(Settings {
        miss_threshold: 1,
        min_interval_ms: 400,
        start_timeout: Duration::from_secs(60),
        bytes_per_sec: 16_384,
        msgs_per_sec: 50,
        max_bad_msgs: 10,
        recovery_limit: RecoveryLimit {
            max: 3,
            window: Duration::from_secs(600),
        },
        hypervisor: Arc::new(tether_hypervisor::LogBackend::new()),
        journal,
        operations: Operations::default(),
        reporting: Reporting::default(),
        deferral: DeferralPolicy::new(
            RecoveryMode::Auto,
            None,
            Duration::from_secs(10),
            writer.written(),
        ),
    })
}

#[test]
fn the_supervisor_task_stays_small() {
    let dir = tether_testkit::temp_dir();
    let settings = settings(&dir.path().join("journal.jsonl"));
    let uuid: Arc<str> = "u".into();
    let status = AgentView::default().insert(&uuid);
    let (_tx, rx) = mailbox();
    let supervisor = Supervisor::new(
        settings,
        uuid,
        dir.path().join("none.sock"),
        rx,
        status,
        RecoveryHistory::default(),
    );
    let future = supervisor.run();
    let task = size_of_val(&future);
    let command = size_of::<Command>();
    let state = size_of::<Supervisor>();
    println!("supervisor future: {task} bytes (its state: {state}); command: {command} bytes");
    // 1,264 bytes in a release build and 1,280 in a test build when this was written (it was
    // 2,800: an `async fn run(self)` kept the state twice). A bound with room for compiler
    // changes, far under the doubled size.
    assert!(task <= 1536, "the supervisor future is {task} bytes");
    assert!(
        task < 2 * state,
        "the future holds the state twice: {task} bytes"
    );
    assert!(command <= 16, "a command is {command} bytes");
}
