//! The transmitter task: reads the event log after the cursor, sends each event's PATCHes
//! one at a time and moves the cursor on.
//!
//! It wakes on every newly stored event (the same broadcast the event streams follow) and reads
//! the events themselves from the store, so a wake-up missed or merged changes nothing. An
//! event that maps to no PATCH moves the cursor without a write of its own; one that does is
//! followed by a durable write of the cursor once its PATCHes are done.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::mapping::{self, Context, VimPatch, STATE_EVENTS};
use super::CALL_TIMEOUT;
use crate::api::{error_chain, ApiState};
use crate::store::{EventQuery, Store, StoreError, StoredEvent};
use crate::throttle::Throttle;
use crate::webhooks::send::{client_with, exchange, HttpClient};
use crate::webhooks::Backoff;

/// Events read from the store at a time.
const BATCH: u32 = 100;

/// How long to wait before trying a store call again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Shortest time between two warnings of one kind (failures, refusals).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running transmitter; dropping it stops it (a PATCH in flight is sent again on the next
/// start, as the cursor has not passed its event).
pub struct Transmitter(JoinHandle<()>);

impl Transmitter {
    /// Starts sending the events of `state`'s store to the VIM at `url` (a base URL from
    /// [`super::parse_url`]), retrying failures after `backoff` delays.
    pub fn spawn(state: ApiState, url: String, backoff: Backoff) -> Transmitter {
        Transmitter(tokio::spawn(transmit(state, url, backoff)))
    }
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sending half: one PATCH at a time, retried until the VIM answers.
struct Sender {
    state: ApiState,
    url: String,
    client: HttpClient,
    backoff: Backoff,
    failures: Throttle,
    refusals: Throttle,
}

async fn transmit(state: ApiState, url: String, backoff: Backoff) {
    // Subscribed before the first read, so no event stored after it goes unnoticed.
    let mut stored = state.subscribe_events();
    let mut cursor = until_stored(&state, "read the VIM cursor", |s| s.start_vim_cursor()).await;
    tracing::info!(%url, last_event_id = cursor, "Sending events to the VIM");
    let mut sender = Sender {
        state: state.clone(),
        url,
        client: client_with(CALL_TIMEOUT),
        backoff,
        failures: Throttle::new(WARN_EVERY),
        refusals: Throttle::new(WARN_EVERY),
    };
    loop {
        drain(&mut stored);
        let query = EventQuery {
            after: Some(cursor),
            limit: BATCH,
            ..EventQuery::default()
        };
        let batch = until_stored(&state, "read the event log", move |s| s.events(&query)).await;
        if batch.is_empty() {
            if let Err(RecvError::Closed) = stored.recv().await {
                return;
            }
            continue;
        }
        cursor = sender.send_batch(batch, cursor).await;
    }
}

/// Forgets the wake-ups already queued: the read that follows covers their events.
fn drain(stored: &mut broadcast::Receiver<Arc<StoredEvent>>) {
    while let Ok(_) | Err(TryRecvError::Lagged(_)) = stored.try_recv() {}
}

impl Sender {
    /// Sends every event of `batch` (all after `cursor`) and returns the new cursor, stored.
    async fn send_batch(&mut self, batch: Vec<StoredEvent>, mut cursor: u64) -> u64 {
        let mut saved = cursor;
        for event in batch {
            let id = event.id;
            if self.send_event(event).await {
                save(&self.state, id).await;
                saved = id;
            }
            cursor = id;
        }
        if saved != cursor {
            save(&self.state, cursor).await;
        }
        cursor
    }

    /// Sends `event`'s PATCHes; whether there were any.
    async fn send_event(&mut self, event: StoredEvent) -> bool {
        if !mapping::relevant(&event.event) {
            return false;
        }
        let (instance, host, id) = (event.instance.clone(), event.host.clone(), event.id);
        let context = until_stored(&self.state, "read an event's instance", move |s| {
            Ok(Context {
                instance: s.instance(&instance)?,
                host: s.host(&host)?,
                previous: s.previous_event(&instance, id, STATE_EVENTS)?,
            })
        })
        .await;
        let patches = mapping::patches(&event, &context);
        for patch in &patches {
            self.deliver(patch, &event).await;
        }
        !patches.is_empty()
    }

    /// Sends `patch` until the VIM answers 2xx (done) or 4xx (refused, skipped).
    async fn deliver(&mut self, patch: &VimPatch, event: &StoredEvent) {
        let mut failures = 0u32;
        loop {
            let error = match self.send(patch).await {
                Ok(status) if status.is_success() => return,
                Ok(status) if status.is_client_error() => {
                    return self.refused(patch, event, status);
                }
                Ok(status) => format!("The VIM answered {status}"),
                Err(error) => error,
            };
            failures = failures.saturating_add(1);
            self.state.vim_failed(&error, SystemTime::now());
            if let Some(held_back) = self.failures.allow(Instant::now()) {
                tracing::warn!(url = %patch.url(&self.url), event = event.id, attempts = failures,
                    held_back, error = %error, "A PATCH to the VIM failed; it will be retried");
            }
            tokio::time::sleep(self.backoff.delay(failures, fastrand::f64())).await;
        }
    }

    fn refused(&mut self, patch: &VimPatch, event: &StoredEvent, status: StatusCode) {
        let error = format!("The VIM refused a PATCH with {status}; it was skipped");
        self.state.vim_failed(&error, SystemTime::now());
        if let Some(held_back) = self.refusals.allow(Instant::now()) {
            tracing::warn!(url = %patch.url(&self.url), event = event.id, %status, held_back,
                "The VIM refused a PATCH; skipping it");
        }
    }

    /// One PATCH; the VIM's status, or what went wrong.
    async fn send(&self, patch: &VimPatch) -> Result<StatusCode, String> {
        let request = Request::patch(patch.url(&self.url))
            .header(USER_AGENT, super::USER_AGENT)
            .header(CONTENT_TYPE, "application/json")
            .header(CONNECTION, "close")
            .body(Full::new(Bytes::from(patch.body())))
            .map_err(|e| format!("Cannot build the request: {e}"))?;
        exchange(&self.client, request, CALL_TIMEOUT).await
    }
}

/// Stores the cursor at `id`.
async fn save(state: &ApiState, id: u64) {
    until_stored(state, "move the VIM cursor", move |s| s.set_vim_cursor(id)).await;
}

/// Runs `call` on the store until it succeeds, waiting [`STORE_RETRY`] after each failure.
async fn until_stored<T, F>(state: &ApiState, what: &str, call: F) -> T
where
    T: Send + 'static,
    F: Fn(&dyn Store) -> Result<T, StoreError> + Clone + Send + 'static,
{
    loop {
        match state.store(call.clone()).await {
            Ok(found) => return found,
            Err(error) => {
                let error = error_chain(&error);
                tracing::error!(%error, "The VIM transmitter cannot {what}; trying again");
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
}
