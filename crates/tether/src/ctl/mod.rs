//! `tether ctl`: the operator's command line for a controller.
//!
//! `tether ctl --controller URL [--token-file FILE] [--ca-file FILE] [--json] <hosts|…> …`
//! prints human tables, or the controller's JSON with `--json` for scripts. Exit status: 0
//! success, 1 the controller could not be reached or refused the request (or an operation
//! failed), 2 bad flags or configuration, 3 no such host or instance, 4 the controller refused
//! the token, 5 the guest vetoed the operation.

mod client;
mod operate;
mod output;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use output::{
    cell, table_rows, Output, AUDIT_COLUMNS, EVENT_COLUMNS, HOST_COLUMNS, INSTANCE_COLUMNS,
    RECOVERY_COLUMNS, VIM_COLUMNS, WEBHOOK_COLUMNS,
};

pub use client::{ApiError, ControllerClient};

/// Flags of `tether ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The controller's URL (`http://host:port` or `https://host:port`).
    #[arg(long, env = "TETHER_CONTROLLER", value_name = "URL")]
    controller: String,
    /// File holding the API token (else the `TETHER_TOKEN` environment variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) that an https:// controller's certificate must be signed by
    /// [default: the system's root certificates].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the controller's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Compute hosts: list, show one, enable or disable their heartbeat reporting.
    Hosts {
        #[command(subcommand)]
        action: Option<HostAction>,
    },
    /// Instances (VMs): list, show one, enable or disable their heartbeat reporting, and
    /// lifecycle operations (`tether ctl instance reboot <uuid>`), followed live.
    #[command(visible_alias = "instance")]
    Instances {
        #[command(subcommand)]
        action: Option<InstanceAction>,
        /// Only the instances of this host.
        #[arg(long)]
        host: Option<String>,
        /// Only the instances in this state (`heartbeating`, `lost`, …).
        #[arg(long)]
        state: Option<String>,
    },
    /// The event log; `--follow` keeps printing new events as they come.
    Events(EventArgs),
    /// Webhook subscriptions: list, add, show one with its delivery counts, delete.
    Webhooks {
        #[command(subcommand)]
        action: Option<WebhookAction>,
    },
    /// What the last state audit found and repaired.
    Audit,
    /// The events sent to a StarlingX VIM (`--vim-url`): its position in the event log,
    /// how far behind it is and its latest error.
    Vim,
}

#[derive(Debug, Subcommand)]
enum WebhookAction {
    /// Subscribe `url` to every event, signed with the secret in `--secret-file`.
    Add {
        /// Where events are POSTed (`http://…`).
        url: String,
        /// File holding the signing secret (16 to 256 visible characters).
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
    },
    /// One subscription with its pending, delivered and failing counts.
    Show { id: String },
    /// Remove a subscription; its pending deliveries are dropped.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum HostAction {
    /// One host.
    Show { name: String },
    /// Report this host's guest failures (the default).
    Enable { name: String },
    /// Stop reporting this host's guest failures.
    Disable { name: String },
    /// Who recovers this host's failed guests: `builtin` (the controller) or `vim`.
    RecoveryMode { name: String, mode: String },
}

