//! The controller's HTTP API: host agents' ingestion routes and the native REST API.
//!
//! Every route needs `Authorization: Bearer <token>`. Handlers only read and validate the
//! request ([`crate::ingest`], [`crate::query`]) and call the [`Store`] on tokio's blocking
//! pool; errors are always `{"error":{"code":"<stable>","message":"<human>"}}`.
//!
//! | route | module |
//! | --- | --- |
//! | `POST /v1/agents/register`, `POST /v1/agents/{host}/events` | [`agents`] |
//! | `GET /v1/hosts[/{name}]`, `POST /v1/hosts/{name}/enable\|disable` | [`inventory`] |
//! | `GET /v1/instances[/{uuid}]`, `POST …/enable\|disable`, `PUT …/corrective-action` | [`inventory`] |
//! | `GET /v1/events`, `GET /v1/events/stream` | [`events`] |
//! | `POST\|GET /v1/webhooks`, `GET\|DELETE /v1/webhooks/{id}` | [`webhooks`] |
//! | `POST /v1/instances/{uuid}/operations`, `GET /v1/operations/{id}` | [`operations`] |

mod agents;
mod error;
mod events;
mod inventory;
mod operations;
mod webhooks;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch, Notify};

pub(crate) use error::chain as error_chain;
pub use error::ApiError;

use crate::hostlink::HostLink;
use crate::store::{Store, StoreError, StoredEvent};
use crate::token::token_matches;

/// How many stored events wait for slow stream readers before they must catch up from the
/// store.
const BROADCAST_CAPACITY: usize = 1024;

/// Largest body of the operator routes.
const MAX_BODY: usize = 64 << 10;

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    token: String,
    /// Every newly stored event, in id order.
    events: broadcast::Sender<Arc<StoredEvent>>,
    /// Held across "store a batch, then publish it", so publication follows id order.
    ingest: Mutex<()>,
    /// Set once the controller is stopping; event streams end.
    stopping: watch::Sender<bool>,
    /// Notified when ingestion enqueued webhook deliveries.
    outbox: Arc<Notify>,
    /// Commands to host agents.
    hostlink: HostLink,
}

impl ApiState {
    /// State over `store`, accepting `token` as the bearer token.
    pub fn new(store: Arc<dyn Store>, token: impl Into<String>) -> ApiState {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (stopping, _) = watch::channel(false);
        ApiState {
            inner: Arc::new(Inner {
                store,
                token: token.into(),
                events,
                ingest: Mutex::new(()),
                stopping,
                outbox: Arc::new(Notify::new()),
                hostlink: HostLink::new(),
            }),
        }
    }

    /// Tells open event streams to end, so a graceful shutdown can finish.
    pub fn stop_streams(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// The client of host agents' APIs.
    pub(crate) fn hostlink(&self) -> &HostLink {
        &self.inner.hostlink
    }

    /// Runs `call` on the store on the blocking pool.
    pub(crate) async fn store<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || call(&*store))
            .await
            .map_err(StoreError::Task)?
    }
}

/// The API's routes over `state`, with authentication.
pub fn router(state: ApiState) -> Router {
    let instance = "/v1/instances/{uuid}";
    Router::new()
        .route("/v1/agents/register", post(agents::register))
        .route("/v1/agents/{host}/events", post(agents::post_events))
        .route("/v1/hosts", get(inventory::hosts))
        .route("/v1/hosts/{name}", get(inventory::host))
        .route("/v1/hosts/{name}/enable", post(inventory::enable_host))
        .route("/v1/hosts/{name}/disable", post(inventory::disable_host))
        .route("/v1/instances", get(inventory::instances))
        .route(instance, get(inventory::instance))
        .route(
            &format!("{instance}/enable"),
            post(inventory::enable_instance),
        )
        .route(
            &format!("{instance}/disable"),
            post(inventory::disable_instance),
        )
        .route(
            &format!("{instance}/corrective-action"),
            put(inventory::corrective_action),
        )
        .route(&format!("{instance}/operations"), post(operations::start))
        .route("/v1/operations/{id}", get(operations::get))
        .route("/v1/events", get(events::query))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Lets a request through only with the right bearer token.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION);
    let presented = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if token_matches(&state.inner.token, token.trim()) => next.run(request).await,
        Some(_) => ApiError::unauthorized("The bearer token is not this controller's").into(),
        None => ApiError::unauthorized("Send Authorization: Bearer <token>").into(),
    }
}

async fn unknown_path() -> ApiError {
    ApiError::not_found("No such path; the API is under /v1/hosts, /v1/instances, /v1/events")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This path does not take that method",
    )
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("Cannot read the body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(format!(
                "The body is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
