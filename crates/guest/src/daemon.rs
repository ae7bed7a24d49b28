//! The daemon: one heartbeat channel, its state machine and its scripts, in one task.
//!
//! [`Daemon::run`] is the event loop. It waits on the channel ([`crate::link`]), the next
//! deadline of the state machine ([`crate::fsm`]), the running health-check and event scripts
//! ([`crate::script`]), the application API socket ([`crate::api`]) and the shutdown future, turns what happened into an
//! [`Event`](crate::fsm::Event), and carries out the actions the machine returns. It wakes only
//! for those: an idle enabled daemon wakes once per challenge.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tether_proto::{encode_into, EventType, Message, NotificationType, MAX_INT};
use tokio::time::{sleep_until, Instant};
use tracing::Instrument;

use crate::api::ApiServer;
use crate::apps::ApiEvent;
use crate::endpoint::Endpoint;
use crate::fsm::{Action, Event, Heartbeat, Settings, State};
use crate::health::ScriptHealth;
use crate::link::{Link, LinkEvent};
use crate::ratelimit::RateLimit;
use crate::script::{self, ScriptOutcome, ScriptRun, MAX_OUTPUT};
use crate::{GuestConfig, GuestError};

/// How long the `exit` message may take to leave on shutdown.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// What one daemon needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The virtio-serial port (a character device) or a UNIX socket to connect to.
    pub device: PathBuf,
    /// The instance name sent in `init` (cut to 63 bytes).
    pub name: String,
    /// The settings of `guest_heartbeat.conf`.
    pub config: GuestConfig,
    /// Where applications register ([`crate::api`]); `None` serves no application API.
    pub api_socket: Option<PathBuf>,
}

/// One guest heartbeat daemon.
#[derive(Debug)]
pub struct Daemon {
    options: Options,
}

impl Daemon {
    /// A daemon that will run with these options.
    pub fn new(options: Options) -> Daemon {
        Daemon { options }
    }

    /// Runs until `shutdown` resolves; then sends `exit` ("Exiting...") if the channel is up
    /// and returns `Ok(())`. Fails at once when the device is missing or cannot be opened.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), GuestError> {
        let span = tracing::info_span!("guest", instance = %self.options.name);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), GuestError> {
        let endpoint = Endpoint::resolve(&self.options.device)?;
        tracing::info!(channel = %endpoint.path().display(), "opening the heartbeat channel");
        let (link, up) = Link::open(endpoint).await?;
        let api = self.options.api_socket.as_deref().and_then(bind_api);
        let mut r = Runner::new(&self.options, link, api);
        r.apply(if up {
            Event::ChannelUp
        } else {
            Event::ChannelDown
        });
        tokio::pin!(shutdown);
        loop {
            let deadline = r.fsm.next_deadline();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                // Deadlines and scripts before the channel: a host that floods the channel
                // must not hold back a timeout or a health check.
                () = sleep_until_some(deadline) => r.apply(Event::Tick),
                outcome = wait_health(&mut r.health) => {
                    r.health = None;
                    r.on_health(outcome);
                }
                outcome = wait_event(&mut r.event) => {
                    r.event = None;
                    r.on_event_script(outcome);
                }
                event = r.link.event() => r.on_link(event?),
                event = api_event(&mut r.api) => r.on_api(event),
            }
        }
        tracing::info!("shutting down");
        r.apply(Event::Shutdown);
        r.link.flush(EXIT_FLUSH).await;
        Ok(())
    }
}

/// Log limits for what the host can trigger over and over.
struct Limits {
    state: RateLimit,
    channel: RateLimit,
    input: RateLimit,
    actions: RateLimit,
    scripts: RateLimit,
}

impl Limits {
    fn new() -> Limits {
        let minute = Duration::from_secs(60);
        Limits {
            state: RateLimit::new(30, minute),
            channel: RateLimit::new(10, minute),
            input: RateLimit::new(10, minute),
            actions: RateLimit::new(20, minute),
            scripts: RateLimit::new(10, minute),
        }
    }
}

/// The daemon's state between events.
struct Runner {
    fsm: Heartbeat,
    link: Link,
    sequence: u32,
    scratch: Vec<u8>,
    health_script: Option<PathBuf>,
    event_script: Option<PathBuf>,
    health: Option<ScriptRun>,
    event: Option<(u64, ScriptRun)>,
    last_health: ScriptHealth,
    limits: Limits,
    api: Option<ApiServer>,
}

