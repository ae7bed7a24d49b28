//! Reading a guestAgent request: the checks the reference server makes, in its order, ending
//! in a typed [`Command`] or the [`Fail`] it answers. No I/O.
//!
//! 1. A `User-Agent` header, when present, must be exactly `vim/1.0`; the path must hold
//!    `/v1/hosts/` or `/v1/instances/` followed by a 36-character uuid, optionally
//!    `/<command>`. Otherwise 403.
//! 2. `DELETE` and `GET` read no body; `POST /v1/hosts/{uuid}` reads one if given.
//! 3. Every other `PUT`, `POST` or `PATCH` needs a body (411 without one) that is a JSON object
//!    with the keys its route needs (400 `command parse error` without them).

use serde_json::{Map, Value};

/// The only `User-Agent` accepted.
pub const USER_AGENT: &str = "vim/1.0";
/// Length of a uuid in a path.
const UUID_LEN: usize = 36;

/// A request refused: its status and the reference's reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    /// HTTP status.
    pub status: u16,
    /// `command parse error`, `no buffer`, `entity not found`, `invalid data`, `bad state` or
    /// `unsupported http command`.
    pub reason: &'static str,
}

impl Fail {
    const FORBIDDEN: Fail = Fail::new(403, "no buffer");
    const LENGTH_REQUIRED: Fail = Fail::new(411, "no buffer");
    const PARSE: Fail = Fail::new(400, "command parse error");
    /// 404 `entity not found`.
    pub const NOT_FOUND: Fail = Fail::new(404, "entity not found");
    /// 400 `invalid data`.
    pub const INVALID: Fail = Fail::new(400, "invalid data");
    const BAD_STATE: Fail = Fail::new(400, "bad state");
    const UNSUPPORTED: Fail = Fail::new(400, "unsupported http command");
    const METHOD: Fail = Fail::new(405, "unsupported http command");

    const fn new(status: u16, reason: &'static str) -> Fail {
        Fail { status, reason }
    }
}

/// What the VIM asked, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `POST /v1/hosts/{uuid}`: is the host known? `hostname` if the body named it.
    HostCreate {
        /// Host uuid.
        uuid: String,
        /// The body's `hostname`, if any.
        hostname: Option<String>,
    },
    /// `PUT /v1/hosts/{uuid}/enable` (any other suffix disables).
    HostReporting {
        /// Host uuid.
        uuid: String,
        /// The body's `hostname`.
        hostname: String,
        /// On or off.
        enabled: bool,
    },
    /// `DELETE /v1/hosts/{uuid}`: nothing to do.
    HostDelete,
    /// `GET /v1/hosts/{uuid}[/…]`: the host's reporting switch.
    HostQuery {
        /// Host uuid.
        uuid: String,
    },
    /// `GET /v1/instances/{uuid}`: the instance's heartbeat service.
    InstanceQuery {
        /// Instance uuid.
        uuid: String,
    },
    /// `DELETE /v1/instances/{uuid}`.
    InstanceDelete {
        /// Instance uuid.
        uuid: String,
    },
    /// `POST /v1/instances/{uuid}` with `services`: the VIM creates or moves an instance.
    InstanceAdd {
        /// Instance uuid.
        uuid: String,
        /// The body's `hostname`.
        hostname: String,
    },
    /// `PATCH /v1/instances/{uuid}`: the heartbeat service's reporting on or off.
    InstanceReporting {
        /// Instance uuid.
        uuid: String,
        /// The body's `hostname`.
        hostname: String,
        /// On or off.
        enabled: bool,
    },
    /// `POST /v1/instances/{uuid}/vote` or `/notify`.
    Action {
        /// Instance uuid.
        uuid: String,
        /// The body's `hostname`.
        hostname: String,
        /// The body's `action` (an event name, not checked here).
        action: String,
        /// A vote, or a notification.
        vote: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Host,
    Instance,
}

