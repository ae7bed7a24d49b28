//! The routes host agents call: registration and event delivery.
//!
//! An agent registers (`POST /v1/agents/register`) with its full state whenever it connects,
//! and learns the highest event sequence number the controller holds for it; it then sends
//! every later journal event (`POST /v1/agents/{host}/events`) and may resend ones already
//! acknowledged, which are ignored. Stored events are published to the event streams.

use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{read_body, ApiError, ApiState, ErrorBody};
use crate::hostlink::resync;
use crate::ingest::{
    parse_events, parse_registration, EventsBody, RegisterBody, MAX_EVENTS_BODY, MAX_REGISTER_BODY,
};
use crate::store::{Appended, NewEvent, StoreError};

/// The answer to an agent: how far the controller holds its events.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acked {
    /// The host's highest stored event sequence number (0 before any); the agent sends the
    /// events after it.
    pub acked_seq: u64,
}

/// Registers a host agent with its full state.
///
/// Sent on every (re)connect. The host and every listed instance are upserted; instances of
/// this host that are not listed become `gone`. The stored reporting switches are then pushed
/// to the host in the background.
#[utoipa::path(
    post,
    path = "/v1/agents/register",
    operation_id = "register_agent",
    tag = "agents",
    request_body = RegisterBody,
    responses(
        (status = 200, description = "Registered", body = Acked),
        (status = 400, description = "`bad_request`: not JSON, or a field missing or invalid \
            (the message names it)", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 413, description = "`payload_too_large`: over 16 MiB or 20,000 instances",
            body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn register(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<Acked>, ApiError> {
    let bytes = read_body(body, MAX_REGISTER_BODY).await?;
    let registration = parse_registration(&bytes)?;
    let host = registration.host.clone();
    let instances = registration.instances.len();
    let reported = resync::reported_flags(&bytes);
    let now = SystemTime::now();
    let acked = state
        .store(move |store| store.register(&registration, now))
        .await?;
    tracing::info!(%host, instances, acked_seq = acked, "A host agent registered");
    tokio::spawn(resync::after_register(state.clone(), host, reported));
    Ok(Json(Acked { acked_seq: acked }))
}

/// Stores a host agent's journal events.
///
/// Events at or below the host's `acked_seq` are ignored, so a batch may be resent. The
/// whole request is one transaction.
#[utoipa::path(
    post,
    path = "/v1/agents/{host}/events",
    operation_id = "post_agent_events",
    tag = "agents",
    params(("host" = String, Path, description = "The host's name, as it registered")),
    request_body = EventsBody,
    responses(
        (status = 200, description = "Stored (or already stored)", body = Acked),
        (status = 400, description = "`bad_request`: not JSON, a field missing or invalid, \
            `seq` not going up by one, or `ts` not RFC 3339 (the message names it)",
            body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`unknown_host`: the host never registered",
            body = ErrorBody),
        (status = 409, description = "`sequence_gap`: the first new event does not follow the \
            last one stored; nothing was stored, and `acked_seq` says where to resend from",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB or 1,000 events",
            body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn post_events(
    State(state): State<ApiState>,
    Path(host): Path<String>,
    body: Body,
) -> Result<Json<Acked>, ApiError> {
    let bytes = read_body(body, MAX_EVENTS_BODY).await?;
    let events = parse_events(&bytes)?;
    let appended = state.ingest(host, events).await?;
    Ok(Json(Acked {
        acked_seq: appended.acked_seq,
    }))
}

impl ApiState {
    /// Stores a host's events and publishes the new ones, in one critical section so that
    /// streams see events in id order.
    pub(crate) async fn ingest(
        &self,
        host: String,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let this = self.clone();
        let now = SystemTime::now();
        let task = tokio::task::spawn_blocking(move || {
            let inner = &this.inner;
            let _order = inner.ingest.lock().unwrap_or_else(PoisonError::into_inner);
            let appended = inner.store.append_events(&host, &events, now)?;
            for event in &appended.stored {
                let _ = inner.events.send(Arc::new(event.clone()));
            }
            if !appended.stored.is_empty() {
                inner.outbox.notify_one();
            }
            Ok(appended)
        });
        task.await.map_err(StoreError::Task)?
    }
}
