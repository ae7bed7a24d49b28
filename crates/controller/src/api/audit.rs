//! `GET /v1/audit`: what the last state audit round found and repaired ([`crate::audit`]).

use axum::extract::State;
use axum::Json;

use super::ApiState;
use crate::audit::AuditReport;

/// Shows the last audit round: when it ran, the hosts it checked, those it could not reach
/// and every repair it made.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "get_audit",
    tag = "audit",
    responses(
        (status = 200, description = "The last round (`last_run` is null before the first)",
            body = AuditReport),
        (status = 401, response = super::Unauthorized),
    ),
)]
pub(super) async fn last(State(state): State<ApiState>) -> Json<AuditReport> {
    Json(state.audit())
}
