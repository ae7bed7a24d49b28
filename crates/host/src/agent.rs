//! The host agent: the registry of guests, their supervisors, the journal and the API.
//!
//! [`HostAgent::run`] starts the journal writer and the HTTP API, watches the channel
//! directory, and keeps exactly one supervisor task per channel socket present: a new socket
//! gets a supervisor, a removed one has its supervisor stopped (the instance disappears from
//! the view once the task has returned), and a re-created one makes its supervisor reconnect.
//! A periodic rescan repairs anything inotify missed. On shutdown every supervisor is stopped
//! and awaited, the API is closed and the journal drained before `run` returns. When a
//! controller is configured, the controller link runs beside them and is stopped last.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tether_hypervisor::Hypervisor;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::api::ApiServer;
use crate::config::HostConfig;
use crate::controller_link::{ControllerLink, LinkSettings};
use crate::deferral::DeferralPolicy;
use crate::discovery::{scan, Change, Watcher};
use crate::journal::{self, JournalWriter};
use crate::operations::Operations;
use crate::pattern::ChannelPattern;
use crate::recovery::{RecoveryHistory, RecoveryLimit};
use crate::status::AgentView;
use crate::supervisor::{mailbox, Command, Ended, Mailbox, Settings, Supervisor};
use crate::HostError;

/// The compute host agent. Build with [`HostAgent::new`], then [`HostAgent::run`].
pub struct HostAgent {
    config: HostConfig,
    pattern: ChannelPattern,
    settings: Arc<Settings>,
    writer: JournalWriter,
    view: AgentView,
    link: Option<LinkSettings>,
    api_tls: Option<Arc<tether_tls::ServerConfig>>,
}

impl std::fmt::Debug for HostAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAgent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HostAgent {
    /// Checks the configuration and opens the journal; nothing runs yet.
    pub fn new(
        config: HostConfig,
        hypervisor: Arc<dyn Hypervisor>,
    ) -> Result<HostAgent, HostError> {
        config.validate()?;
        let pattern = ChannelPattern::parse(&config.channel_pattern).map_err(|e| {
            HostError::Config(crate::config::ConfigError::Invalid {
                key: "channel_pattern",
                message: e.to_string(),
            })
        })?;
        let link = LinkSettings::from_config(&config)?;
        let api_tls = match (&config.api_tls_cert, &config.api_tls_key) {
            (Some(cert), Some(key)) => Some(
                tether_tls::server_config(cert, key).map_err(crate::config::ConfigError::ApiTls)?,
            ),
            _ => None,
        };
        let (journal, writer) = journal::open(&config.journal)?;
        let view = AgentView::default();
        // Only a controller that can reach this agent's API can order a recovery.
        let orderable = link.as_ref().filter(|_| config.api_listen.is_some());
        let deferral = DeferralPolicy::new(
            config.recovery,
            orderable.map(|l| l.state.clone()),
            Duration::from_secs(config.recovery_wait_secs),
            writer.written(),
        );
        let settings = Arc::new(Settings {
            miss_threshold: config.miss_threshold,
            min_interval_ms: config.min_interval_ms,
            start_timeout: Duration::from_secs(config.start_timeout_secs),
            bytes_per_sec: config.guest_bytes_per_sec,
            msgs_per_sec: config.guest_msgs_per_sec,
            max_bad_msgs: config.guest_max_bad_msgs,
            recovery_limit: RecoveryLimit {
                max: config.max_recoveries,
                window: Duration::from_secs(config.recovery_window_secs),
            },
            hypervisor,
            journal,
            operations: Operations::default(),
            reporting: view.reporting().clone(),
            deferral,
        });
        Ok(HostAgent {
            config,
            pattern,
            settings,
            writer,
            view,
            link,
            api_tls,
        })
    }

    /// A handle on the instances' status, valid before, during and after `run`.
    pub fn view(&self) -> AgentView {
        self.view.clone()
    }

    /// A handle to start and follow lifecycle operations, as the HTTP API does.
    pub fn operations(&self) -> Operations {
        self.settings.operations.clone()
    }

    /// Runs until `shutdown` resolves, then stops every supervisor and drains the journal.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), HostError> {
        let HostAgent {
            config,
            pattern,
            settings,
            writer,
            view,
            link,
            api_tls,
        } = self;
        let dir = config.channel_dir.clone();
        let watcher =
            Watcher::new(&dir, pattern.clone()).map_err(|source| HostError::ChannelDir {
                path: dir.clone(),
                source,
            })?;
        let api = ApiServer::start(
            &config.api_socket,
            config.api_listen,
            api_tls,
            view.clone(),
            settings.operations.clone(),
            config.journal.clone(),
        )
        .await?;
        let hypervisor = settings.hypervisor.name();
        let mut registry = Registry::new(settings, dir.clone(), pattern, view.clone());
        registry.rescan(); // before the link registers, so that it reports every instance
        let (stop_link, link_stopped) = tokio::sync::watch::channel(false);
        let link_task = link.map(|settings| {
            let api_url = api.url();
            let link = ControllerLink::new(settings, api_url, view.clone(), writer.written());
            tokio::spawn(link.run(link_stopped))
        });
        let journal_task = tokio::spawn(writer.run());
        tracing::info!(channel_dir = %dir.display(), hypervisor,
            api_socket = %config.api_socket.display(), "Host agent running");
        let rescan = Duration::from_secs(config.rescan_secs);
        registry.run(watcher, rescan, shutdown).await;
        registry.stop_all().await;
        drop(registry);
        api.stop().await;
        let _ = journal_task.await;
        let _ = stop_link.send(true);
        if let Some(task) = link_task {
            let _ = task.await;
        }
        tracing::info!("Host agent stopped");
        Ok(())
    }
}

