//! Supervision of the applications registered on the local API socket (pure:
//! `(state, event, now) → actions`).
//!
//! Each connection may register one application (`INIT`). A registered application is
//! challenged every `heartbeat_interval_ms` (registrations under 400 ms are refused with
//! `accepted = 0`), but only once its previous challenge was answered; an answer must echo one
//! of the last [`KEEP_CHALLENGES`] challenges. Without a valid answer for 2 × interval the
//! application is unhealthy with its own corrective action and the reason
//! `Application <name> heartbeat timeout <n> ms.`; a later valid answer restores what it
//! reports. `FINAL` or a closed connection removes it. [`Supervisor::health`] is what
//! [`crate::health::merge`] takes. Lifecycle actions are put to the applications as
//! [`ApiEvent::Ask`] describes (see `apps_ask.rs`).
//!
//! A connection that floods (more than [`MAX_FRAMES_PER_SEC`] frames in a second), sends more
//! than [`MAX_GARBAGE`] bytes that are not frames since its last good one, or does not read
//! what it is sent, is cut off; the others are not affected. When [`MAX_CONNECTIONS`] are
//! open, a new connection takes the place of the oldest one that has not registered, or is
//! refused when all have.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use guest_heartbeat_api::wire::{Body, ChallengeResponse, FrameError, Init, FRAME_SIZE};
use tether_proto::{CorrectiveAction, EventType, NotificationType};
use tokio::time::Instant;

use crate::health::AppHealth;
use crate::vote::{Answer, AppVoter};

#[path = "apps_ask.rs"]
mod ask;

pub use ask::{event_wire, notification_wire};

/// Registrations with a shorter interval are refused.
pub const MIN_INTERVAL_MS: u32 = 400;
/// At most this many applications are registered at once.
pub const MAX_APPS: usize = 128;
/// At most this many connections are open at once.
pub const MAX_CONNECTIONS: usize = 192;
/// How many recent challenges an answer may echo.
pub const KEEP_CHALLENGES: usize = 4;
/// Bytes of non-frames since the last good frame that cut a connection off.
pub const MAX_GARBAGE: usize = 8 * FRAME_SIZE;
/// Frames per second that cut a connection off.
pub const MAX_FRAMES_PER_SEC: u32 = 200;

/// Identifies one connection.
pub type ConnId = u64;

/// Something that happened on the API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEvent {
    /// A new connection.
    Connected(ConnId),
    /// A frame from a connection.
    Frame(ConnId, Body),
    /// Bytes of a connection that were not a frame.
    Dropped(ConnId, FrameError),
    /// The connection closed.
    Closed(ConnId),
    /// A deadline may have passed.
    Tick,
    /// Put lifecycle action `run` to every registered application: answered by one
    /// [`ApiAction::Asked`] listing them, then one [`ApiAction::Voted`] per application.
    /// Allowed at any time; applications still asked about an earlier action are reported
    /// silent on it.
    Ask {
        /// Identifies this action.
        run: u64,
        /// What happens.
        event: EventType,
        /// Vote or notification.
        notification: NotificationType,
    },
    /// Action `run` is over (answered or aborted): its later answers are dropped.
    StopAsking(u64),
}

/// Why a connection is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// Too many connections.
    Full,
    /// Too many frames per second.
    Flood,
    /// Too many bytes that are not frames.
    Garbage,
    /// Its output queue is full: it does not read.
    Stalled,
}

/// Something the server must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAction {
    /// Send this frame body on the connection.
    Send(ConnId, Body),
    /// Close the connection.
    Disconnect(ConnId, CutOff),
    /// An application registered (or registered again).
    Registered(String, u32),
    /// A registration was refused.
    Refused(String, u32),
    /// An application left (`FINAL` or closed connection); the text says why.
    Left(String, String),
    /// An application stopped answering.
    TimedOut(String, String),
    /// A timed-out application answered again.
    Recovered(String),
    /// [`Supervisor::health`] changed.
    HealthChanged,
    /// These applications were asked about action `run`.
    Asked {
        /// The action.
        run: u64,
        /// Who was asked.
        apps: Vec<AppVoter>,
    },
    /// An application's answer to action `run` (silent when it gave none in time).
    Voted {
        /// The action.
        run: u64,
        /// The application's connection.
        conn: ConnId,
        /// The application's name.
        name: String,
        /// What it answered.
        answer: Answer,
    },
    /// An `ACTION_RESPONSE` with an `invocation_id` the application was not asked with.
    StrayAnswer(String, u32),
}

