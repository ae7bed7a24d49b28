//! The VIM event transmitter: the events the StarlingX guestAgent sends to the NFV-VIM's
//! plugin API, sent from the controller's event log.
//!
//! With a VIM URL configured ([`crate::ControllerConfig::vim_url`]), [`Transmitter`] follows
//! the stored event log in id order from a persistent cursor (the store's `vim_cursor`; at
//! first start, the newest event, so history is not replayed), maps each event to zero or more
//! PATCHes of `{vim_url}/nfvi-plugins/v1/instances/{uuid}` ([`mapping`]) and sends them one
//! at a time, in order: a 2xx answer is done, a 4xx is the VIM refusing that one (logged,
//! skipped), anything else is retried with back-off until it goes through. The cursor moves
//! after each event's PATCHes are done, so a restart sends at most the event in flight again.
//! `GET /v1/vim` shows where it stands ([`VimState`] and the cursor).

pub mod mapping;
mod run;

use std::time::Duration;

pub use mapping::{patches, Context, VimEvent, VimPatch};
pub use run::Transmitter;

/// How long one PATCH may take, from connecting to the end of the answer (the reference's
/// `HTTP_VIM_TIMEOUT`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The `User-Agent` the VIM's plugin API expects from the guestAgent.
pub const USER_AGENT: &str = "guest-agent/1.0";

/// Longest VIM URL taken.
const MAX_URL: usize = 2048;

/// A VIM URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// An `https://` URL: the VIM's plugin API is plain HTTP on loopback.
    #[error(
        "{0:?} is an https:// URL; the VIM's plugin API is plain HTTP (on loopback in \
         StarlingX): give an http:// URL"
    )]
    Https(String),
    /// Not `http://host[:port]`.
    #[error("{0:?} is not an http://host[:port] URL (no path, query or user part)")]
    NotBase(String),
}

/// The VIM's base URL `http://host[:port]` without a trailing slash, from `url` (which may
/// end in one `/`).
pub fn parse_url(url: &str) -> Result<String, UrlError> {
    if url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        return Err(UrlError::Https(url.to_owned()));
    }
    let not_base = || UrlError::NotBase(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(not_base)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let odd = |c: char| matches!(c, '/' | '?' | '#' | '@' | '\\') || !c.is_ascii_graphic();
    if authority.is_empty() || authority.contains(odd) || url.len() > MAX_URL {
        return Err(not_base());
    }
    let base = format!("http://{authority}");
    let uri = base.parse::<hyper::Uri>().map_err(|_| not_base())?;
    let has_host = uri.host().is_some_and(|h| !h.is_empty());
    if !has_host || !port_ok(authority) {
        return Err(not_base());
    }
    Ok(base)
}

/// Whether the port of `authority` (`host[:port]`, the host maybe a bracketed IPv6 address),
/// if it has one, is a number that fits a port.
fn port_ok(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((_, port)) if !port.contains(']') => port.parse::<u16>().is_ok(),
        _ => true,
    }
}

/// What `GET /v1/vim` shows of the transmitter besides its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VimState {
    /// The VIM's base URL; `None` when no VIM is configured.
    pub url: Option<String>,
    /// The latest failed or refused PATCH's error since the controller started.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339, UTC).
    pub last_error_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_taken_without_its_trailing_slash() {
        for (given, base) in [
            ("http://127.0.0.1:30002", "http://127.0.0.1:30002"),
            ("http://127.0.0.1:30002/", "http://127.0.0.1:30002"),
            ("http://vim.example", "http://vim.example"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(parse_url(given).as_deref(), Ok(base), "{given}");
        }
    }

    #[test]
    fn anything_but_an_http_base_url_is_refused_with_a_reason() {
        let https = parse_url("https://vim:30002").unwrap_err();
        assert!(matches!(https, UrlError::Https(_)));
        assert!(https.to_string().contains("plain HTTP"), "{https}");
        for bad in [
            "",
            "vim:30002",
            "ftp://vim",
            "http://",
            "http:///x",
            "http://vim/nfvi-plugins",
            "http://vim:30002//",
            "http://vim?x=1",
            "http://user@vim",
            "http://vim:99999",
            "http://vim:port",
            "http://v im",
        ] {
            let error = parse_url(bad).unwrap_err();
            assert!(matches!(error, UrlError::NotBase(_)), "{bad}: {error}");
            assert!(error.to_string().contains("http://host[:port]"), "{error}");
        }
        let long = format!("http://{}", "a".repeat(MAX_URL));
        assert!(parse_url(&long).is_err());
    }
}