/// Reads one request: `method`, the URL's path, the `User-Agent` header if present, the body.
pub fn parse(
    method: &str,
    path: &str,
    user_agent: Option<&[u8]>,
    body: &[u8],
) -> Result<Command, Fail> {
    if user_agent.is_some_and(|ua| ua != USER_AGENT.as_bytes()) {
        return Err(Fail::FORBIDDEN);
    }
    let (level, uuid, command) = target(path).ok_or(Fail::FORBIDDEN)?;
    match (method, level) {
        ("DELETE", Level::Host) => return Ok(Command::HostDelete),
        ("DELETE", Level::Instance) => return Ok(Command::InstanceDelete { uuid }),
        ("GET", Level::Host) => return Ok(Command::HostQuery { uuid }),
        ("GET", Level::Instance) => return Ok(Command::InstanceQuery { uuid }),
        ("POST", Level::Host) => {
            let hostname = object(body).ok().and_then(|o| text(&o, "hostname").ok());
            return Ok(Command::HostCreate { uuid, hostname });
        }
        ("PUT" | "POST" | "PATCH", _) => {}
        _ => return Err(Fail::METHOD),
    }
    if body.is_empty() {
        return Err(Fail::LENGTH_REQUIRED);
    }
    let body = object(body)?;
    match level {
        Level::Host => host_command(method, uuid, &command, &body),
        Level::Instance => instance_command(method, uuid, &command, &body),
    }
}

fn host_command(
    method: &str,
    uuid: String,
    command: &str,
    body: &Map<String, Value>,
) -> Result<Command, Fail> {
    let hostname = text(body, "hostname")?;
    match method {
        "PUT" => Ok(Command::HostReporting {
            uuid,
            hostname,
            enabled: command == "enable",
        }),
        _ => Err(Fail::UNSUPPORTED),
    }
}

fn instance_command(
    method: &str,
    uuid: String,
    command: &str,
    body: &Map<String, Value>,
) -> Result<Command, Fail> {
    let hostname = text(body, "hostname")?;
    text(body, "uuid")?;
    match (method, command) {
        ("POST", "vote" | "notify") => Ok(Command::Action {
            uuid,
            hostname,
            action: text(body, "action")?,
            vote: command == "vote",
        }),
        ("POST", _) => {
            services(body)?;
            Ok(Command::InstanceAdd { uuid, hostname })
        }
        ("PATCH", _) => {
            let first = services(body)?.first().ok_or(Fail::INVALID)?;
            if first.get("service").and_then(Value::as_str) != Some("heartbeat") {
                return Err(Fail::INVALID);
            }
            let enabled = match first.get("state").and_then(Value::as_str) {
                Some("enabled") => true,
                Some("disabled") => false,
                _ => return Err(Fail::BAD_STATE),
            };
            Ok(Command::InstanceReporting {
                uuid,
                hostname,
                enabled,
            })
        }
        _ => Err(Fail::UNSUPPORTED),
    }
}

/// The level, uuid and command of a path such as `/v1/instances/<uuid>/vote`.
fn target(path: &str) -> Option<(Level, String, String)> {
    let (level, rest) = if let Some(at) = path.find("/v1/hosts/") {
        (Level::Host, &path[at + "/v1/hosts/".len()..])
    } else {
        let at = path.find("/v1/instances/")?;
        (Level::Instance, &path[at + "/v1/instances/".len()..])
    };
    let uuid = rest.get(..UUID_LEN)?;
    if !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    let command = match &rest[UUID_LEN..] {
        "" => "",
        more => more.strip_prefix('/')?,
    };
    Some((level, uuid.to_owned(), command.to_owned()))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Fail::PARSE),
    }
}

fn text(body: &Map<String, Value>, key: &str) -> Result<String, Fail> {
    match body.get(key) {
        Some(Value::String(value)) => Ok(value.clone()),
        _ => Err(Fail::PARSE),
    }
}