#[derive(Debug)]
struct App {
    name: String,
    interval: Duration,
    action: CorrectiveAction,
    recent: VecDeque<u32>,
    awaiting: bool,
    next_challenge: Instant,
    answer_deadline: Instant,
    timed_out: Option<String>,
    reported: AppHealth,
    notices: ask::Notices,
    ask: Option<ask::Ask>,
}

#[derive(Debug)]
struct Conn {
    app: Option<App>,
    garbage: usize,
    window: Instant,
    frames: u32,
}

/// The registered applications and their connections.
#[derive(Debug)]
pub struct Supervisor {
    conns: BTreeMap<ConnId, Conn>,
    rng: fastrand::Rng,
}

/// The IPC corrective-action number as the heartbeat protocol's action.
pub fn action_of(wire: u32) -> CorrectiveAction {
    match wire {
        1 => CorrectiveAction::None,
        2 => CorrectiveAction::Reboot,
        3 => CorrectiveAction::Stop,
        4 => CorrectiveAction::Log,
        _ => CorrectiveAction::Unknown,
    }
}

impl Supervisor {
    /// No connections; `seed` seeds the challenge values.
    pub fn new(seed: u64) -> Supervisor {
        Supervisor {
            conns: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// How many applications are registered.
    pub fn registered(&self) -> usize {
        self.conns.values().filter(|c| c.app.is_some()).count()
    }

    /// The health of every registered application, in connection order.
    pub fn health(&self) -> Vec<AppHealth> {
        self.apps().map(|a| a.reported.clone()).collect()
    }

    fn apps(&self) -> impl Iterator<Item = &App> {
        self.conns.values().filter_map(|c| c.app.as_ref())
    }

    /// The earliest time at which [`ApiEvent::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.apps()
            .flat_map(|a| {
                let deadline = a.timed_out.is_none().then_some(a.answer_deadline);
                [Some(a.next_challenge), deadline]
            })
            .flatten()
            .chain(self.next_ask_deadline())
            .min()
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, event: ApiEvent, now: Instant) -> Vec<ApiAction> {
        let mut out = Vec::new();
        match event {
            ApiEvent::Connected(id) => self.connected(id, now, &mut out),
            ApiEvent::Frame(id, body) => self.frame(id, body, now, &mut out),
            ApiEvent::Dropped(id, error) => self.dropped(id, error, &mut out),
            ApiEvent::Closed(id) => self.closed(id, "connection closed", &mut out),
            ApiEvent::Tick => self.tick(now, &mut out),
            ApiEvent::Ask {
                run,
                event,
                notification,
            } => self.ask(run, event, notification, now, &mut out),
            ApiEvent::StopAsking(run) => self.stop_asking(run),
        }
        out
    }

    fn connected(&mut self, id: ConnId, now: Instant, out: &mut Vec<ApiAction>) {
        if self.conns.len() >= MAX_CONNECTIONS {
            // Make room by dropping the oldest connection that has not registered.
            let idle = self
                .conns
                .iter()
                .find(|(_, c)| c.app.is_none())
                .map(|(k, _)| *k);
            let Some(idle) = idle else {
                out.push(ApiAction::Disconnect(id, CutOff::Full));
                return;
            };
            self.conns.remove(&idle);
            out.push(ApiAction::Disconnect(idle, CutOff::Full));
        }
        let conn = Conn {
            app: None,
            garbage: 0,
            window: now,
            frames: 0,
        };
        self.conns.insert(id, conn);
    }

    fn cut_off(&mut self, id: ConnId, why: CutOff, out: &mut Vec<ApiAction>) {
        out.push(ApiAction::Disconnect(id, why));
        self.closed(id, "cut off", out);
    }

    fn closed(&mut self, id: ConnId, why: &str, out: &mut Vec<ApiAction>) {
        if let Some(mut app) = self.conns.remove(&id).and_then(|c| c.app) {
            ask::abandon(id, &mut app, why, out);
            out.push(ApiAction::Left(app.name, why.to_owned()));
            out.push(ApiAction::HealthChanged);
        }
    }

    fn dropped(&mut self, id: ConnId, error: FrameError, out: &mut Vec<ApiAction>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.garbage += match error {
            FrameError::Garbage(n) => n,
            _ => FRAME_SIZE,
        };
        if conn.garbage > MAX_GARBAGE {
            self.cut_off(id, CutOff::Garbage, out);
        }
    }

    fn frame(&mut self, id: ConnId, body: Body, now: Instant, out: &mut Vec<ApiAction>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if now >= conn.window + Duration::from_secs(1) {
            conn.window = now;
            conn.frames = 0;
        }
        conn.frames += 1;
        if conn.frames > MAX_FRAMES_PER_SEC {
            return self.cut_off(id, CutOff::Flood, out);
        }
        conn.garbage = 0;
        match body {
            Body::Init(init) => self.register(id, init, now, out),
            Body::Final { log_msg } => {
                if let Some(mut app) = conn.app.take() {
                    ask::abandon(id, &mut app, "deregistered", out);
                    out.push(ApiAction::Left(app.name, log_msg));
                    out.push(ApiAction::HealthChanged);
                }
            }
            Body::ChallengeResponse(r) => {
                if let Some(app) = conn.app.as_mut() {
                    answered(app, r, now, out);
                }
            }
            Body::ActionResponse(r) => {
                if let Some(app) = conn.app.as_mut() {
                    ask::answered(id, app, r, out);
                }
            }
            // Daemon-to-application messages mean nothing here.
            Body::InitAck { .. } | Body::Challenge { .. } | Body::ActionNotify(_) => {}
        }
    }

    fn register(&mut self, id: ConnId, init: Init, now: Instant, out: &mut Vec<ApiAction>) {
        let others = self.registered();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let full = conn.app.is_none() && others >= MAX_APPS;
        if init.heartbeat_interval_ms < MIN_INTERVAL_MS || full {
            out.push(ApiAction::Refused(init.name, init.heartbeat_interval_ms));
            out.push(ApiAction::Send(id, Body::InitAck { accepted: 0 }));
            return;
        }
        let interval = Duration::from_millis(init.heartbeat_interval_ms.into());
        let action = action_of(init.corrective_action);
        let app = App {
            reported: AppHealth {
                healthy: true,
                action,
                log: String::new(),
            },
            name: init.name.clone(),
            interval,
            action,
            recent: VecDeque::with_capacity(KEEP_CHALLENGES),
            awaiting: false,
            next_challenge: now,
            answer_deadline: now + 2 * interval,
            timed_out: None,
            notices: ask::Notices::of(&init),
            ask: None,
        };
        let mut old = conn.app.replace(app);
        if let Some(old) = old.as_mut() {
            ask::abandon(id, old, "registered again", out);
        }
        let changed = old.is_some_and(|old| !old.reported.healthy);
        out.push(ApiAction::Registered(init.name, init.heartbeat_interval_ms));
        out.push(ApiAction::Send(id, Body::InitAck { accepted: 1 }));
        if changed {
            out.push(ApiAction::HealthChanged);
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<ApiAction>) {
        self.ask_timeouts(now, out);
        for (id, conn) in &mut self.conns {
            let Some(app) = conn.app.as_mut() else {
                continue;
            };
            if app.timed_out.is_none() && now >= app.answer_deadline {
                time_out(app, out);
            }
            if now >= app.next_challenge {
                app.next_challenge = now + app.interval;
                if !app.awaiting || app.timed_out.is_some() {
                    let value = self.rng.u32(..);
                    if app.recent.len() == KEEP_CHALLENGES {
                        app.recent.pop_front();
                    }
                    app.recent.push_back(value);
                    app.awaiting = true;
                    let body = Body::Challenge {
                        heartbeat_challenge: value,
                    };
                    out.push(ApiAction::Send(*id, body));
                }
            }
        }
    }
}

fn time_out(app: &mut App, out: &mut Vec<ApiAction>) {
    let ms = 2 * app.interval.as_millis();
    let text = format!("Application {} heartbeat timeout {ms} ms.", app.name);
    app.reported = AppHealth {
        healthy: false,
        action: app.action,
        log: text.clone(),
    };
    app.timed_out = Some(text.clone());
    out.push(ApiAction::TimedOut(app.name.clone(), text));
    out.push(ApiAction::HealthChanged);
}

fn answered(app: &mut App, r: ChallengeResponse, now: Instant, out: &mut Vec<ApiAction>) {
    if !app.recent.contains(&r.heartbeat_response) {
        return;
    }
    app.awaiting = false;
    app.answer_deadline = now + 2 * app.interval;
    if app.timed_out.take().is_some() {
        out.push(ApiAction::Recovered(app.name.clone()));
    }
    let action = match action_of(r.corrective_action) {
        CorrectiveAction::Unknown => app.action,
        other => other,
    };
    let reported = AppHealth {
        healthy: r.health == 1,
        action,
        log: r.log_msg,
    };
    if reported != app.reported {
        app.reported = reported;
        out.push(ApiAction::HealthChanged);
    }
}

#[cfg(test)]
#[path = "apps_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "apps_ask_tests.rs"]
mod ask_tests;
