//! Webhook subscriptions: create, list, inspect and delete.
//!
//! A subscription receives every event stored after it was created (see [`crate::webhooks`]
//! for delivery). Secrets go in and never come out: no answer carries one.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tokio::sync::Notify;
use utoipa::ToSchema;

use super::{read_body, ApiError, ApiState, ErrorBody, MAX_BODY};
use crate::store::{Store, WebhookRecord, WebhookStatus};
use crate::webhooks::{check_secret, check_url};

type Answer<T> = Result<Json<T>, ApiError>;

/// A new subscription; no other keys.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// Where events are POSTed: `http://` or `https://` with a host, at most 2,048 characters.
    #[schema(example = "http://vim.example:8080/tether")]
    url: String,
    /// The HMAC-SHA256 signing key: 16 to 256 visible ASCII characters. Never shown again.
    secret: String,
}

/// Subscribes a URL to every event stored from now on.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    request_body = NewWebhook,
    responses(
        (status = 201, description = "Subscribed", body = WebhookRecord),
        (status = 400, description = "`bad_request`: not `{\"url\", \"secret\"}`, or a bad \
            `url` or `secret` (the message names it)", body = ErrorBody),
        (status = 401, response = super::Unauthorized),
        (status = 413, response = super::TooLarge),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn create(
    State(state): State<ApiState>,
    body: Body,
) -> Result<(StatusCode, Json<WebhookRecord>), ApiError> {
    let bytes = read_body(body, MAX_BODY).await?;
    let new: NewWebhook = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "The body must be {{\"url\": \"http://…\", \"secret\": \"…\"}}: {e}"
        ))
    })?;
    check_url(&new.url).map_err(|e| ApiError::bad_request(format!("url {e}")))?;
    check_secret(&new.secret).map_err(|e| ApiError::bad_request(format!("secret {e}")))?;
    let now = SystemTime::now();
    let webhook = state
        .store(move |store| store.add_webhook(&new.url, &new.secret, now))
        .await?;
    tracing::info!(webhook = webhook.id, url = %webhook.url, "A webhook was subscribed");
    Ok((StatusCode::CREATED, Json(webhook)))
}

/// Lists every subscription, by id.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "Every subscription, by id", body = Vec<WebhookRecord>),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn list(State(state): State<ApiState>) -> Answer<Vec<WebhookRecord>> {
    Ok(Json(state.store(|store| store.webhooks()).await?))
}

/// Shows a subscription with its delivery counts and last error.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    operation_id = "get_webhook",
    tag = "webhooks",
    params(("id" = u64, Path, description = "The subscription's id")),
    responses(
        (status = 200, description = "The subscription and its deliveries", body = WebhookStatus),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such subscription", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<WebhookStatus> {
    let number = webhook_id(&id)?;
    let found = state.store(move |store| store.webhook(number)).await?;
    found.map(Json).ok_or_else(|| no_webhook(&id))
}

/// Deletes a subscription; its undelivered events are dropped.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    params(("id" = u64, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = super::Unauthorized),
        (status = 404, description = "`not_found`: no such subscription", body = ErrorBody),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let number = webhook_id(&id)?;
    if !state
        .store(move |store| store.delete_webhook(number))
        .await?
    {
        return Err(no_webhook(&id));
    }
    tracing::info!(webhook = number, "A webhook was deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn webhook_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| no_webhook(id))
}

fn no_webhook(id: &str) -> ApiError {
    ApiError::not_found(format!("No webhook {id:?}"))
}

impl ApiState {
    /// The store and the signal ingestion gives when it enqueued deliveries, for the
    /// delivery task.
    pub(crate) fn outbox(&self) -> (Arc<dyn Store>, Arc<Notify>) {
        (self.inner.store.clone(), self.inner.outbox.clone())
    }
}
