//! Error answers: a status, a stable code and a human message, as JSON.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ingest::BodyError;
use crate::query::QueryError;
use crate::store::StoreError;

/// An error answer: `{"error":{"code":"<code>","message":"<message>"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (`unauthorized`, `bad_request`, `not_found`, `unknown_host`,
    /// `sequence_gap`, `payload_too_large`, `method_not_allowed`, `internal`).
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
    /// For `sequence_gap`: the host's highest stored sequence number, sent beside `error`.
    pub acked_seq: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            acked_seq: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::UnknownHost(host) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_host",
                format!("Host {host:?} has not registered; POST /v1/agents/register first"),
            ),
            StoreError::SequenceGap { acked_seq } => ApiError {
                acked_seq: Some(acked_seq),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "sequence_gap",
                    format!(
                        "The controller has events up to {acked_seq}; send from {} on",
                        acked_seq + 1
                    ),
                )
            },
            other => {
                tracing::error!(error = %chain(&other), "A store call failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "The controller's store failed; see its log",
                )
            }
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> ApiError {
        match error {
            BodyError::Invalid(message) => ApiError::bad_request(message),
            BodyError::TooLarge(message) => ApiError::too_large(message),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> ApiError {
        ApiError::bad_request(error.0)
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What failed.
    pub error: ErrorDetail,
    /// With `sequence_gap` only: the host's highest stored event sequence number; the agent
    /// resends from the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64)]
    pub acked_seq: Option<u64>,
}

/// The code and message of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `unauthorized`, `bad_request`, `not_found`, `unknown_host`,
    /// `sequence_gap`, `payload_too_large`, `method_not_allowed`, `internal`; for operations
    /// also `conflict`, `host_refused`, `host_unreachable`, `host_error`.
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong, for a human; it names the input at fault.
    #[schema(example = "No host named \"compute-9\"")]
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
            acked_seq: self.acked_seq,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Response {
        error.into_response()
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
