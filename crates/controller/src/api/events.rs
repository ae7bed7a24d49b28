//! The event log: queries and the live stream (Server-Sent Events).
//!
//! A stream first sends the stored events after the client's `Last-Event-ID` header (or
//! `?after=`), if it sent one, then each event as it is stored. Each connection has a feeder task that reads
//! the broadcast channel ingestion publishes to and writes into a small per-connection queue;
//! ingestion never waits for it. A reader too slow for the broadcast's backlog is caught up
//! from the store, and if the store cannot be read the stream ends with a comment telling the
//! client to reconnect with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::{ApiError, ApiState};
use crate::query::{event_query, stream_after};
use crate::store::{EventQuery, StoredEvent, MAX_EVENT_LIMIT};

/// Events queued per stream connection before its feeder waits for the client.
const STREAM_QUEUE: usize = 64;

/// `GET /v1/events`: `{"events": [...], "next_after": <last id when the page is full, else
/// null>}`.
pub(super) async fn query(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let query = event_query(uri.query().unwrap_or(""))?;
    let limit = query.limit as usize;
    let events = state.store(move |store| store.events(&query)).await?;
    let next_after = events
        .last()
        .filter(|_| events.len() == limit)
        .map(|e| e.id);
    Ok(Json(json!({"events": events, "next_after": next_after})))
}

/// `GET /v1/events/stream`.
pub(super) async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => {
            let text = value.to_str().unwrap_or("").trim();
            Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("Last-Event-ID {text:?} is not an event id"))
            })?)
        }
        None => stream_after(uri.query().unwrap_or(""))?,
    };
    // Subscribe before reading the backlog, so nothing stored in between is missed.
    let live = state.inner.events.subscribe();
    let after = match after {
        Some(after) => after,
        None => state.store(|store| store.last_event_id()).await?,
    };
    let (queue, out) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(feed(state, live, after, queue));
    let events = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|event| (Ok(event), out))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Sends the backlog after `last`, then live events, until the client or the controller goes.
async fn feed(
    state: ApiState,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    mut last: u64,
    queue: mpsc::Sender<Event>,
) {
    let mut stopping = state.inner.stopping.subscribe();
    if !catch_up(&state, &mut last, &queue).await {
        return;
    }
    loop {
        let received = tokio::select! {
            stop = stopping.wait_for(|stop| *stop) => {
                drop(stop);
                None
            }
            () = queue.closed() => return,
            received = live.recv() => Some(received),
        };
        let Some(received) = received else {
            let _ = queue
                .send(Event::default().comment("the controller is stopping"))
                .await;
            return;
        };
        match received {
            Ok(event) if event.id <= last => {}
            Ok(event) => {
                if queue.send(sse_event(&event)).await.is_err() {
                    return;
                }
                last = event.id;
            }
            Err(RecvError::Lagged(_)) => {
                if !catch_up(&state, &mut last, &queue).await {
                    return;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Sends every stored event after `last`; false when the stream must end.
async fn catch_up(state: &ApiState, last: &mut u64, queue: &mpsc::Sender<Event>) -> bool {
    loop {
        let query = EventQuery {
            after: Some(*last),
            limit: MAX_EVENT_LIMIT,
            ..EventQuery::default()
        };
        let page = match state.store(move |store| store.events(&query)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "An event stream cannot read the store; ending it");
                let bye = "cannot read the event log; reconnect with Last-Event-ID";
                let _ = queue.send(Event::default().comment(bye)).await;
                return false;
            }
        };
        for event in &page {
            if queue.send(sse_event(event)).await.is_err() {
                return false;
            }
            *last = event.id;
        }
        if page.len() < MAX_EVENT_LIMIT as usize {
            return true;
        }
    }
}

/// `id: <id>`, `event: <name>`, `data: <the event as JSON>`.
fn sse_event(event: &StoredEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    let mut sse = Event::default().id(event.id.to_string());
    // Names were checked at ingestion; a line break would end the field early.
    if !event.event.contains(['\n', '\r']) {
        sse = sse.event(&event.event);
    }
    sse.data(data)
}
