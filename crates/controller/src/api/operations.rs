//! Lifecycle operations, run by the instance's host agent and reached through the controller.
//!
//! `POST /v1/instances/{uuid}/operations {"action": "<event>"}` finds the instance's host and
//! starts the operation there (`POST /v1/instances/{uuid}/actions` on the agent); the answer's
//! id is `<host>:<host's operation id>`, which `GET /v1/operations/{id}` splits to ask that
//! host for the record. The controller keeps no copy: the host agent runs the operation and
//! remembers it. Host names cannot contain `:`, so the split is unambiguous.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error_chain;
use super::{read_body, ApiError, ApiState, MAX_BODY};
use crate::hostlink::HostLinkError;
use crate::store::HostRecord;

pub(super) async fn start(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, MAX_BODY).await?;
    let action = parse_action(&bytes)?;
    let found = state.store({
        let uuid = uuid.clone();
        move |store| store.instance(&uuid)
    });
    let instance = found
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No instance with uuid {uuid:?}")))?;
    let host = host_of(&state, &instance.host).await?;
    let started = state
        .hostlink()
        .start_action(&host, &uuid, &action, None)
        .await;
    let id = started.map_err(host_error)?;
    tracing::info!(instance = %uuid, host = %host.name, %action, operation = %id,
        "Operation started on the host");
    let answer = json!({
        "id": format!("{}:{id}", host.name),
        "host": host.name,
        "instance": uuid,
        "action": action,
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some((name, host_id)) = id.rsplit_once(':') else {
        return Err(ApiError::not_found(format!(
            "No operation {id:?}; operation ids look like <host>:<id>"
        )));
    };
    let host = host_of(&state, name).await?;
    let mut record = state
        .hostlink()
        .operation(&host, host_id)
        .await
        .map_err(host_error)?;
    if let Some(object) = record.as_object_mut() {
        object.insert("id".into(), json!(id));
        object.insert("host".into(), json!(host.name));
    }
    Ok(Json(record))
}

/// Reads `{"action": "<event>"}`; the host agent judges the event's name.
fn parse_action(body: &[u8]) -> Result<String, ApiError> {
    let shape = "The body must be {\"action\": \"<event>\"}";
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{shape}: {e}")))?;
    match value
        .as_object()
        .filter(|o| o.len() == 1)
        .map(|o| o.get("action"))
    {
        Some(Some(Value::String(action))) if !action.is_empty() => Ok(action.clone()),
        _ => Err(ApiError::bad_request(format!("{shape}, not {value}"))),
    }
}

async fn host_of(state: &ApiState, name: &str) -> Result<HostRecord, ApiError> {
    let found = state.store({
        let name = name.to_owned();
        move |store| store.host(&name)
    });
    found
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No host named {name:?}")))
}

/// 502 `host_unreachable` when the host cannot be reached, 502 `host_error` when it fails
/// or answers nonsense; its own 4xx passed through.
fn host_error(error: HostLinkError) -> ApiError {
    match error {
        HostLinkError::Refused {
            status, message, ..
        } if status.is_client_error() => {
            let code = match status {
                StatusCode::BAD_REQUEST => "bad_request",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::CONFLICT => "conflict",
                _ => "host_refused",
            };
            ApiError::new(status, code, message)
        }
        other if other.is_unreachable() => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "host_unreachable",
            error_chain(&other),
        ),
        other => ApiError::new(StatusCode::BAD_GATEWAY, "host_error", error_chain(&other)),
    }
}
