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
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error_chain;
use super::{read_body, ApiError, ApiState, ErrorBody, MAX_BODY};
use crate::hostlink::HostLinkError;
use crate::store::HostRecord;

/// The body of `POST /v1/instances/{uuid}/operations`: exactly this one key.
#[derive(Debug, ToSchema)]
pub struct OperationRequest {
    /// The lifecycle event: `stop`, `reboot`, `pause`, `unpause`, `suspend`, `resume`,
    /// `resize_begin`, … (the host agent judges it).
    #[schema(example = "reboot")]
    pub action: String,
}

/// An operation the instance's host agent started.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationStarted {
    /// The operation's id: `<host>:<the host's operation id>`.
    #[schema(example = "compute-0:9f3c0a1b2c3d4e5f")]
    pub id: String,
    /// The host that runs it.
    pub host: String,
    /// The instance's uuid.
    pub instance: String,
    /// The lifecycle event.
    pub action: String,
}

/// An operation as its host agent records it, with the controller's `id` and `host`. The
/// controller passes the host's record through: keys a newer agent adds appear as well.
#[derive(Debug, ToSchema)]
pub struct Operation {
    /// The operation's id: `<host>:<the host's operation id>`.
    pub id: String,
    /// The host that runs it.
    pub host: String,
    /// The instance's uuid.
    pub instance: String,
    /// The lifecycle event.
    pub action: String,
    /// `vote` or `notify` when only that step runs; absent for the whole sequence.
    #[schema(required = false)]
    pub only: String,
    /// Where it stands: `voting`, `notifying`, `acting`, `post_notifying`, `done`,
    /// `rejected`, `failed`.
    pub state: String,
    /// The guest's words for `rejected`, the error for `failed`; else `null`.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Every step so far, in order.
    pub steps: Vec<OperationStep>,
}

/// One step of an operation.
#[derive(Debug, ToSchema)]
pub struct OperationStep {
    /// `vote`, `notify`, `act`, `wait_guest` or `post_notify`.
    pub step: String,
    /// The lifecycle event of the step.
    pub event: String,
    /// When the step started, in milliseconds after the operation started.
    pub started_ms: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// The guest's answer (`accept`, `reject`, `complete`, `timeout`, `error`), `timeout`,
    /// `skipped`, or `done` / `failed` for the action.
    pub outcome: String,
    /// The guest's reason, the error, or why the step was skipped; absent when empty.
    #[schema(required = false)]
    pub detail: String,
}

/// Starts a lifecycle operation on the instance's host agent: vote, notifications, action.
#[utoipa::path(
    post,
    path = "/v1/instances/{uuid}/operations",
    operation_id = "start_operation",
    tag = "operations",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    request_body = OperationRequest,
    responses(
        (status = 202, description = "Started on the host", body = OperationStarted),
        (status = 400, description = "`bad_request`: the body is not `{\"action\": \"<event>\"}`, \
            or the host does not know the event", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance or host (the host's 404 is \
            passed through)", body = ErrorBody),
        (status = 409, description = "`conflict`: the host runs another operation on the \
            instance", body = ErrorBody),
        (status = 413, response = super::TooLarge),
        (status = "4XX", description = "`host_refused`: the host refused with another 4xx \
            status, passed through", body = ErrorBody),
        (status = 500, response = super::Internal),
        (status = 502, response = super::HostFailed),
    ),
)]
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
    let answer = OperationStarted {
        id: format!("{}:{id}", host.name),
        host: host.name,
        instance: uuid,
        action,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Shows an operation, as its host agent records it.
#[utoipa::path(
    get,
    path = "/v1/operations/{id}",
    operation_id = "get_operation",
    tag = "operations",
    params(("id" = String, Path, description = "`<host>:<the host's operation id>`")),
    responses(
        (status = 200, description = "The host's record of the operation", body = Operation),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: a malformed id, no such host, or the host \
            does not know the operation", body = ErrorBody),
        (status = "4XX", description = "`bad_request`, `conflict` or `host_refused`: another \
            refusal of the host, passed through", body = ErrorBody),
        (status = 500, response = super::Internal),
        (status = 502, response = super::HostFailed),
    ),
)]
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
