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

use super::{read_body, ApiError, ApiState, MAX_BODY};
use crate::store::{Store, WebhookRecord, WebhookStatus};
use crate::webhooks::{check_secret, check_url};

type Answer<T> = Result<Json<T>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    secret: String,
}

/// `POST /v1/webhooks {"url": "http://…", "secret": "…"}` → 201 and the subscription.
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

/// `GET /v1/webhooks`: every subscription, by id.
pub(super) async fn list(State(state): State<ApiState>) -> Answer<Vec<WebhookRecord>> {
    Ok(Json(state.store(|store| store.webhooks()).await?))
}

/// `GET /v1/webhooks/{id}`: the subscription with its delivery counts and last error.
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<WebhookStatus> {
    let number = webhook_id(&id)?;
    let found = state.store(move |store| store.webhook(number)).await?;
    found.map(Json).ok_or_else(|| no_webhook(&id))
}

/// `DELETE /v1/webhooks/{id}` → 204; its undelivered events are dropped.
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
