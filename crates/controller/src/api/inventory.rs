//! Hosts and instances: listing, lookup, reporting flags and the corrective action override.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{read_body, ApiError, ApiState, ErrorBody, MAX_BODY};
use crate::hostlink::resync;
use crate::query::instance_filter;
use crate::store::{CorrectiveAction, HostRecord, InstanceRecord};

type Answer<T> = Result<Json<T>, ApiError>;

/// A host after its reporting switch changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostSwitched {
    /// The host, with the stored switch.
    #[serde(flatten)]
    pub host: HostRecord,
    /// Whether the host took the switch now; if not, it gets it when it registers next.
    pub applied: bool,
}

/// An instance after its reporting switch changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceSwitched {
    /// The instance, with the stored switch.
    #[serde(flatten)]
    pub instance: InstanceRecord,
    /// Whether its host took the switch now; if not, it gets it when it registers next.
    pub applied: bool,
}

/// The body of `PUT /v1/instances/{uuid}/corrective-action`: exactly this one key.
#[derive(Debug, ToSchema)]
pub struct CorrectiveActionBody {
    /// The action that replaces the guest's own; `null` clears the override.
    #[schema(required = true)]
    pub action: Option<CorrectiveAction>,
}

/// Lists every host, by name.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "list_hosts",
    tag = "hosts",
    responses(
        (status = 200, description = "Every host, by name", body = Vec<HostRecord>),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn hosts(State(state): State<ApiState>) -> Answer<Vec<HostRecord>> {
    Ok(Json(state.store(|store| store.hosts()).await?))
}

/// Shows one host.
#[utoipa::path(
    get,
    path = "/v1/hosts/{name}",
    operation_id = "get_host",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name, as it registered")),
    responses(
        (status = 200, description = "The host", body = HostRecord),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn host(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Answer<HostRecord> {
    let found = state.store({
        let name = name.clone();
        move |store| store.host(&name)
    });
    found.await?.map(Json).ok_or_else(|| no_host(&name))
}

/// Turns the host's failure reporting on, and sends the switch to the host.
#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/enable",
    operation_id = "enable_host",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name, as it registered")),
    responses(
        (status = 200, description = "Stored; `applied` says whether the host took it",
            body = HostSwitched),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn enable_host(
    state: State<ApiState>,
    name: Path<String>,
) -> Answer<HostSwitched> {
    host_reporting(state, name, true).await
}

/// Turns the host's failure reporting off, and sends the switch to the host.
#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/disable",
    operation_id = "disable_host",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name, as it registered")),
    responses(
        (status = 200, description = "Stored; `applied` says whether the host took it",
            body = HostSwitched),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn disable_host(
    state: State<ApiState>,
    name: Path<String>,
) -> Answer<HostSwitched> {
    host_reporting(state, name, false).await
}

/// Stores the host's switch, then sends it to the host: the answer is the host record with
/// `applied` (whether the host took it now; if not, it gets it when it registers next).
async fn host_reporting(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    enabled: bool,
) -> Answer<HostSwitched> {
    let changed = state.store({
        let name = name.clone();
        move |store| store.set_host_reporting(&name, enabled)
    });
    let host = changed.await?.ok_or_else(|| no_host(&name))?;
    tracing::info!(host = %host.name, enabled, "Host reporting changed");
    let applied = resync::push_host(&state, &host).await;
    Ok(Json(HostSwitched { host, applied }))
}

/// Lists instances, by uuid.
#[utoipa::path(
    get,
    path = "/v1/instances",
    operation_id = "list_instances",
    tag = "instances",
    params(
        ("host" = Option<String>, Query, description = "Only those on this host"),
        ("state" = Option<String>, Query,
            description = "Only those in this state (`heartbeating`, `lost`, `gone`, …)"),
    ),
    responses(
        (status = 200, description = "The matching instances, by uuid",
            body = Vec<InstanceRecord>),
        (status = 400, description = "`bad_request`: an unknown, repeated or invalid query \
            parameter (the message names it)", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn instances(
    State(state): State<ApiState>,
    uri: Uri,
) -> Answer<Vec<InstanceRecord>> {
    let filter = instance_filter(uri.query().unwrap_or(""))?;
    Ok(Json(
        state.store(move |store| store.instances(&filter)).await?,
    ))
}

/// Shows one instance.
#[utoipa::path(
    get,
    path = "/v1/instances/{uuid}",
    operation_id = "get_instance",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    responses(
        (status = 200, description = "The instance", body = InstanceRecord),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn instance(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
) -> Answer<InstanceRecord> {
    let found = state.store({
        let uuid = uuid.clone();
        move |store| store.instance(&uuid)
    });
    found.await?.map(Json).ok_or_else(|| no_instance(&uuid))
}

/// Turns the instance's heartbeat failure reporting on, and sends the switch to its host.
#[utoipa::path(
    post,
    path = "/v1/instances/{uuid}/enable",
    operation_id = "enable_instance",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    responses(
        (status = 200, description = "Stored; `applied` says whether the host took it",
            body = InstanceSwitched),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn enable_instance(
    state: State<ApiState>,
    uuid: Path<String>,
) -> Answer<InstanceSwitched> {
    instance_reporting(state, uuid, true).await
}

/// Turns the instance's heartbeat failure reporting off, and sends the switch to its host.
#[utoipa::path(
    post,
    path = "/v1/instances/{uuid}/disable",
    operation_id = "disable_instance",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    responses(
        (status = 200, description = "Stored; `applied` says whether the host took it",
            body = InstanceSwitched),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn disable_instance(
    state: State<ApiState>,
    uuid: Path<String>,
) -> Answer<InstanceSwitched> {
    instance_reporting(state, uuid, false).await
}

/// Stores the instance's switch and sends it to its host, answering like [`host_reporting`].
async fn instance_reporting(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    enabled: bool,
) -> Answer<InstanceSwitched> {
    let instance = set_instance_reporting(&state, &uuid, enabled)
        .await?
        .ok_or_else(|| no_instance(&uuid))?;
    let applied = resync::push_instance(&state, &instance).await;
    Ok(Json(InstanceSwitched { instance, applied }))
}

/// Stores an instance's switch; `None` for an unknown instance.
pub(crate) async fn set_instance_reporting(
    state: &ApiState,
    uuid: &str,
    enabled: bool,
) -> Result<Option<InstanceRecord>, ApiError> {
    let now = SystemTime::now();
    let changed = state.store({
        let uuid = uuid.to_owned();
        move |store| store.set_instance_reporting(&uuid, enabled, now)
    });
    let instance = changed.await?;
    if let Some(instance) = &instance {
        tracing::info!(instance = %instance.uuid, enabled, "Instance reporting changed");
    }
    Ok(instance)
}

/// Sets or clears an override of the corrective action the guest asked for.
#[utoipa::path(
    put,
    path = "/v1/instances/{uuid}/corrective-action",
    operation_id = "set_corrective_action",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    request_body = CorrectiveActionBody,
    responses(
        (status = 200, description = "The instance with its new `corrective_override`",
            body = InstanceRecord),
        (status = 400, description = "`bad_request`: the body is not \
            `{\"action\": \"reboot\" | \"stop\" | \"log\" | null}`", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 413, response = super::TooLarge),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn corrective_action(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    body: Body,
) -> Answer<InstanceRecord> {
    let bytes = read_body(body, MAX_BODY).await?;
    let action = parse_override(&bytes)?;
    let now = SystemTime::now();
    let changed = state.store({
        let uuid = uuid.clone();
        move |store| store.set_corrective_override(&uuid, action, now)
    });
    let instance = changed.await?.ok_or_else(|| no_instance(&uuid))?;
    tracing::info!(instance = %instance.uuid, action = ?action, "Corrective action override set");
    Ok(Json(instance))
}

/// Reads `{"action": "reboot" | "stop" | "log" | null}`; `null` clears the override.
fn parse_override(body: &[u8]) -> Result<Option<CorrectiveAction>, ApiError> {
    let shape = "The body must be {\"action\": \"reboot\" | \"stop\" | \"log\" | null}";
    parse_one_key(body, "action", shape, true)
}

/// Reads a body of exactly one `key` whose value is a name `T` parses, or `null` when
/// `nullable` (answered as `None`); `shape` opens every error message.
pub(super) fn parse_one_key<T: std::str::FromStr<Err = ()>>(
    body: &[u8],
    key: &str,
    shape: &str,
    nullable: bool,
) -> Result<Option<T>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{shape}: {e}")))?;
    let found = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(key));
    match found {
        Some(Value::Null) if nullable => Ok(None),
        Some(Value::String(name)) => match name.parse() {
            Ok(parsed) => Ok(Some(parsed)),
            Err(()) => Err(ApiError::bad_request(format!("{shape}, not {name:?}"))),
        },
        _ => Err(ApiError::bad_request(format!("{shape}, not {value}"))),
    }
}

pub(super) fn no_host(name: &str) -> ApiError {
    ApiError::not_found(format!("No host named {name:?}"))
}

pub(super) fn no_instance(uuid: &str) -> ApiError {
    ApiError::not_found(format!("No instance with uuid {uuid:?}"))
}
