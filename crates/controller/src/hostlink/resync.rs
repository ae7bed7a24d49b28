//! Pushing the stored reporting switches to hosts: when an operator changes one, and again
//! after every registration, so a host that missed a change converges.
//!
//! After a registration the host's switch is always pushed (the registration does not carry
//! it, and an agent that restarted has it on again), and each instance's switch is pushed
//! when it differs from the `reporting_enabled` the host reported for it (a report without
//! the field counts as on, an agent's starting value).

use std::collections::HashMap;

use serde::Deserialize;

use super::HostLinkError;
use crate::api::ApiState;
use crate::store::{HostRecord, InstanceFilter, InstanceRecord, GONE};

#[derive(Deserialize)]
struct Reported {
    #[serde(default)]
    instances: Vec<ReportedInstance>,
}

#[derive(Deserialize)]
struct ReportedInstance {
    uuid: String,
    #[serde(default)]
    reporting_enabled: Option<bool>,
}

/// The `reporting_enabled` of each instance in a registration body (already validated);
/// instances without the field are left out.
pub fn reported_flags(body: &[u8]) -> HashMap<String, bool> {
    let Ok(reported) = serde_json::from_slice::<Reported>(body) else {
        return HashMap::new();
    };
    reported
        .instances
        .into_iter()
        .filter_map(|i| Some((i.uuid, i.reporting_enabled?)))
        .collect()
}

/// Pushes the stored switches of `host` and its instances after it registered; logs what
/// could not be applied.
pub async fn after_register(state: ApiState, host: String, reported: HashMap<String, bool>) {
    let name = host.clone();
    let stored = state
        .store(move |store| {
            let filter = InstanceFilter {
                host: Some(name.clone()),
                state: None,
            };
            Ok((store.host(&name)?, store.instances(&filter)?))
        })
        .await;
    let (record, instances) = match stored {
        Ok((Some(record), instances)) => (record, instances),
        Ok((None, _)) => return,
        Err(e) => {
            tracing::warn!(%host, error = %e, "Cannot read the host's switches to push them");
            return;
        }
    };
    if record.api_url.is_none() {
        return;
    }
    if !push_host(&state, &record).await {
        return;
    }
    for instance in instances.iter().filter(|i| i.state != GONE) {
        let on_host = reported.get(&instance.uuid).copied().unwrap_or(true);
        if on_host != instance.reporting_enabled {
            push_instance_to(&state, &record, instance).await;
        }
    }
}

/// Sends the host's stored switch to it; whether the host took it.
pub async fn push_host(state: &ApiState, host: &HostRecord) -> bool {
    let sent = state
        .hostlink()
        .set_host_reporting(host, host.reporting_enabled)
        .await;
    logged(sent, &host.name, None, host.reporting_enabled)
}

/// Sends an instance's stored switch to its host; whether the host took it.
pub async fn push_instance(state: &ApiState, instance: &InstanceRecord) -> bool {
    let name = instance.host.clone();
    match state.store(move |store| store.host(&name)).await {
        Ok(Some(host)) => push_instance_to(state, &host, instance).await,
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(host = %instance.host, error = %e, "Cannot read the host record");
            false
        }
    }
}

async fn push_instance_to(state: &ApiState, host: &HostRecord, instance: &InstanceRecord) -> bool {
    let enabled = instance.reporting_enabled;
    let sent = state
        .hostlink()
        .set_instance_reporting(host, &instance.uuid, enabled)
        .await;
    logged(sent, &host.name, Some(&instance.uuid), enabled)
}

fn logged(
    sent: Result<(), HostLinkError>,
    host: &str,
    instance: Option<&str>,
    enabled: bool,
) -> bool {
    match sent {
        Ok(()) => {
            tracing::debug!(%host, instance, enabled, "Reporting switch applied on the host");
            true
        }
        Err(e) => {
            let error = crate::api::error_chain(&e);
            tracing::warn!(%host, instance, enabled, %error,
                "Reporting switch not applied on the host; it is pushed again when the host registers");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_flags_keep_only_instances_that_say() {
        let body = br#"{"host":"h","instances":[
            {"uuid":"a","reporting_enabled":false},{"uuid":"b"},{"uuid":"c","reporting_enabled":true}]}"#;
        let flags = reported_flags(body);
        assert_eq!(flags.len(), 2);
        assert_eq!(flags.get("a"), Some(&false));
        assert_eq!(flags.get("c"), Some(&true));
        assert!(reported_flags(b"not json").is_empty());
    }
}
