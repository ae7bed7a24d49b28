//! The OpenAPI 3.1 document of the native API, built from the handlers' annotations.
//!
//! `docs/openapi.json` is this document, rendered by [`openapi`] as pretty JSON; a test
//! regenerates it and fails when the committed file differs. The StarlingX-compatible listener
//! ([`crate::starlingx`]) speaks another API and is not in it.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{agents, audit, events, inventory, operations, recovery, vim, webhooks};

const DESCRIPTION: &str = "\
The native REST API of the tether controller, the cloud-wide view of every host agent and \
every guest: host agents register and send their journal events; operators and the VIM read \
hosts, instances and the event log (also as a live Server-Sent Events stream), switch failure \
reporting, override corrective actions, run lifecycle operations, subscribe webhooks and read \
the last state audit and the state of the events sent to a StarlingX VIM.

Every request needs `Authorization: Bearer <token>`. Every error is \
`{\"error\":{\"code\":\"<stable code>\",\"message\":\"<for a human>\"}}`; a path that does not \
exist is `404 not_found` and a known path with another method `405 method_not_allowed`.

The StarlingX guestAgent-compatible API (`--starlingx-listen`) is served on a listener of its \
own, with the reference's routes, bodies and errors and no token; it is not part of this \
document (see docs/controller.md).";

#[derive(OpenApi)]
#[openapi(
    info(title = "tether controller API", description = DESCRIPTION),
    paths(
        agents::register,
        agents::post_events,
        inventory::hosts,
        inventory::host,
        inventory::enable_host,
        inventory::disable_host,
        recovery::host_mode,
        inventory::instances,
        inventory::instance,
        inventory::enable_instance,
        inventory::disable_instance,
        inventory::corrective_action,
        recovery::instance_mode,
        recovery::recoveries,
        operations::start,
        operations::get,
        events::query,
        events::stream,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        audit::last,
        vim::status,
    ),
    components(responses(
        super::Unauthorized,
        super::Internal,
        super::TooLarge,
        super::HostFailed
    )),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "agents", description = "What host agents call: registration and events"),
        (name = "hosts", description = "Compute hosts, their reporting switch and recovery mode"),
        (name = "instances", description = "Guests, their reporting switch, corrective \
            action override, recovery mode and recovery decisions"),
        (name = "operations", description = "Lifecycle operations, run by the host agents"),
        (name = "events", description = "The event log and its live stream"),
        (name = "webhooks", description = "Subscribers that receive every event"),
        (name = "audit", description = "The periodic comparison of the store with each host"),
        (name = "vim", description = "The events sent to a StarlingX VIM"),
    ),
)]
struct Document;

/// Declares the `bearer` scheme the document's `security` names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}

/// The OpenAPI 3.1 document of the native API ([`super::routes`]), versioned as this crate.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = Document::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}
