//! The committed OpenAPI document (`docs/openapi.json`) is the one the code generates, and it
//! documents every route the router serves, with the same methods.
//!
//! After changing the API, regenerate the file with
//! `TETHER_UPDATE_OPENAPI=1 cargo test -p tether-controller --test openapi` and commit it.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::Harness;
use tether_controller::{openapi, routes};

/// Where the committed document lives.
fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// The document as the code generates it, as committed: pretty JSON and a final newline.
fn generated() -> String {
    let mut text = openapi().to_pretty_json().unwrap();
    text.push('\n');
    text
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = committed_path();
    let fresh = generated();
    if std::env::var_os("TETHER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(fresh.lines().count()), |i| i);
        panic!(
            "{} differs from the document the code generates (first at line {}); regenerate \
             it with `TETHER_UPDATE_OPENAPI=1 cargo test -p tether-controller --test openapi` \
             and commit it",
            path.display(),
            line + 1
        );
    }
}

/// (METHOD, path) of every operation in the document.
fn documented() -> BTreeSet<(String, String)> {
    let document = serde_json::to_value(openapi()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&&**method) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    let served: BTreeSet<(String, String)> = routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes without #[utoipa::path] in api::openapi: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert_eq!(served.len(), 24, "the API has 24 routes");
}

#[test]
fn every_operation_needs_the_bearer_token_and_has_its_own_id() {
    let document = serde_json::to_value(openapi()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "tether controller API");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(document["security"], serde_json::json!([{"bearer": []}]));
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into())
    );
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} does not document 401"
            );
            let id = operation["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        }
    }
}

/// `{name}` segments filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_listed_methods_on_each_path() {
    let h = Harness::start().await;
    let routes = routes();
    let paths: BTreeSet<&str> = routes.iter().map(|(_, p)| *p).collect();
    for path in paths {
        let url = concrete(path);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let listed = routes.iter().any(|(m, p)| *p == path && m == method);
            // An empty body: handlers that need one answer 400, not 404 or 405. The stream
            // is asked from a bad position, so that it answers 400 rather than stream.
            let url = if path.ends_with("/stream") {
                format!("{url}?after=x")
            } else {
                url.clone()
            };
            let (code, body) = h.call(method, &url, "").await;
            let no_such_path = code == 404
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("No such path"));
            if listed {
                assert!(
                    code != 405 && !no_such_path,
                    "{method} {path}: {code} {body}"
                );
            } else {
                assert_eq!(code, 405, "{method} {path} is not listed: {body}");
            }
        }
    }
}