#[derive(Debug, Subcommand)]
enum InstanceAction {
    /// One instance.
    Show { uuid: String },
    /// Report this instance's heartbeat failures (the default).
    Enable { uuid: String },
    /// Stop reporting this instance's heartbeat failures.
    Disable { uuid: String },
    /// Override the corrective action the guest asked for (`reboot`, `stop`, `log`), or
    /// `default` to use the guest's own again.
    Action { uuid: String, action: String },
    /// Who recovers this instance when it fails: `builtin`, `vim`, or `host` to follow its
    /// host.
    RecoveryMode { uuid: String, mode: String },
    /// The recovery decisions taken for this instance, oldest first.
    Recoveries { uuid: String },
    /// Stop the VM, after the guest's vote and notice.
    Stop(Target),
    /// Reboot the VM, after the guest's vote and notice.
    Reboot(Target),
    /// Pause the VM, after the guest's vote and notice.
    Pause(Target),
    /// Unpause the VM, then tell the guest.
    Unpause(Target),
    /// Suspend the VM, after the guest's vote and notice.
    Suspend(Target),
    /// Resume the VM, then tell the guest.
    Resume(Target),
    /// Any other lifecycle event (`resize_begin`, `live_migrate_end`, …).
    Operate {
        /// The instance.
        uuid: String,
        /// The event.
        action: String,
        /// Print the operation's id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
}

/// The instance of a lifecycle operation.
#[derive(Debug, Args)]
struct Target {
    /// The instance.
    uuid: String,
    /// Print the operation's id and return at once.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
struct EventArgs {
    /// Only this instance's events.
    #[arg(long)]
    instance: Option<String>,
    /// Only this host's events.
    #[arg(long)]
    host: Option<String>,
    /// Only events of this type (`heartbeat_lost`, …).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// After the stored events, keep printing new ones until Ctrl-C.
    #[arg(long)]
    follow: bool,
}

/// The exit status `tether ctl` gives for `error`.
pub fn exit_status(error: &anyhow::Error) -> Option<u8> {
    if let Some(not_done) = error.downcast_ref::<operate::NotDone>() {
        return Some(match not_done {
            operate::NotDone::Rejected { .. } => 5,
            operate::NotDone::Failed { .. } => 1,
        });
    }
    match error.downcast_ref::<ApiError>()? {
        ApiError::NotFound(_) => Some(3),
        ApiError::Unauthorized(_) => Some(4),
        ApiError::Refused { .. } => Some(1),
    }
}

/// Runs one `tether ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let token = read_token(args.token_file.as_deref())?;
    let client = ControllerClient::with_ca_file(&args.controller, token, args.ca_file.as_deref())
        .map_err(|e| crate::ConfigProblem(format!("{e:#}")))?;
    let out = Output { json: args.json };
    match args.what {
        What::Hosts { action } => hosts(&client, action, out).await,
        What::Instances {
            action,
            host,
            state,
        } => instances(&client, action, host, state, out).await,
        What::Events(events_args) => events(&client, events_args, out).await,
        What::Webhooks { action } => webhooks(&client, action, out).await,
        What::Audit => {
            let audit = client.get("/v1/audit").await?;
            if out.json {
                out.show(&audit, &[]);
            } else {
                println!(
                    "last run: {}, hosts checked: {}, unreachable: {}",
                    cell(&audit["last_run"]),
                    cell(&audit["hosts_checked"]),
                    cell(&audit["unreachable"])
                );
                out.show(&audit["repairs"], &AUDIT_COLUMNS);
            }
            Ok(())
        }
        What::Vim => {
            out.show(&client.get("/v1/vim").await?, &VIM_COLUMNS);
            Ok(())
        }
    }
}

/// The instance, event and `--no-wait` of a lifecycle subcommand; `None` for the others
/// (which [`instances`] matches first).
fn lifecycle(action: &InstanceAction) -> Option<(String, String, bool)> {
    let (target, event) = match action {
        InstanceAction::Stop(t) => (t, "stop"),
        InstanceAction::Reboot(t) => (t, "reboot"),
        InstanceAction::Pause(t) => (t, "pause"),
        InstanceAction::Unpause(t) => (t, "unpause"),
        InstanceAction::Suspend(t) => (t, "suspend"),
        InstanceAction::Resume(t) => (t, "resume"),
        InstanceAction::Operate {
            uuid,
            action,
            no_wait,
        } => return Some((uuid.clone(), action.clone(), *no_wait)),
        _ => return None,
    };
    Some((target.uuid.clone(), event.to_owned(), target.no_wait))
}

/// The token from `file` (trimmed), or from `TETHER_TOKEN`.
fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("Cannot read the token file {}", path.display()))?,
        None => std::env::var("TETHER_TOKEN").map_err(|_| {
            crate::ConfigProblem("No token: give --token-file FILE or set TETHER_TOKEN".into())
        })?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(crate::ConfigProblem("The token is empty".into()).into());
    }
    Ok(token)
}

async fn webhooks(
    client: &ControllerClient,
    action: Option<WebhookAction>,
    out: Output,
) -> anyhow::Result<()> {
    let value = match action {
        None => client.get("/v1/webhooks").await?,
        Some(WebhookAction::Add { url, secret_file }) => {
            let secret = std::fs::read_to_string(&secret_file).with_context(|| {
                format!("Cannot read the secret file {}", secret_file.display())
            })?;
            let body = json!({"url": url, "secret": secret.trim()});
            client.post("/v1/webhooks", Some(&body)).await?
        }
        Some(WebhookAction::Show { id }) => {
            client
                .get(&format!("/v1/webhooks/{}", segment(&id)))
                .await?
        }
        Some(WebhookAction::Delete { id }) => {
            client
                .delete(&format!("/v1/webhooks/{}", segment(&id)))
                .await?;
            println!("webhook {id} deleted");
            return Ok(());
        }
    };
    out.show(&value, &WEBHOOK_COLUMNS);
    Ok(())
}

async fn hosts(
    client: &ControllerClient,
    action: Option<HostAction>,
    out: Output,
) -> anyhow::Result<()> {
    let value = match action {
        None => client.get("/v1/hosts").await?,
        Some(HostAction::Show { name }) => {
            client.get(&format!("/v1/hosts/{}", segment(&name))).await?
        }
        Some(HostAction::Enable { name }) => {
            client
                .post(&format!("/v1/hosts/{}/enable", segment(&name)), None)
                .await?
        }
        Some(HostAction::Disable { name }) => {
            client
                .post(&format!("/v1/hosts/{}/disable", segment(&name)), None)
                .await?
        }
        Some(HostAction::RecoveryMode { name, mode }) => {
            let path = format!("/v1/hosts/{}/recovery-mode", segment(&name));
            client.put(&path, &json!({"mode": mode})).await?
        }
    };
    out.show(&value, &HOST_COLUMNS);
    Ok(())
}

