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
use serde_json::{json, Value};

use super::{read_body, ApiError, ApiState};
use crate::hostlink::resync;
use crate::ingest::{parse_events, parse_registration, MAX_EVENTS_BODY, MAX_REGISTER_BODY};
use crate::store::{Appended, NewEvent, StoreError};

pub(super) async fn register(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"acked_seq": acked})))
}

pub(super) async fn post_events(
    State(state): State<ApiState>,
    Path(host): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(body, MAX_EVENTS_BODY).await?;
    let events = parse_events(&bytes)?;
    let appended = state.ingest(host, events).await?;
    Ok(Json(json!({"acked_seq": appended.acked_seq})))
}

impl ApiState {
    /// Stores a host's events and publishes the new ones, in one critical section so that
    /// streams see events in id order.
    async fn ingest(&self, host: String, events: Vec<NewEvent>) -> Result<Appended, StoreError> {
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
