//! `GET /v1/vim`: where the VIM event transmitter ([`crate::vim`]) stands.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::{lock, ApiError, ApiState};
use crate::clock::format_ts;
use crate::store::StoredEvent;
use crate::vim::VimState;

/// The VIM event transmitter's state; only `url` (null) when no VIM is configured.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct VimReport {
    /// The VIM's base URL (`--vim-url`); null when events are not sent to a VIM.
    #[schema(required = true)]
    pub url: Option<String>,
    /// The id of the last event whose PATCHes are done (sent, or refused by the VIM).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false)]
    pub last_event_id: Option<u64>,
    /// How many events are stored after it (0 when the transmitter has caught up).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false)]
    pub behind: Option<u64>,
    /// The latest failed or refused PATCH's error since the controller started; null if
    /// none failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub last_error: Option<Option<String>>,
    /// When it happened (RFC 3339, UTC); null if none failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub last_error_at: Option<Option<String>>,
}

/// Shows the VIM event transmitter: its URL, its position in the event log, how far it is
/// behind and its latest error.
#[utoipa::path(
    get,
    path = "/v1/vim",
    operation_id = "get_vim",
    tag = "vim",
    responses(
        (status = 200, description = "The transmitter (`{\"url\": null}` when no VIM is \
            configured)", body = VimReport),
        (status = 401, response = super::Unauthorized),
        (status = 500, response = super::Internal),
    ),
)]
pub(super) async fn status(State(state): State<ApiState>) -> Result<Json<VimReport>, ApiError> {
    let vim = lock(&state.inner.vim).clone();
    let Some(url) = vim.url else {
        return Ok(Json(VimReport::default()));
    };
    let (last_event_id, behind) = state
        .store(|store| {
            // Before the transmitter's first start, it is about to start at the newest event.
            let cursor = match store.vim_cursor()? {
                Some(cursor) => cursor,
                None => store.last_event_id()?,
            };
            Ok((cursor, store.count_events_after(cursor)?))
        })
        .await?;
    Ok(Json(VimReport {
        url: Some(url),
        last_event_id: Some(last_event_id),
        behind: Some(behind),
        last_error: Some(vim.last_error),
        last_error_at: Some(vim.last_error_at),
    }))
}

impl ApiState {
    /// Every event stored from now on, in id order.
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.events.subscribe()
    }

    /// Records the VIM's base URL (`None`: no VIM), for `GET /v1/vim`.
    pub(crate) fn set_vim_url(&self, url: Option<String>) {
        lock(&self.inner.vim).url = url;
    }

    /// Records a PATCH to the VIM that failed or was refused, for `GET /v1/vim`.
    pub(crate) fn vim_failed(&self, error: &str, at: SystemTime) {
        let mut vim = lock(&self.inner.vim);
        vim.last_error = Some(error.to_owned());
        vim.last_error_at = Some(format_ts(at));
    }
}

/// The transmitter's state before any PATCH: no URL, no error.
pub(super) fn initial() -> std::sync::Mutex<VimState> {
    std::sync::Mutex::new(VimState::default())
}