impl Runner {
    fn new(options: &Options, link: Link, api: Option<ApiServer>) -> Runner {
        let settings = Settings::new(&options.name, &options.config);
        Runner {
            fsm: Heartbeat::new(settings, fastrand::u64(..)),
            link,
            sequence: 0,
            scratch: Vec::with_capacity(512),
            health_script: options.config.health_check_script.clone(),
            event_script: options.config.event_notification_script.clone(),
            health: None,
            event: None,
            last_health: ScriptHealth::default(),
            limits: Limits::new(),
            api,
        }
    }

    fn on_api(&mut self, event: ApiEvent) {
        let events = self.api.as_mut().map(|api| api.handle(event));
        for event in events.into_iter().flatten() {
            self.apply(event);
        }
    }

    /// Puts action `run` to the applications; without an API nobody is asked.
    fn ask_apps(&mut self, run: u64, notification: NotificationType, event: EventType) {
        let ask = ApiEvent::Ask {
            run,
            event,
            notification,
        };
        if self.api.is_some() {
            self.on_api(ask);
        } else {
            self.apply(Event::AppsAsked {
                run,
                apps: Vec::new(),
            });
        }
    }

    fn apply(&mut self, event: Event) {
        let now = Instant::now();
        for action in self.fsm.handle(event, now) {
            self.perform(action, now);
        }
    }

    fn perform(&mut self, action: Action, now: Instant) {
        match action {
            Action::Send(message) => self.send(&message, now),
            Action::StateChanged { from, to } => log_state(&mut self.limits, from, to, now),
            Action::RunHealthCheck => self.run_health_check(now),
            Action::StopHealthCheck => self.health = None,
            Action::RunEventScript {
                run,
                notification_type,
                event_type,
            } => {
                if let Some(path) = &self.event_script {
                    let args = [notification_type.as_str(), event_type.as_str()];
                    self.event = Some((run, script::spawn(path, &args)));
                }
            }
            Action::StopEventScript => self.event = None,
            Action::AskApps {
                run,
                notification_type,
                event_type,
            } => self.ask_apps(run, notification_type, event_type),
            Action::StopAskingApps(run) => self.on_api(ApiEvent::StopAsking(run)),
            Action::VoteTimedOut(silent) => {
                if let Some(left_out) = self.limits.actions.check(now) {
                    let silent = silent.join(", ");
                    tracing::warn!(%silent, left_out, "no answer in time to a lifecycle action; counted as accept");
                }
            }
            Action::NackReceived(nack) => {
                if let Some(left_out) = self.limits.input.check(now) {
                    tracing::warn!(text = %nack.log_msg, left_out, "host refused a message (nack)");
                }
            }
            Action::StaleInitAck(id) => {
                if let Some(left_out) = self.limits.input.check(now) {
                    tracing::info!(invocation_id = id, left_out, "ignoring a stale init_ack");
                }
            }
            Action::Ignored(msg_type, state) => {
                if let Some(left_out) = self.limits.input.check(now) {
                    tracing::debug!(%msg_type, %state, left_out, "ignoring a message");
                }
            }
        }
    }

    fn send(&mut self, message: &Message, now: Instant) {
        self.sequence = if self.sequence >= MAX_INT {
            1
        } else {
            self.sequence + 1
        };
        self.scratch.clear();
        encode_into(&mut self.scratch, self.sequence, message);
        if let Message::ActionResponse(r) = message {
            if let Some(left_out) = self.limits.actions.check(now) {
                tracing::info!(
                    event = %r.event_type, notification = %r.notification_type,
                    result = %r.vote_result, reason = %r.log_msg, left_out,
                    "answering a lifecycle action"
                );
            }
        }
        if !self.link.send(&self.scratch) {
            tracing::debug!(msg_type = %message.msg_type(), "channel down; message dropped");
        }
    }

    fn run_health_check(&mut self, now: Instant) {
        let Some(path) = &self.health_script else {
            return;
        };
        if self.health.take().is_some() {
            if let Some(left_out) = self.limits.scripts.check(now) {
                tracing::warn!(
                    left_out,
                    "health check still running at the next interval; killed"
                );
            }
        }
        self.health = Some(script::spawn(path, &[]));
    }