/// A running supervisor, as the registry sees it.
struct Entry {
    commands: Mailbox,
    stopping: bool,
    respawn: bool,
}

/// One supervisor per channel socket.
struct Registry {
    settings: Arc<Settings>,
    dir: PathBuf,
    pattern: ChannelPattern,
    view: AgentView,
    entries: HashMap<Arc<str>, Entry>,
    histories: HashMap<Arc<str>, RecoveryHistory>,
    tasks: JoinSet<Ended>,
    task_ids: HashMap<Id, Arc<str>>,
}

impl Registry {
    fn new(
        settings: Arc<Settings>,
        dir: PathBuf,
        pattern: ChannelPattern,
        view: AgentView,
    ) -> Registry {
        Registry {
            settings,
            dir,
            pattern,
            view,
            entries: HashMap::new(),
            histories: HashMap::new(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
        }
    }

    async fn run(
        &mut self,
        mut watcher: Watcher,
        rescan: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut ticks = tokio::time::interval_at(Instant::now() + rescan, rescan);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                change = watcher.next(), if watching => match change {
                    Some(Ok(change)) => self.apply(change),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "Cannot read inotify events; relying on rescans");
                        watching = false;
                    }
                    None => watching = false,
                },
                _ = ticks.tick() => self.rescan(),
                Some(joined) = self.tasks.join_next_with_id() => self.ended(joined),
            }
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Appeared(uuid) => self.appeared(&uuid),
            Change::Vanished(uuid) => self.vanished(&uuid),
            Change::Rescan => self.rescan(),
        }
    }

    fn appeared(&mut self, uuid: &str) {
        match self.entries.get_mut(uuid) {
            Some(entry) if entry.stopping => entry.respawn = true,
            Some(entry) => {
                let _ = entry.commands.try_send(Command::Reconnect);
            }
            None => self.spawn(uuid.into()),
        }
    }

    fn vanished(&mut self, uuid: &str) {
        if let Some(entry) = self.entries.get_mut(uuid) {
            entry.respawn = false;
            if !entry.stopping {
                entry.stopping = true;
                entry.commands.send_stop();
            }
        }
    }

    fn rescan(&mut self) {
        let present = match scan(&self.dir, &self.pattern) {
            Ok(present) => present,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "Cannot scan the channel directory");
                return;
            }
        };
        let gone: Vec<Arc<str>> = self
            .entries
            .keys()
            .filter(|u| !present.contains(&***u))
            .cloned()
            .collect();
        for uuid in gone {
            self.vanished(&uuid);
        }
        for uuid in &present {
            match self.entries.get_mut(uuid.as_str()) {
                Some(entry) if entry.stopping => entry.respawn = true,
                Some(_) => {}
                None => self.spawn(uuid.as_str().into()),
            }
        }
        let (limit, now) = (self.settings.recovery_limit, Instant::now());
        self.histories.retain(|_, h| {
            h.prune(limit, now);
            !h.is_empty()
        });
    }

    fn spawn(&mut self, uuid: Arc<str>) {
        let (commands, receiver) = mailbox();
        let status = self.view.insert(&uuid);
        let history = self.histories.remove(&uuid).unwrap_or_default();
        let path = self.dir.join(self.pattern.file_name(&uuid));
        let settings = Arc::clone(&self.settings);
        let supervisor = Supervisor::new(settings, uuid.clone(), path, receiver, status, history);
        let handle = self.tasks.spawn(supervisor.run());
        self.task_ids.insert(handle.id(), uuid.clone());
        self.settings.operations.attach(&uuid, commands.clone());
        self.entries.insert(
            uuid,
            Entry {
                commands,
                stopping: false,
                respawn: false,
            },
        );
    }

    fn ended(&mut self, joined: Result<(Id, Ended), JoinError>) {
        let (uuid, history) = match joined {
            Ok((id, ended)) => {
                self.task_ids.remove(&id);
                (ended.uuid, ended.history)
            }
            Err(e) => {
                tracing::error!(error = %e, "A guest supervisor failed");
                match self.task_ids.remove(&e.id()) {
                    Some(uuid) => (uuid, RecoveryHistory::default()),
                    None => return,
                }
            }
        };
        if !history.is_empty() {
            self.histories.insert(uuid.clone(), history);
        }
        self.settings.operations.detach(&uuid);
        let entry = self.entries.remove(&uuid);
        let path = self.dir.join(self.pattern.file_name(&uuid));
        if entry.is_some_and(|e| e.respawn) || path.exists() {
            self.spawn(uuid);
        } else {
            self.view.remove(&uuid);
        }
    }

    async fn stop_all(&mut self) {
        for entry in self.entries.values() {
            entry.commands.send_stop();
        }
        while self.tasks.join_next().await.is_some() {}
        self.entries.clear();
    }
}
