//! Carrying out a guestAgent [`Command`]: the store holds hosts, instances and their switches,
//! host agents are commanded through [`crate::hostlink`].
//!
//! Timeouts: while the instance heartbeats, a guest's own vote, notice and restart times, as
//! its `init` gave them (its host agent journals them with `heartbeat_started`), or, for an
//! instance whose times the controller has not heard yet (a host agent of an earlier
//! release), the reference guest's defaults as it sends them (11 s for the vote and every
//! notice, 121 s for the restart); `"0"` when it does not heartbeat, or when the host could
//! not be asked (so the VIM does not wait for an answer that cannot come).

use std::time::SystemTime;

use axum::http::StatusCode;
use serde::Serialize;

use super::request::{Command, Fail};
use super::{Answer, StarlingxState};
use crate::hostlink::resync;
use crate::store::{GuestTimeouts, HostRecord, InstanceRecord};

/// The times answered for an instance whose guest's own are not known: the reference
/// guest's defaults, plus one as it sends them.
pub const DEFAULT_TIMEOUTS: GuestTimeouts = GuestTimeouts {
    vote_secs: 11,
    shutdown_secs: 11,
    suspend_secs: 11,
    resume_secs: 11,
    restart_secs: 121,
};

/// Instance states in which the guest answers challenges.
const HEARTBEATING: &[&str] = &["heartbeating", "unhealthy"];

/// The guest's times, or the defaults.
fn timeouts(instance: &InstanceRecord) -> GuestTimeouts {
    instance.guest_timeouts.unwrap_or(DEFAULT_TIMEOUTS)
}

/// The notice a `notify` answers for `action`; `None` (answered `"0"`) for the resize events
/// and anything unknown, as the reference.
pub fn notice_secs(action: &str, times: &GuestTimeouts) -> Option<u32> {
    Some(match action {
        "stop" | "reboot" => times.shutdown_secs,
        "pause" | "suspend" | "live_migrate_begin" | "cold_migrate_begin" => times.suspend_secs,
        "unpause" | "resume" | "live_migrate_end" | "cold_migrate_end" => times.resume_secs,
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
        None => known_name(state, &uuid).await?.ok_or(Fail::NOT_FOUND)?,
    };
    host(state, &name).await?.ok_or(Fail::NOT_FOUND)?;
    learn(state, uuid, name).await?;
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
    learn(state, uuid, hostname).await?;
    resync::push_host(&state.api, &record).await;
    ok(&Pass { status: "pass" })
}

async fn host_query(state: &StarlingxState, uuid: &str) -> Result<Answer, Fail> {
    let name = known_name(state, uuid).await?.ok_or(Fail::NOT_FOUND)?;
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
    let times = timeouts(&instance);
    let secs = if vote {
        Some(times.vote_secs)
    } else {
        notice_secs(action, &times)
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
            restart_timeout: if heartbeating {
                timeouts(instance).restart_secs
            } else {
                0
            }
            .to_string(),
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

/// The name of the host the VIM calls `uuid`, as it said earlier (kept in the store).
async fn known_name(state: &StarlingxState, uuid: &str) -> Result<Option<String>, Fail> {
    let uuid = uuid.to_owned();
    let found = state
        .api
        .store(move |store| store.starlingx_host(&uuid))
        .await;
    found.map_err(internal)
}

/// Remembers that the VIM calls host `name` by `uuid`.
async fn learn(state: &StarlingxState, uuid: String, name: String) -> Result<(), Fail> {
    let stored = state
        .api
        .store(move |store| store.set_starlingx_host(&uuid, &name))
        .await;
    stored.map_err(internal)
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
    fn notices_follow_the_reference_table_with_the_guest_s_times() {
        let times = GuestTimeouts {
            vote_secs: 5,
            shutdown_secs: 6,
            suspend_secs: 7,
            resume_secs: 8,
            restart_secs: 300,
        };
        assert_eq!(notice_secs("reboot", &times), Some(6));
        assert_eq!(notice_secs("live_migrate_begin", &times), Some(7));
        assert_eq!(notice_secs("cold_migrate_end", &times), Some(8));
        assert_eq!(notice_secs("stop", &DEFAULT_TIMEOUTS), Some(11));
        for silent in ["resize_begin", "resize_end", "bogus"] {
            assert_eq!(notice_secs(silent, &times), None);
        }
    }
}
