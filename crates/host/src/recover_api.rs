//! `POST /v1/instances/{uuid}/recover`: a recovery decided by the controller.
//!
//! Body: `{"action": "reboot" | "stop" | "log", "cause": "heartbeat_lost" | "guest_unhealthy"}`,
//! optionally with `"give_up": "<reason>"` when the controller's policy gave up on the guest
//! (it is then recorded unrecoverable and nothing is done to the VM). The instance's
//! supervisor takes the order and answers at once:
//!
//! | status | body | when |
//! | --- | --- | --- |
//! | 202 | `{"outcome":"started"}` | the action was handed to the hypervisor |
//! | 200 | `{"outcome":"given_up"}` | the guest is recorded unrecoverable |
//! | 409 | error `stale` | the guest heartbeats again, or this agent already recovered it |
//! | 409 | error `in_progress` | a recovery is running |
//! | 409 | error `refused` | this agent's own recovery limit is reached |
//! | 409 | error `reporting_disabled` | reporting is off for the guest or the host |
//! | 404 | error `not_found` | no such instance |
//! | 503 | error `busy` | the supervisor did not answer within 5 s |

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tether_hypervisor::Action;
use tokio::sync::oneshot;

use crate::api::{error, not_found, ApiState};
use crate::fsm::Cause;
use crate::supervisor::{Command, Order, OrderOutcome};

/// Longest the API waits for the supervisor's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    action: String,
    cause: String,
    #[serde(default)]
    give_up: Option<String>,
}

/// The order in a request body, or what is wrong with it.
fn parse(body: &[u8]) -> Result<(Action, Cause, Option<String>), String> {
    let shape = r#"{"action": "reboot" | "stop" | "log", "cause": "heartbeat_lost" | "guest_unhealthy"[, "give_up": "<reason>"]}"#;
    let request: RecoverRequest =
        serde_json::from_slice(body).map_err(|e| format!("The body must be {shape}: {e}"))?;
    let action = match request.action.as_str() {
        "reboot" => Action::Reboot,
        "stop" => Action::Stop,
        "log" => Action::Log,
        other => {
            return Err(format!(
                "Unknown action {other:?}; one of: reboot, stop, log"
            ))
        }
    };
    let cause = match request.cause.as_str() {
        "heartbeat_lost" => Cause::Lost,
        "guest_unhealthy" => Cause::Unhealthy,
        other => {
            return Err(format!(
                "Unknown cause {other:?}; one of: heartbeat_lost, guest_unhealthy"
            ))
        }
    };
    if let Some(reason) = &request.give_up {
        if reason.is_empty() || reason.len() > 512 {
            return Err("give_up must be a reason of 1 to 512 bytes".to_owned());
        }
    }
    Ok((action, cause, request.give_up))
}

pub(crate) async fn recover(
    State(state): State<ApiState>,
    UrlPath(uuid): UrlPath<String>,
    body: Bytes,
) -> Response {
    let (action, cause, give_up) = match parse(&body) {
        Ok(order) => order,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    let Some(commands) = state.operations.commands(&uuid) else {
        return not_found(&format!("No instance with uuid {uuid:?} on this host"));
    };
    let (answer, outcome) = oneshot::channel();
    let order = Order {
        action,
        cause,
        give_up,
        answer,
    };
    let busy = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "The instance's supervisor did not take the order; try again",
        )
    };
    if commands
        .try_send(Command::Recover(Box::new(order)))
        .is_err()
    {
        return busy();
    }
    match tokio::time::timeout(ANSWER_WITHIN, outcome).await {
        Ok(Ok(outcome)) => answer_for(outcome),
        _ => busy(),
    }
}

fn answer_for(outcome: OrderOutcome) -> Response {
    let conflict = |code, message: &str| error(StatusCode::CONFLICT, code, message);
    match outcome {
        OrderOutcome::Started => {
            (StatusCode::ACCEPTED, Json(json!({"outcome": "started"}))).into_response()
        }
        OrderOutcome::GivenUp => Json(json!({"outcome": "given_up"})).into_response(),
        OrderOutcome::Stale(why) => conflict("stale", &format!("Nothing done: {why}")),
        OrderOutcome::InProgress => conflict("in_progress", "A recovery is already running"),
        OrderOutcome::Refused(why) => conflict("refused", &format!("Refused: {why}")),
        OrderOutcome::ReportingOff => conflict(
            "reporting_disabled",
            "Reporting is disabled for this instance or host",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_parsed_strictly() {
        let ok = parse(br#"{"action":"reboot","cause":"heartbeat_lost"}"#).unwrap();
        assert_eq!(ok, (Action::Reboot, Cause::Lost, None));
        let give_up =
            parse(br#"{"action":"stop","cause":"guest_unhealthy","give_up":"3 within 1 h"}"#)
                .unwrap();
        assert_eq!(give_up.2.as_deref(), Some("3 within 1 h"));
        for bad in [
            &br#"{"action":"pause","cause":"heartbeat_lost"}"#[..],
            br#"{"action":"reboot","cause":"boredom"}"#,
            br#"{"action":"reboot"}"#,
            br#"{"action":"reboot","cause":"heartbeat_lost","extra":1}"#,
            br#"{"action":"reboot","cause":"heartbeat_lost","give_up":""}"#,
            b"not json",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
