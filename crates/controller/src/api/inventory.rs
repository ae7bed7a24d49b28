//! Hosts and instances: listing, lookup, reporting flags and the corrective action override.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::Json;
use serde_json::{Map, Value};

use super::{read_body, ApiError, ApiState, MAX_BODY};
use crate::hostlink::resync;
use crate::query::instance_filter;
use crate::store::{CorrectiveAction, HostRecord, InstanceRecord};

type Answer<T> = Result<Json<T>, ApiError>;

pub(super) async fn hosts(State(state): State<ApiState>) -> Answer<Vec<HostRecord>> {
    Ok(Json(state.store(|store| store.hosts()).await?))
}

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

pub(super) async fn enable_host(state: State<ApiState>, name: Path<String>) -> Answer<Value> {
    host_reporting(state, name, true).await
}

pub(super) async fn disable_host(state: State<ApiState>, name: Path<String>) -> Answer<Value> {
    host_reporting(state, name, false).await
}

/// Stores the host's switch, then sends it to the host: the answer is the host record with
/// `applied` (whether the host took it now; if not, it gets it when it registers next).
async fn host_reporting(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    enabled: bool,
) -> Answer<Value> {
    let changed = state.store({
        let name = name.clone();
        move |store| store.set_host_reporting(&name, enabled)
    });
    let host = changed.await?.ok_or_else(|| no_host(&name))?;
    tracing::info!(host = %host.name, enabled, "Host reporting changed");
    let applied = resync::push_host(&state, &host).await;
    Ok(Json(with_applied(&host, applied)))
}

pub(super) async fn instances(
    State(state): State<ApiState>,
    uri: Uri,
) -> Answer<Vec<InstanceRecord>> {
    let filter = instance_filter(uri.query().unwrap_or(""))?;
    Ok(Json(
        state.store(move |store| store.instances(&filter)).await?,
    ))
}

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

pub(super) async fn enable_instance(state: State<ApiState>, uuid: Path<String>) -> Answer<Value> {
    instance_reporting(state, uuid, true).await
}

pub(super) async fn disable_instance(state: State<ApiState>, uuid: Path<String>) -> Answer<Value> {
    instance_reporting(state, uuid, false).await
}

/// Stores the instance's switch and sends it to its host, answering like [`host_reporting`].
async fn instance_reporting(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    enabled: bool,
) -> Answer<Value> {
    let instance = set_instance_reporting(&state, &uuid, enabled)
        .await?
        .ok_or_else(|| no_instance(&uuid))?;
    let applied = resync::push_instance(&state, &instance).await;
    Ok(Json(with_applied(&instance, applied)))
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

/// `record` as JSON with `"applied": applied` added.
fn with_applied(record: &impl serde::Serialize, applied: bool) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Some(object) = value.as_object_mut() {
        object.insert("applied".into(), Value::Bool(applied));
    }
    value
}

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
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{shape}: {e}")))?;
    let action = value
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("action"));
    match action {
        Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => match name.parse() {
            Ok(action) => Ok(Some(action)),
            Err(()) => Err(ApiError::bad_request(format!("{shape}, not {name:?}"))),
        },
        _ => Err(ApiError::bad_request(format!("{shape}, not {value}"))),
    }
}

fn no_host(name: &str) -> ApiError {
    ApiError::not_found(format!("No host named {name:?}"))
}

fn no_instance(uuid: &str) -> ApiError {
    ApiError::not_found(format!("No instance with uuid {uuid:?}"))
}
