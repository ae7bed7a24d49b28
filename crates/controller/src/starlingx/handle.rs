//! Carrying out a guestAgent [`Command`]: the store holds hosts, instances and their switches,
//! host agents are commanded through [`crate::hostlink`].
//!
//! Timeouts: the controller does not store a guest's own vote, notice and restart times, so
//! it answers the reference guest's defaults as the guest sends them (10 s + 1 for the vote and
//! every notice, 120 s + 1 for the restart) while the instance heartbeats, and `"0"` when it
//! does not, or when the host could not be asked (so the VIM does not wait for an answer that
//! cannot come).

use std::sync::PoisonError;
use std::time::SystemTime;

use axum::http::StatusCode;
use serde::Serialize;

use super::request::{Command, Fail};
use super::{Answer, StarlingxState};
use crate::hostlink::resync;
use crate::store::{HostRecord, InstanceRecord};

/// Vote time answered for a heartbeating instance (the reference guest's default + 1).
pub const VOTE_SECS: u32 = 11;
/// Shutdown notice (stop, reboot).
pub const SHUTDOWN_SECS: u32 = 11;
/// Suspend notice (pause, suspend, `*_migrate_begin`).
pub const SUSPEND_SECS: u32 = 11;
/// Resume notice (unpause, resume, `*_migrate_end`).
pub const RESUME_SECS: u32 = 11;
/// Restart time (how long the VIM waits for a rebooted guest).
pub const RESTART_SECS: u32 = 121;

/// Instance states in which the guest answers challenges.
const HEARTBEATING: &[&str] = &["heartbeating", "unhealthy"];

/// The notice a `notify` answers for `action`; `None` (answered `"0"`) for the resize events
/// and anything unknown, as the reference.
pub fn notice_secs(action: &str) -> Option<u32> {
    Some(match action {
        "stop" | "reboot" => SHUTDOWN_SECS,
        "pause" | "suspend" | "live_migrate_begin" | "cold_migrate_begin" => SUSPEND_SECS,
        "unpause" | "resume" | "live_migrate_end" | "cold_migrate_end" => RESUME_SECS,
        _ => return None,
    })
}

#[derive(Serialize)]
struct Pass {
    status: &'static str,
}

#[derive(Serialize)]
struct HostState<'a> {
    uuid: &'a str,
    hostname: &'a str,
    state: &'static str,
}

#[derive(Serialize)]
struct Services<'a> {
    uuid: &'a str,
    hostname: &'a str,
    services: [Service; 1],
}

#[derive(Serialize)]
struct Service {
    service: &'static str,
    state: &'static str,
    #[serde(rename = "restart-timeout")]
    restart_timeout: String,
    status: &'static str,
}

#[derive(Serialize)]
struct ActionAnswer<'a> {
    uuid: &'a str,
    hostname: &'a str,
    action: &'a str,
    timeout: String,
}

/// Carries `command` out.
pub async fn run(state: &StarlingxState, command: Command) -> Result<Answer, Fail> {
    match command {
        Command::HostCreate { uuid, hostname } => host_create(state, uuid, hostname).await,
        Command::HostReporting {
            uuid,
            hostname,
            enabled,
        } => host_reporting(state, uuid, hostname, enabled).await,
        Command::HostDelete => Ok(Answer {
            status: StatusCode::NO_CONTENT,
            body: String::new(),
        }),
        Command::HostQuery { uuid } => host_query(state, &uuid).await,
        Command::InstanceQuery { uuid } => {
            let instance = instance(state, &uuid).await?;
            ok(&services(&instance, &instance.host))
        }
        Command::InstanceDelete { uuid } => {
            instance(state, &uuid).await?;
            Ok(Answer {
                status: StatusCode::NO_CONTENT,
                body: String::new(),
            })
        }
        Command::InstanceAdd { hostname, .. } => match host(state, &hostname).await? {
            Some(_) => ok(&Pass { status: "pass" }),
            None => Err(Fail::INVALID),
        },
        Command::InstanceReporting {
            uuid,
            hostname,
            enabled,
        } => instance_reporting(state, uuid, hostname, enabled).await,
        Command::Action {
            uuid,
            hostname,
            action,
            vote,
        } => lifecycle(state, &uuid, &hostname, &action, vote).await,
    }
}

async fn host_create(
    state: &StarlingxState,
    uuid: String,
    hostname: Option<String>,
) -> Result<Answer, Fail> {
    let name = match hostname {
        Some(name) => name,
        None => known_name(state, &uuid).ok_or(Fail::NOT_FOUND)?,
    };
    host(state, &name).await?.ok_or(Fail::NOT_FOUND)?;
    learn(state, uuid, name);
    ok(&Pass { status: "pass" })
}

async fn host_reporting(
    state: &StarlingxState,
    uuid: String,
    hostname: String,
    enabled: bool,
) -> Result<Answer, Fail> {
    let name = hostname.clone();
    let changed = state
        .api
        .store(move |store| store.set_host_reporting(&name, enabled))
        .await
        .map_err(internal)?;
    let record = changed.ok_or(Fail::NOT_FOUND)?;
    tracing::info!(host = %record.name, enabled, "Host reporting changed by the VIM");
    learn(state, uuid, hostname);
    resync::push_host(&state.api, &record).await;
    ok(&Pass { status: "pass" })
}

