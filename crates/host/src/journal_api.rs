//! `GET /v1/journal?after=N[&limit=M]`: the journal's events after `seq` N, oldest first, at
//! most M (1–500, default 500), answered as `{"events":[…]}` with each line exactly as written,
//! which is the body the controller's event ingestion takes. The controller's state audit
//! reads it to fetch events its copy lacks when this agent's own link cannot deliver them.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::api::{error, ApiState};
use crate::controller_link::BATCH;
use crate::journal::{events_body, JournalReader};

/// `after` and `limit` from the query string; each once, nothing else.
fn parse_query(query: Option<&str>) -> Result<(u64, usize), String> {
    let (mut after, mut limit) = (None, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "after" => &mut after,
            "limit" => &mut limit,
            _ => return Err(format!("Unknown parameter {key:?}")),
        };
        let parsed = value
            .parse::<u64>()
            .map_err(|_| format!("{key} must be a whole number, not {value:?}"))?;
        if slot.replace(parsed).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    let after = after.ok_or("after=<seq> is required")?;
    let limit = limit.map_or(BATCH, |l| usize::try_from(l).unwrap_or(usize::MAX));
    if !(1..=BATCH).contains(&limit) {
        return Err(format!("limit must be 1 to {BATCH}"));
    }
    Ok((after, limit))
}

pub(crate) async fn journal(State(state): State<ApiState>, uri: Uri) -> Response {
    let (after, limit) = match parse_query(uri.query()) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    let Some(path) = state.journal.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "This API has no journal",
        );
    };
    let read =
        tokio::task::spawn_blocking(move || JournalReader::new(&path).read_after(after, limit))
            .await;
    let events = match read {
        Ok(Ok(events)) => events,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        _ => {
            let message = "The journal cannot be read";
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message);
        }
    };
    let body = events_body(&events);
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_strict() {
        assert_eq!(parse_query(Some("after=5")), Ok((5, BATCH)));
        assert_eq!(parse_query(Some("after=0&limit=3")), Ok((0, 3)));
        for bad in [
            None,
            Some(""),
            Some("limit=3"),
            Some("after=x"),
            Some("after=1&after=2"),
            Some("after=1&limit=0"),
            Some("after=1&limit=501"),
            Some("after=1&other=2"),
        ] {
            assert!(parse_query(bad).is_err(), "{bad:?}");
        }
    }
}
