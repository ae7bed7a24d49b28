//! Who recovers failed guests (per host, per instance) and the decisions taken.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::inventory::{no_host, no_instance, parse_one_key};
use super::{read_body, ApiError, ApiState, ErrorBody, MAX_BODY};
use crate::store::{HostRecord, InstanceRecord, RecoveryDecision, RecoveryMode};

type Answer<T> = Result<Json<T>, ApiError>;

/// The most decisions one answer lists (the newest).
const MAX_DECISIONS: u32 = 1000;

/// The body of `PUT …/recovery-mode`: exactly this one key.
#[derive(Debug, ToSchema)]
pub struct RecoveryModeBody {
    /// `builtin` (the controller orders the host) or `vim` (the VIM recovers); on an
    /// instance, `null` makes it follow its host.
    #[schema(required = true)]
    pub mode: Option<RecoveryMode>,
}

/// An instance's recovery decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryLog {
    /// Oldest first; at most the newest 1,000.
    pub recoveries: Vec<RecoveryDecision>,
}

/// Sets who recovers a host's failed guests (instances may override it).
#[utoipa::path(
    put,
    path = "/v1/hosts/{name}/recovery-mode",
    operation_id = "set_host_recovery_mode",
    tag = "hosts",
    params(("name" = String, Path, description = "The host's name, as it registered")),
    request_body = RecoveryModeBody,
    responses(
        (status = 200, description = "The host with its new `recovery_mode`", body = HostRecord),
        (status = 400, description = "`bad_request`: the body is not \
            `{\"mode\": \"builtin\" | \"vim\"}`", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such host", body = ErrorBody),
        (status = 413, response = super::TooLarge),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn host_mode(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Body,
) -> Answer<HostRecord> {
    let bytes = read_body(body, MAX_BODY).await?;
    let Some(mode) = parse_mode(&bytes, false)? else {
        return Err(ApiError::bad_request(
            "A host's mode must be \"builtin\" or \"vim\"",
        ));
    };
    let changed = state.store({
        let name = name.clone();
        move |store| store.set_host_recovery_mode(&name, mode)
    });
    let host = changed.await?.ok_or_else(|| no_host(&name))?;
    tracing::info!(host = %host.name, %mode, "Host recovery mode set");
    Ok(Json(host))
}

/// Sets or clears who recovers one instance when it fails.
#[utoipa::path(
    put,
    path = "/v1/instances/{uuid}/recovery-mode",
    operation_id = "set_instance_recovery_mode",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    request_body = RecoveryModeBody,
    responses(
        (status = 200, description = "The instance with its new `recovery_mode`",
            body = InstanceRecord),
        (status = 400, description = "`bad_request`: the body is not \
            `{\"mode\": \"builtin\" | \"vim\" | null}`", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 413, response = super::TooLarge),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn instance_mode(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
    body: Body,
) -> Answer<InstanceRecord> {
    let bytes = read_body(body, MAX_BODY).await?;
    let mode = parse_mode(&bytes, true)?;
    let now = SystemTime::now();
    let changed = state.store({
        let uuid = uuid.clone();
        move |store| store.set_instance_recovery_mode(&uuid, mode, now)
    });
    let instance = changed.await?.ok_or_else(|| no_instance(&uuid))?;
    tracing::info!(instance = %instance.uuid, mode = ?mode, "Instance recovery mode set");
    Ok(Json(instance))
}

/// Lists the recovery decisions taken for an instance.
#[utoipa::path(
    get,
    path = "/v1/instances/{uuid}/recoveries",
    operation_id = "list_recoveries",
    tag = "instances",
    params(("uuid" = String, Path, description = "The instance's uuid")),
    responses(
        (status = 200, description = "The decisions, oldest first", body = RecoveryLog),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such instance", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn recoveries(
    State(state): State<ApiState>,
    Path(uuid): Path<String>,
) -> Answer<RecoveryLog> {
    let found = state.store({
        let uuid = uuid.clone();
        move |store| {
            let known = store.instance(&uuid)?.is_some();
            Ok(known.then(|| store.recoveries(&uuid, MAX_DECISIONS)))
        }
    });
    let recoveries = found.await?.ok_or_else(|| no_instance(&uuid))??;
    Ok(Json(RecoveryLog { recoveries }))
}

/// Reads `{"mode": "builtin" | "vim" | null}`; `null` only when `nullable`.
fn parse_mode(body: &[u8], nullable: bool) -> Result<Option<RecoveryMode>, ApiError> {
    let shape = if nullable {
        "The body must be {\"mode\": \"builtin\" | \"vim\" | null}"
    } else {
        "The body must be {\"mode\": \"builtin\" | \"vim\"}"
    };
    parse_one_key(body, "mode", shape, nullable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_parsed_strictly() {
        assert_eq!(
            parse_mode(br#"{"mode":"vim"}"#, false).unwrap(),
            Some(RecoveryMode::Vim)
        );
        assert_eq!(parse_mode(br#"{"mode":null}"#, true).unwrap(), None);
        for (bad, nullable) in [
            (&br#"{"mode":null}"#[..], false),
            (br#"{"mode":"manual"}"#, true),
            (br#"{"mode":"vim","x":1}"#, true),
            (br#"{}"#, true),
            (b"[]", true),
            (b"nope", true),
        ] {
            assert!(parse_mode(bad, nullable).is_err());
        }
    }
}
