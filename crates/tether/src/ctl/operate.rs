//! Lifecycle operations through the controller, followed live: each step of the guest's vote,
//! notification and the action is printed as the host agent records it.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::{segment, ControllerClient};

/// How often the operation is read back while it runs.
const POLL: Duration = Duration::from_millis(250);
/// How long an operation is followed before giving up (the longest notice times plus a reboot).
const PATIENCE: Duration = Duration::from_secs(900);

/// An operation that ended without being done: the guest vetoed it (exit status 5) or it
/// failed (1).
#[derive(Debug, thiserror::Error)]
pub enum NotDone {
    /// The guest rejected the vote.
    #[error("The guest rejected {action}: {reason}")]
    Rejected {
        /// The operation's action.
        action: String,
        /// The guest's words.
        reason: String,
    },
    /// The host agent could not carry it out.
    #[error("{action} failed: {reason}")]
    Failed {
        /// The operation's action.
        action: String,
        /// Why.
        reason: String,
    },
}

/// Starts `action` on `uuid` and, unless `no_wait`, prints its steps until it ends.
pub async fn operate(
    client: &ControllerClient,
    uuid: &str,
    action: &str,
    no_wait: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let path = format!("/v1/instances/{}/operations", segment(uuid));
    let started = client.post(&path, Some(&json!({"action": action}))).await?;
    let Some(id) = started["id"].as_str().map(str::to_owned) else {
        bail!("The controller started the operation without giving its id: {started}");
    };
    if no_wait {
        if json_out {
            println!("{started}");
        } else {
            println!("operation {id} started");
        }
        return Ok(());
    }
    if !json_out {
        println!("operation {id}: {action} on {uuid}");
    }
    let record = follow(client, &id, json_out).await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
    }
    outcome(&record)
}

/// Reads the operation until it ends, printing each new step.
async fn follow(client: &ControllerClient, id: &str, quiet: bool) -> anyhow::Result<Value> {
    let path = format!("/v1/operations/{}", segment(id));
    let mut shown = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let record = client.get(&path).await?;
        let steps = record["steps"].as_array().cloned().unwrap_or_default();
        for step in steps.iter().skip(shown) {
            if !quiet {
                println!("  {}", step_line(step));
            }
        }
        shown = shown.max(steps.len());
        if is_final(&record) {
            return Ok(record);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Operation {id} still {} after {} s",
                record["state"],
                PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn is_final(record: &Value) -> bool {
    matches!(
        record["state"].as_str(),
        Some("done" | "rejected" | "failed")
    )
}

/// `vote      accept     12 ms  ready for reboot`.
fn step_line(step: &Value) -> String {
    let text = |key: &str| step[key].as_str().unwrap_or("-").to_owned();
    let line = format!(
        "{:<12} {:<9} {:>7} ms  {}",
        text("step"),
        text("outcome"),
        step["took_ms"].as_u64().unwrap_or(0),
        step["detail"].as_str().unwrap_or("")
    );
    line.trim_end().to_owned()
}

/// Ok when done; the reason as an error otherwise.
fn outcome(record: &Value) -> anyhow::Result<()> {
    let action = record["action"].as_str().unwrap_or("?").to_owned();
    let reason = record["reason"].as_str().unwrap_or("").to_owned();
    match record["state"].as_str() {
        Some("done") => {
            println!("{action}: done");
            Ok(())
        }
        Some("rejected") => Err(NotDone::Rejected { action, reason }.into()),
        _ => Err(NotDone::Failed { action, reason }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_one_line_each() {
        let step = json!({"step": "vote", "outcome": "reject", "took_ms": 12, "detail": "busy"});
        assert_eq!(step_line(&step), "vote         reject         12 ms  busy");
    }

    #[test]
    fn only_done_is_success() {
        assert!(outcome(&json!({"state": "done", "action": "stop"})).is_ok());
        let rejected = outcome(&json!({"state": "rejected", "action": "stop", "reason": "busy"}));
        let error = rejected.unwrap_err();
        assert!(matches!(
            error.downcast_ref::<NotDone>(),
            Some(NotDone::Rejected { .. })
        ));
        assert_eq!(error.to_string(), "The guest rejected stop: busy");
    }
}