async fn host_query(state: &StarlingxState, uuid: &str) -> Result<Answer, Fail> {
    let name = known_name(state, uuid).ok_or(Fail::NOT_FOUND)?;
    let record = host(state, &name).await?.ok_or(Fail::NOT_FOUND)?;
    ok(&HostState {
        uuid,
        hostname: &record.name,
        state: on_off(record.reporting_enabled),
    })
}

async fn instance_reporting(
    state: &StarlingxState,
    uuid: String,
    hostname: String,
    enabled: bool,
) -> Result<Answer, Fail> {
    let now = SystemTime::now();
    let changed = state
        .api
        .store(move |store| store.set_instance_reporting(&uuid, enabled, now))
        .await
        .map_err(internal)?;
    let instance = changed.ok_or(Fail::NOT_FOUND)?;
    tracing::info!(instance = %instance.uuid, enabled, "Instance reporting changed by the VIM");
    resync::push_instance(&state.api, &instance).await;
    ok(&services(&instance, &hostname))
}

/// A vote or a notification: forwarded to the host as one step when the guest heartbeats.
async fn lifecycle(
    state: &StarlingxState,
    uuid: &str,
    hostname: &str,
    action: &str,
    vote: bool,
) -> Result<Answer, Fail> {
    let instance = instance(state, uuid).await?;
    let secs = if vote {
        Some(VOTE_SECS)
    } else {
        notice_secs(action)
    };
    let mut timeout = 0;
    if HEARTBEATING.contains(&instance.state.as_str()) {
        let only = if vote { "vote" } else { "notify" };
        if forward(state, &instance, action, only).await {
            timeout = secs.unwrap_or(0);
        }
    }
    ok(&ActionAnswer {
        uuid,
        hostname,
        action,
        timeout: timeout.to_string(),
    })
}

/// Starts the single step on the instance's host; whether it started.
async fn forward(
    state: &StarlingxState,
    instance: &InstanceRecord,
    action: &str,
    only: &str,
) -> bool {
    let Ok(Some(record)) = host(state, &instance.host).await else {
        return false;
    };
    let started = state
        .api
        .hostlink()
        .start_action(&record, &instance.uuid, action, Some(only))
        .await;
    match started {
        Ok(id) => {
            tracing::info!(instance = %instance.uuid, host = %record.name, action, only,
                operation = %id, "Lifecycle step started for the VIM");
            true
        }
        Err(e) => {
            let error = crate::api::error_chain(&e);
            tracing::warn!(instance = %instance.uuid, host = %record.name, action, only, %error,
                "Lifecycle step not started; answering timeout 0");
            false
        }
    }
}

fn services<'a>(instance: &'a InstanceRecord, hostname: &'a str) -> Services<'a> {
    let heartbeating = HEARTBEATING.contains(&instance.state.as_str());
    Services {
        uuid: &instance.uuid,
        hostname,
        services: [Service {
            service: "heartbeat",
            state: on_off(instance.reporting_enabled),
            restart_timeout: if heartbeating { RESTART_SECS } else { 0 }.to_string(),
            status: on_off(heartbeating),
        }],
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "enabled"
    } else {
        "disabled"
    }
}

async fn instance(state: &StarlingxState, uuid: &str) -> Result<InstanceRecord, Fail> {
    let uuid = uuid.to_owned();
    let found = state.api.store(move |store| store.instance(&uuid)).await;
    found.map_err(internal)?.ok_or(Fail::NOT_FOUND)
}

async fn host(state: &StarlingxState, name: &str) -> Result<Option<HostRecord>, Fail> {
    let name = name.to_owned();
    let found = state.api.store(move |store| store.host(&name)).await;
    found.map_err(internal)
}

fn known_name(state: &StarlingxState, uuid: &str) -> Option<String> {
    let hosts = state.hosts.lock().unwrap_or_else(PoisonError::into_inner);
    hosts.get(uuid).cloned()
}

fn learn(state: &StarlingxState, uuid: String, name: String) {
    let mut hosts = state.hosts.lock().unwrap_or_else(PoisonError::into_inner);
    hosts.insert(uuid, name);
}

fn ok(body: &impl Serialize) -> Result<Answer, Fail> {
    let body = serde_json::to_string(body).map_err(|_| Fail::INVALID)?;
    Ok(Answer {
        status: StatusCode::OK,
        body,
    })
}

/// A store failure: logged, answered as the reference answers what it cannot do.
fn internal(error: crate::store::StoreError) -> Fail {
    let error = crate::api::error_chain(&error);
    tracing::error!(%error, "A store call failed");
    Fail::INVALID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_follow_the_reference_table() {
        assert_eq!(notice_secs("reboot"), Some(SHUTDOWN_SECS));
        assert_eq!(notice_secs("live_migrate_begin"), Some(SUSPEND_SECS));
        assert_eq!(notice_secs("cold_migrate_end"), Some(RESUME_SECS));
        assert_eq!(notice_secs("resize_begin"), None);
        assert_eq!(notice_secs("resize_end"), None);
        assert_eq!(notice_secs("bogus"), None);
    }
}
