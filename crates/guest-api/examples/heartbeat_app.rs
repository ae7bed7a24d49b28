//! A Rust application that heartbeats with the guest daemon.
//!
//! Usage: `heartbeat_app NAME [TRIGGER_DIR]`. It reports unhealthy (asking for a reboot) while
//! `TRIGGER_DIR/NAME_unhealthy` exists, votes no to a stop while `TRIGGER_DIR/NAME_vote_no_to_stop`
//! exists, and registers again by itself when the daemon restarts. The socket is
//! `/var/run/.guest_heartbeat_api` unless `GUEST_HEARTBEAT_API_SOCKET` says otherwise.

use std::path::PathBuf;
use std::time::Duration;

use guest_heartbeat_api::{
    Action, Client, Event, Handler, HealthReport, Notify, Registration, Vote, DEFAULT_SOCKET,
};

struct App {
    name: String,
    triggers: PathBuf,
    /// Actions to answer after the callback returns (the client is busy inside it).
    pending: Vec<(u32, Event, Notify)>,
}

impl Handler for App {
    fn register_state(&mut self, registered: bool) {
        println!("register_state {registered}");
    }

    fn health_check(&mut self) -> HealthReport {
        let trigger = self.triggers.join(format!("{}_unhealthy", self.name));
        match std::fs::read_to_string(trigger) {
            Ok(reason) => HealthReport {
                healthy: false,
                corrective_action: Action::Reboot,
                log_msg: reason.trim_end().to_owned(),
            },
            Err(_) => HealthReport {
                healthy: true,
                corrective_action: Action::None,
                log_msg: String::new(),
            },
        }
    }

    fn action_notify(&mut self, invocation_id: u32, event: Event, notify: Notify) {
        println!("action_notify {event} {notify}");
        self.pending.push((invocation_id, event, notify));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "rust-app".into());
    let triggers = PathBuf::from(args.next().unwrap_or_else(|| "/tmp".into()));
    let socket = std::env::var_os("GUEST_HEARTBEAT_API_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let mut client = Client::new(socket);
    let registration = Registration {
        name: name.clone(),
        heartbeat_interval_ms: 1000,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: Action::Reboot,
    };
    if let Err(e) = client.register(&registration) {
        // The daemon may not be up yet: `run_once` keeps trying.
        eprintln!("{name}: {e}; will retry");
    }
    let mut app = App {
        name,
        triggers,
        pending: Vec::new(),
    };
    loop {
        client.run_once(&mut app, Duration::from_millis(500));
        for (id, event, notify) in std::mem::take(&mut app.pending) {
            let no = app
                .triggers
                .join(format!("{}_vote_no_to_{event}", app.name));
            let vote = match notify {
                Notify::Irrevocable => Vote::Complete,
                _ if no.exists() => Vote::Reject,
                _ => Vote::Accept,
            };
            let _ = client.send_action_response(id, event, notify, vote, "");
        }
    }
}
