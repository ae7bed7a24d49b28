//! Webhooks: every stored event POSTed to every subscriber, at least once, from a persistent
//! outbox.
//!
//! Ingestion enqueues one delivery per (subscription, new event) in the transaction that
//! stores the event ([`crate::store::Store::append_events`]), then wakes the delivery task
//! ([`DeliveryTask`]). The task takes the head of each subscription's queue that is due,
//! oldest first, with at most [`CONCURRENCY`] attempts in flight and one per subscription,
//! so each subscriber receives its events in log order. A 2xx answer marks the delivery done;
//! anything else schedules a retry after a [`Backoff`] delay, forever, until the subscriber
//! accepts or its subscription is deleted. A controller that stops mid-delivery finds the
//! delivery still pending when it starts again and sends it again: subscribers deduplicate
//! with the `Idempotency-Key` header ([`idempotency_key`]). Subscribers may be `http://` or
//! `https://`; an `https://` subscriber must present a certificate that the given CA file, or
//! else the system's roots, vouch for.

pub(crate) mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tether_tls::ClientConfig;
use tokio::sync::Notify;
use tokio::task::{Id, JoinHandle, JoinSet};
use tokio::time::Instant;

pub use send::{body, idempotency_key, signature, ATTEMPT_TIMEOUT, PAYLOAD_VERSION};

use crate::clock::unix_ms;
use crate::store::{Delivery, Store, StoreError};
use crate::throttle::Throttle;
use send::HttpClient;

/// Most delivery attempts in flight at once.
pub const CONCURRENCY: usize = 8;

/// Shortest time between two warnings about one subscription's failures.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Longest sleep between two looks at the outbox, should the wall clock jump.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long to wait before trying again after the store failed.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Retry delays: `base` after the first failure, doubling up to `max`, each less a random
/// part of up to a quarter so that retries to one subscriber spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s doubling up to 5 min.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after `attempts` failed attempts (from 1), with `jitter` in `0.0..1.0`
    /// taking up to a quarter off.
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1 << doublings).min(self.max);
        full.saturating_sub(full.mul_f64(jitter.clamp(0.0, 1.0) / 4.0))
    }
}

/// A subscriber URL is refused: the text says why.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url.parse::<hyper::Uri>().ok();
    let has_host = parsed
        .as_ref()
        .and_then(hyper::Uri::host)
        .is_some_and(|h| !h.is_empty());
    let scheme = url.starts_with("http://") || url.starts_with("https://");
    if !scheme || !has_host || url.len() > 2048 {
        return Err(format!(
            "{url:?} is not an http:// or https:// URL with a host (at most 2048 characters)"
        ));
    }
    Ok(())
}

/// A signing secret is refused: the text says why.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let visible = secret.chars().all(|c| c.is_ascii_graphic());
    if !(16..=256).contains(&secret.len()) || !visible {
        return Err(format!(
            "must be 16 to 256 visible ASCII characters without spaces ({} given)",
            secret.len()
        ));
    }
    Ok(())
}

/// The running delivery task; dropping it stops the task.
pub struct DeliveryTask(JoinHandle<()>);

impl DeliveryTask {
    /// Starts delivering from `store`'s outbox, looking again whenever `wake` is notified;
    /// `https://` subscribers are verified against `ca`, or else the system's roots.
    pub fn spawn(
        store: Arc<dyn Store>,
        wake: Arc<Notify>,
        backoff: Backoff,
        ca: Option<Arc<ClientConfig>>,
    ) -> DeliveryTask {
        DeliveryTask(tokio::spawn(deliver(store, wake, backoff, ca)))
    }
}

impl Drop for DeliveryTask {
    fn drop(&mut self) {
        // Attempts in flight are dropped with the task; their deliveries stay pending.
        self.0.abort();
    }
}

/// What one attempt came to.
struct Outcome {
    webhook_id: u64,
    url: String,
    attempts: u32,
    error: Option<String>,
}

/// The delivery loop's state.
struct Deliverer {
    store: Arc<dyn Store>,
    /// Made at the first attempt (loading the system's roots costs time and may fail).
    client: Option<HttpClient>,
    ca: Option<Arc<ClientConfig>>,
    backoff: Backoff,
    attempts: JoinSet<Outcome>,
    /// Which subscription each attempt in flight is for.
    running: HashMap<Id, u64>,
    warnings: Warnings,
}