fn services(body: &Map<String, Value>) -> Result<&Vec<Value>, Fail> {
    body.get("services")
        .and_then(Value::as_array)
        .ok_or(Fail::PARSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "8d80875b-fa73-4ccb-bce3-1cd4df10449d";
    const UA: Option<&[u8]> = Some(b"vim/1.0");

    fn instance(path: &str) -> String {
        format!("/v1/instances/{U}{path}")
    }

    #[test]
    fn the_user_agent_and_the_url_are_checked_first() {
        let get = |ua, path: &str| parse("GET", path, ua, b"");
        assert!(get(UA, &instance("")).is_ok());
        assert!(get(None, &instance("")).is_ok(), "no User-Agent is fine");
        assert_eq!(get(Some(b"curl/8"), &instance("")), Err(Fail::FORBIDDEN));
        assert_eq!(get(UA, "/v1/instances/1234"), Err(Fail::FORBIDDEN));
        assert_eq!(get(UA, &format!("/v1/things/{U}")), Err(Fail::FORBIDDEN));
        let not_hex = "zzzzzzzz-fa73-4ccb-bce3-1cd4df10449d";
        assert_eq!(
            get(UA, &format!("/v1/hosts/{not_hex}")),
            Err(Fail::FORBIDDEN)
        );
        assert_eq!(get(UA, &format!("/v1/hosts/{U}x")), Err(Fail::FORBIDDEN));
        assert_eq!(
            get(UA, &format!("/v1/hosts/{U}/disable")),
            Ok(Command::HostQuery { uuid: U.into() })
        );
    }

    #[test]
    fn bodies_are_required_where_the_reference_reads_them() {
        assert_eq!(
            parse("PATCH", &instance(""), UA, b""),
            Err(Fail::LENGTH_REQUIRED)
        );
        assert_eq!(
            parse("PUT", &format!("/v1/hosts/{U}/enable"), UA, b""),
            Err(Fail::LENGTH_REQUIRED)
        );
        assert_eq!(
            parse("POST", &format!("/v1/hosts/{U}"), UA, b""),
            Ok(Command::HostCreate {
                uuid: U.into(),
                hostname: None
            })
        );
        assert_eq!(parse("HEAD", &instance(""), UA, b""), Err(Fail::METHOD));
    }

    #[test]
    fn instance_bodies_need_their_keys() {
        let post = |path: &str, body: &str| parse("POST", &instance(path), UA, body.as_bytes());
        assert_eq!(post("/vote", "not json"), Err(Fail::PARSE));
        assert_eq!(
            post("/vote", r#"{"uuid":"x","action":"stop"}"#),
            Err(Fail::PARSE)
        );
        assert_eq!(
            post("/vote", r#"{"hostname":"h","uuid":"x"}"#),
            Err(Fail::PARSE)
        );
        assert_eq!(
            post("/notify", r#"{"hostname":"h","uuid":"x","action":"stop"}"#),
            Ok(Command::Action {
                uuid: U.into(),
                hostname: "h".into(),
                action: "stop".into(),
                vote: false
            })
        );
        assert_eq!(post("", r#"{"hostname":"h","uuid":"x"}"#), Err(Fail::PARSE));
        assert_eq!(
            parse("PUT", &instance(""), UA, br#"{"hostname":"h","uuid":"x"}"#),
            Err(Fail::UNSUPPORTED)
        );
    }

    #[test]
    fn a_patch_names_the_heartbeat_service_and_a_state() {
        let patch = |services: &str| {
            let body = format!(r#"{{"hostname":"h","uuid":"x","services":{services}}}"#);
            parse("PATCH", &instance(""), UA, body.as_bytes())
        };
        assert_eq!(
            patch(r#"[{"service":"heartbeat","state":"disabled"}]"#),
            Ok(Command::InstanceReporting {
                uuid: U.into(),
                hostname: "h".into(),
                enabled: false
            })
        );
        assert_eq!(
            patch(r#"[{"service":"other","state":"enabled"}]"#),
            Err(Fail::INVALID)
        );
        assert_eq!(patch("[]"), Err(Fail::INVALID));
        assert_eq!(
            patch(r#"[{"service":"heartbeat","state":"on"}]"#),
            Err(Fail::BAD_STATE)
        );
        assert_eq!(patch(r#""heartbeat""#), Err(Fail::PARSE));
    }

    #[test]
    fn a_host_put_enables_only_with_enable() {
        let put = |cmd: &str| {
            parse(
                "PUT",
                &format!("/v1/hosts/{U}/{cmd}"),
                UA,
                br#"{"uuid":"x","hostname":"h"}"#,
            )
        };
        let enabled = |c| matches!(c, Ok(Command::HostReporting { enabled, .. }) if enabled);
        assert!(enabled(put("enable")));
        assert!(!enabled(put("disable")));
        assert!(!enabled(put("whatever")));
        assert_eq!(
            parse(
                "PUT",
                &format!("/v1/hosts/{U}/enable"),
                UA,
                br#"{"uuid":"x"}"#
            ),
            Err(Fail::PARSE)
        );
    }
}
