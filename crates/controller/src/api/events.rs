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
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::query::{event_query, stream_after};
use crate::store::{EventQuery, StoredEvent, MAX_EVENT_LIMIT};

/// Events queued per stream connection before its feeder waits for the client.
const STREAM_QUEUE: usize = 64;

/// A page of the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The matching events, by id.
    pub events: Vec<StoredEvent>,
    /// The last event's id when the page is full (ask again with `after` set to it); `null`
    /// when there are no more.
    #[schema(required = true)]
    pub next_after: Option<u64>,
}

/// Queries the event log, in id order.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "query_events",
    tag = "events",
    params(
        ("instance" = Option<String>, Query, description = "Only this instance's events"),
        ("host" = Option<String>, Query, description = "Only this host's events"),
        ("type" = Option<String>, Query,
            description = "Only events of this name (`heartbeat_lost`, …)"),
        ("since" = Option<String>, Query,
            description = "Only events at or after this time (RFC 3339)"),
        ("after" = Option<u64>, Query, description = "Only events with an id above this"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "One page of events", body = EventPage),
        (status = 400, description = "`bad_request`: an unknown, repeated or invalid query \
            parameter (the message names it)", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn query(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<EventPage>, ApiError> {
    let query = event_query(uri.query().unwrap_or(""))?;
    let limit = query.limit as usize;
    let events = state.store(move |store| store.events(&query)).await?;
    let next_after = events
        .last()
        .filter(|_| events.len() == limit)
        .map(|e| e.id);
    Ok(Json(EventPage { events, next_after }))
}

/// Streams events live, as Server-Sent Events.
///
/// Each event is sent as `id: <id>`, `event: <event name>` and `data: <the event as JSON, as
/// in GET /v1/events>`. With `Last-Event-ID` (or `?after=`) the stored events after that id
/// come first; without, the events stored from the moment of connecting. Comment lines keep
/// the connection alive every 15 s; the stream ends with a comment when the controller stops
/// or cannot read its log, and the client reconnects with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    operation_id = "stream_events",
    tag = "events",
    params(
        ("Last-Event-ID" = Option<u64>, Header, nullable = false,
            description = "Resume after this event id (wins over `after`)"),
        ("after" = Option<u64>, Query, description = "Resume after this event id"),
    ),
    responses(
        (status = 200, description = "The event stream; each `data:` line is one event",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "`bad_request`: `Last-Event-ID` or `after` is not an \
            event id, or an unknown query parameter", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
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