async fn deliver(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    backoff: Backoff,
    ca: Option<Arc<ClientConfig>>,
) {
    let mut deliverer = Deliverer {
        store,
        client: None,
        ca,
        backoff,
        attempts: JoinSet::new(),
        running: HashMap::new(),
        warnings: Warnings::default(),
    };
    loop {
        let next_at_ms = deliverer.start_due().await;
        let timer = async {
            match next_at_ms {
                Some(at) => tokio::time::sleep(until(at)).await,
                None => std::future::pending().await,
            }
        };
        let in_flight = !deliverer.attempts.is_empty();
        tokio::select! {
            () = wake.notified() => {}
            Some(done) = deliverer.attempts.join_next_with_id(), if in_flight => {
                deliverer.finished(done);
            }
            () = timer => {}
        }
    }
}

impl Deliverer {
    /// Starts an attempt for each due head whose subscription has none in flight, up to
    /// [`CONCURRENCY`] in all; returns when to look again (`None`: when woken).
    async fn start_due(&mut self) -> Option<i64> {
        let free = CONCURRENCY.saturating_sub(self.attempts.len());
        if free == 0 {
            return None;
        }
        let (ready, next_at_ms) = match due(&self.store, free + self.attempts.len()).await {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(error = %error, "Cannot read the webhook outbox");
                return Some(unix_ms(SystemTime::now() + STORE_RETRY));
            }
        };
        let mut started = 0;
        for delivery in ready {
            let webhook = delivery.webhook_id;
            if started == free || self.running.values().any(|w| *w == webhook) {
                continue;
            }
            let client = self
                .client
                .get_or_insert_with(|| send::client(self.ca.clone()))
                .clone();
            let job = attempt(self.store.clone(), client, delivery, self.backoff);
            self.running.insert(self.attempts.spawn(job).id(), webhook);
            started += 1;
        }
        next_at_ms
    }

    /// Forgets a finished attempt and warns about a failure.
    fn finished(&mut self, done: Result<(Id, Outcome), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        self.running.remove(&id);
        if let Ok((_, outcome)) = done {
            self.warnings.note(&outcome);
        }
    }
}

/// The due heads (at most `limit`) and when the next one is due.
async fn due(
    store: &Arc<dyn Store>,
    limit: usize,
) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
    let store = store.clone();
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    let now_ms = unix_ms(SystemTime::now());
    let found = tokio::task::spawn_blocking(move || store.due_deliveries(now_ms, limit));
    let due = found.await.map_err(StoreError::Task)??;
    Ok((due.ready, due.next_at_ms))
}

/// How long from now until `at_ms` (wall clock), at most [`MAX_SLEEP`].
fn until(at_ms: i64) -> Duration {
    let wait = at_ms.saturating_sub(unix_ms(SystemTime::now()));
    Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(MAX_SLEEP)
}

/// Sends `delivery` once and records the result.
async fn attempt(
    store: Arc<dyn Store>,
    client: HttpClient,
    delivery: Delivery,
    backoff: Backoff,
) -> Outcome {
    let result = send::attempt(&client, &delivery).await;
    let attempts = delivery.attempts.saturating_add(1);
    let now = SystemTime::now();
    let id = delivery.id;
    let error = result.err();
    let recorded = {
        let error = error.clone();
        tokio::task::spawn_blocking(move || match error {
            None => store.mark_delivered(id, unix_ms(now)),
            Some(error) => {
                let retry_at = now + backoff.delay(attempts, fastrand::f64());
                store.mark_failed(id, &error, unix_ms(retry_at), now)
            }
        })
    };
    match recorded.await.map_err(StoreError::Task) {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => {
            tracing::error!(delivery = id, error = %e, "Cannot record a webhook delivery attempt");
        }
    }
    Outcome {
        webhook_id: delivery.webhook_id,
        url: delivery.url,
        attempts,
        error,
    }
}

/// Failure warnings, at most one per subscription per [`WARN_EVERY`], with a count of the
/// ones held back.
#[derive(Default)]
struct Warnings {
    last: HashMap<u64, Throttle>,
}

impl Warnings {
    fn note(&mut self, outcome: &Outcome) {
        let Some(error) = &outcome.error else {
            return;
        };
        let throttle = self
            .last
            .entry(outcome.webhook_id)
            .or_insert_with(|| Throttle::new(WARN_EVERY));
        let Some(held_back) = throttle.allow(Instant::now()) else {
            return;
        };
        tracing::warn!(
            webhook = outcome.webhook_id,
            url = %outcome.url,
            attempts = outcome.attempts,
            held_back,
            error = %error,
            "A webhook delivery failed; it will be retried"
        );
    }
}

#[cfg(test)]
mod tests;