async fn instances(
    client: &ControllerClient,
    action: Option<InstanceAction>,
    host: Option<String>,
    state: Option<String>,
    out: Output,
) -> anyhow::Result<()> {
    let value = match action {
        None => {
            let query = query(&[("host", host.as_deref()), ("state", state.as_deref())]);
            client.get(&format!("/v1/instances{query}")).await?
        }
        Some(InstanceAction::Show { uuid }) => {
            client
                .get(&format!("/v1/instances/{}", segment(&uuid)))
                .await?
        }
        Some(InstanceAction::Enable { uuid }) => {
            client
                .post(&format!("/v1/instances/{}/enable", segment(&uuid)), None)
                .await?
        }
        Some(InstanceAction::Disable { uuid }) => {
            client
                .post(&format!("/v1/instances/{}/disable", segment(&uuid)), None)
                .await?
        }
        Some(InstanceAction::Action { uuid, action }) => {
            let body = match action.as_str() {
                "default" => json!({"action": null}),
                "reboot" | "stop" | "log" => json!({"action": action}),
                other => {
                    let problem = format!("Unknown action {other:?}: reboot, stop, log or default");
                    return Err(crate::ConfigProblem(problem).into());
                }
            };
            let path = format!("/v1/instances/{}/corrective-action", segment(&uuid));
            client.put(&path, &body).await?
        }
        Some(InstanceAction::RecoveryMode { uuid, mode }) => {
            let mode = if mode == "host" {
                Value::Null
            } else {
                json!(mode)
            };
            let path = format!("/v1/instances/{}/recovery-mode", segment(&uuid));
            client.put(&path, &json!({ "mode": mode })).await?
        }
        Some(InstanceAction::Recoveries { uuid }) => {
            let path = format!("/v1/instances/{}/recoveries", segment(&uuid));
            let log = client.get(&path).await?;
            out.show(&log["recoveries"], &RECOVERY_COLUMNS);
            return Ok(());
        }
        Some(other) => {
            let Some((uuid, event, no_wait)) = lifecycle(&other) else {
                return Ok(());
            };
            return operate::operate(client, &uuid, &event, no_wait, out.json).await;
        }
    };
    out.show(&value, &INSTANCE_COLUMNS);
    Ok(())
}

async fn events(client: &ControllerClient, args: EventArgs, out: Output) -> anyhow::Result<()> {
    let limit = args.limit.to_string();
    let filters = [
        ("instance", args.instance.as_deref()),
        ("host", args.host.as_deref()),
        ("type", args.kind.as_deref()),
        ("since", args.since.as_deref()),
    ];
    let mut with_limit = filters.to_vec();
    with_limit.push(("limit", Some(limit.as_str())));
    let value = client
        .get(&format!("/v1/events{}", query(&with_limit)))
        .await?;
    let stored = value["events"].clone();
    out.show(&stored, &EVENT_COLUMNS);
    if !args.follow {
        return Ok(());
    }
    let last = stored
        .as_array()
        .and_then(|events| events.last())
        .and_then(|e| e["id"].as_u64());
    let after = last.map(|id| id.to_string());
    // The stream takes no filters: it resumes after the last event shown, and the filters
    // are applied here.
    let path = format!("/v1/events/stream{}", query(&[("after", after.as_deref())]));
    let shown = |event: Value| {
        if matches_filters(&event, &filters) {
            if out.json {
                println!("{event}");
            } else {
                print!("{}", table_rows(&EVENT_COLUMNS, &[&event]));
            }
        }
        true
    };
    tokio::select! {
        result = client.follow(&path, shown) => result,
        _ = crate::shutdown::signalled() => Ok(()),
    }
}

/// Whether a streamed event passes the `--instance`, `--host` and `--type` filters.
fn matches_filters(event: &Value, filters: &[(&str, Option<&str>)]) -> bool {
    filters.iter().all(|(key, want)| {
        let field = if *key == "type" { "event" } else { key };
        match want {
            Some(want) if *key != "since" => event[field].as_str() == Some(*want),
            _ => true,
        }
    })
}

/// `?k=v&…` of the given pairs, values percent-encoded; empty when none is set.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `text` percent-encoded for a path segment or a query value.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_encode_values_and_skip_unset_ones() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("host", Some("compute 0")),
                ("state", None),
                ("since", Some("2026-11-23T10:00:00Z"))
            ]),
            "?host=compute%200&since=2026-11-23T10%3A00%3A00Z"
        );
    }

    #[test]
    fn streamed_events_are_filtered_like_stored_ones() {
        let event = json!({"instance": "u1", "host": "h", "event": "heartbeat_lost"});
        assert!(matches_filters(
            &event,
            &[("type", Some("heartbeat_lost")), ("since", Some("x"))]
        ));
        assert!(!matches_filters(&event, &[("instance", Some("u2"))]));
    }
}