    fn on_link(&mut self, event: LinkEvent) {
        let now = Instant::now();
        match event {
            LinkEvent::Up => {
                if let Some(left_out) = self.limits.channel.check(now) {
                    tracing::info!(left_out, "heartbeat channel up");
                }
                self.apply(Event::ChannelUp);
            }
            LinkEvent::Down(reason) => {
                if let Some(left_out) = self.limits.channel.check(now) {
                    tracing::info!(reason = %crate::error_chain(&reason), left_out, "heartbeat channel down");
                }
                self.apply(Event::ChannelDown);
            }
            LinkEvent::Frames(frames) => {
                for frame in frames {
                    match frame {
                        Ok(message) => {
                            self.log_notify(&message, now);
                            self.apply(Event::Received(message));
                        }
                        Err(e) => {
                            if let Some(left_out) = self.limits.input.check(now) {
                                tracing::warn!(error = %e, left_out, "dropping a malformed message from the host");
                            }
                        }
                    }
                }
            }
        }
    }

    fn log_notify(&mut self, message: &Message, now: Instant) {
        let Message::ActionNotify(n) = message else {
            return;
        };
        if let Some(left_out) = self.limits.actions.check(now) {
            tracing::info!(
                event = %n.event_type, notification = %n.notification_type,
                timeout_ms = n.timeout_ms, left_out, "lifecycle action received"
            );
        }
    }

    fn on_health(&mut self, outcome: ScriptOutcome) {
        let now = Instant::now();
        if outcome.failed_to_start {
            if let Some(left_out) = self.limits.scripts.check(now) {
                tracing::warn!(reason = %outcome.output, left_out, "health check did not run");
            }
        }
        let health = ScriptHealth {
            unhealthy: outcome.code == Some(1),
            output: outcome.output.trim_end().chars().take(MAX_OUTPUT).collect(),
        };
        if health.unhealthy != self.last_health.unhealthy {
            let verdict = if health.unhealthy {
                "unhealthy"
            } else {
                "healthy"
            };
            tracing::info!(reason = %health.output, "health check says {verdict}");
        }
        self.last_health = health.clone();
        self.apply(Event::HealthChecked(health));
    }

    fn on_event_script(&mut self, (run, outcome): (u64, ScriptOutcome)) {
        let failed = outcome.failed_to_start || !matches!(outcome.code, Some(0 | 1));
        if failed {
            if let Some(left_out) = self.limits.scripts.check(Instant::now()) {
                let code = outcome.code.map_or(-1, i64::from);
                tracing::warn!(reason = %outcome.output, code, left_out, "event script failed; counted as no answer");
            }
        }
        self.apply(Event::EventScriptDone { run, outcome });
    }
}

fn log_state(limits: &mut Limits, from: State, to: State, now: Instant) {
    if let Some(left_out) = limits.state.check(now) {
        tracing::info!(%from, %to, left_out, "heartbeat state change from {from} to {to}");
    }
}

/// The health check's outcome, or never when none runs.
async fn wait_health(slot: &mut Option<ScriptRun>) -> ScriptOutcome {
    match slot {
        Some(run) => run.await,
        None => std::future::pending().await,
    }
}

/// The event script's run and outcome, or never when none runs.
async fn wait_event(slot: &mut Option<(u64, ScriptRun)>) -> (u64, ScriptOutcome) {
    match slot {
        Some((id, run)) => (*id, run.await),
        None => std::future::pending().await,
    }
}

/// The application API on `path`; without it (logged) the daemon still heartbeats for the
/// guest itself: the host must not lose the VM's heartbeat over a local socket problem.
fn bind_api(path: &std::path::Path) -> Option<ApiServer> {
    match ApiServer::bind(path) {
        Ok(server) => {
            tracing::info!(socket = %path.display(), "application API listening");
            Some(server)
        }
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "cannot serve the application API; heartbeating without it");
            None
        }
    }
}

/// The next event of the application API, or never when it is not served.
async fn api_event(api: &mut Option<ApiServer>) -> ApiEvent {
    match api {
        Some(api) => api.event().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
