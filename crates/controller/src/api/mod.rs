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
//! | `PUT /v1/hosts/{name}/recovery-mode`, `PUT /v1/instances/{uuid}/recovery-mode`, `GET /v1/instances/{uuid}/recoveries` | [`recovery`] |
//! | `GET /v1/audit` | [`audit`] |
//! | `GET /v1/vim` | [`vim`] |
//!
//! [`routes`] lists every route once; [`router`] serves that list and [`openapi`] documents
//! it (a test checks that the two agree).

mod agents;
mod audit;
mod error;
mod events;
mod inventory;
mod openapi;
mod operations;
mod recovery;
mod vim;
mod webhooks;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch, Notify};
use utoipa::ToResponse;

pub use agents::Acked;
pub(crate) use error::chain as error_chain;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use events::EventPage;
pub use inventory::{CorrectiveActionBody, HostSwitched, InstanceSwitched};
pub use openapi::openapi;
pub use operations::{Operation, OperationRequest, OperationStarted, OperationStep};
pub use recovery::{RecoveryLog, RecoveryModeBody};
pub use vim::VimReport;

use crate::audit::AuditReport;
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
    /// The last audit round's result.
    audit: Mutex<AuditReport>,
    /// The VIM event transmitter's URL and latest error.
    vim: Mutex<crate::vim::VimState>,
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
                audit: Mutex::new(AuditReport::default()),
                vim: vim::initial(),
            }),
        }
    }

    /// Tells open event streams to end, so a graceful shutdown can finish.
    pub fn stop_streams(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Every event stored from now on, in id order.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.events.subscribe()
    }

    /// The client of host agents' APIs.
    pub(crate) fn hostlink(&self) -> &HostLink {
        &self.inner.hostlink
    }

    /// The last audit round's result.
    pub(crate) fn audit(&self) -> AuditReport {
        lock(&self.inner.audit).clone()
    }

    /// Records an audit round's result.
    pub(crate) fn set_audit(&self, report: AuditReport) {
        *lock(&self.inner.audit) = report;
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

    /// Like [`ApiState::new`], calling host agents through `hostlink`.
    pub fn with_hostlink(
        store: Arc<dyn Store>,
        token: impl Into<String>,
        hostlink: HostLink,
    ) -> ApiState {
        let mut state = ApiState::new(store, token);
        // The state was just made: nothing else holds it yet.
        if let Some(inner) = Arc::get_mut(&mut state.inner) {
            inner.hostlink = hostlink;
        }
        state
    }
}

/// The API's routes over `state`, with authentication: exactly those of [`routes`].
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for route in table() {
        router = router.route(route.path, route.handler);
    }
    router
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Every route [`router`] serves, as (method, path) with `{name}` for path parameters.
pub fn routes() -> Vec<(Method, &'static str)> {
    table()
        .into_iter()
        .map(|route| (route.verb.method(), route.path))
        .collect()
}

/// The one list of routes, in the order of the API's documentation.
fn table() -> Vec<Route> {
    use Verb::{Delete, Get, Post, Put};
    vec![
        Route::new(Post, "/v1/agents/register", agents::register),
        Route::new(Post, "/v1/agents/{host}/events", agents::post_events),
        Route::new(Get, "/v1/hosts", inventory::hosts),
        Route::new(Get, "/v1/hosts/{name}", inventory::host),
        Route::new(Post, "/v1/hosts/{name}/enable", inventory::enable_host),
        Route::new(Post, "/v1/hosts/{name}/disable", inventory::disable_host),
        Route::new(Put, "/v1/hosts/{name}/recovery-mode", recovery::host_mode),
        Route::new(Get, "/v1/instances", inventory::instances),
        Route::new(Get, "/v1/instances/{uuid}", inventory::instance),
        Route::new(
            Post,
            "/v1/instances/{uuid}/enable",
            inventory::enable_instance,
        ),
        Route::new(
            Post,
            "/v1/instances/{uuid}/disable",
            inventory::disable_instance,
        ),
        Route::new(
            Put,
            "/v1/instances/{uuid}/corrective-action",
            inventory::corrective_action,
        ),
        Route::new(
            Put,
            "/v1/instances/{uuid}/recovery-mode",
            recovery::instance_mode,
        ),
        Route::new(Get, "/v1/instances/{uuid}/recoveries", recovery::recoveries),
        Route::new(Post, "/v1/instances/{uuid}/operations", operations::start),
        Route::new(Get, "/v1/operations/{id}", operations::get),
        Route::new(Get, "/v1/events", events::query),
        Route::new(Get, "/v1/events/stream", events::stream),
        Route::new(Post, "/v1/webhooks", webhooks::create),
        Route::new(Get, "/v1/webhooks", webhooks::list),
        Route::new(Get, "/v1/webhooks/{id}", webhooks::get),
        Route::new(Delete, "/v1/webhooks/{id}", webhooks::delete),
        Route::new(Get, "/v1/audit", audit::last),
        Route::new(Get, "/v1/vim", vim::status),
    ]
}

/// The methods the API uses.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// One method on one path, and its handler.
struct Route {
    verb: Verb,
    path: &'static str,
    handler: MethodRouter<ApiState>,
}

impl Route {
    fn new<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        Route {
            verb,
            path,
            handler: on(verb.filter(), handler),
        }
    }
}

/// `unauthorized`: no `Authorization: Bearer <token>` header, or not this controller's token.
/// Nothing changed.
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// `internal`: the controller's store failed; its log has the cause.
#[derive(ToResponse)]
pub struct Internal(pub ErrorBody);

/// `payload_too_large`: a body over 64 KiB.
#[derive(ToResponse)]
pub struct TooLarge(pub ErrorBody);

/// `host_unreachable`: the host cannot be reached, does not answer within 5 s, or registered
/// without `api_url`; `host_error`: it answered 5xx or not JSON.
#[derive(ToResponse)]
pub struct HostFailed(pub ErrorBody);

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

/// Locks `mutex`, whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
