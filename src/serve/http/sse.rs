//! `/api/v1/events`: the monitor stream as Server-Sent Events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use super::access::{authorize, Access};
use super::error::ApiError;
use super::rest::{num, Params};
use super::AppState;
use crate::protocol::{self, ErrorCode};
use crate::serve::hub::Open;

/// A comma-separated query parameter as a list.
pub(super) fn list_param(q: &HashMap<String, String>, key: &str) -> Vec<String> {
    q.get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The `subscribe` an SSE request's query (and `Last-Event-ID`) stands for.
pub(super) fn sse_subscribe(
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<protocol::Subscribe, ApiError> {
    #[derive(Deserialize)]
    struct Req {
        topics: Option<Vec<String>>,
        filter: vigil_actors::Filter,
        since: Option<u64>,
        snapshot: bool,
    }
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::new(ErrorCode::InvalidField, "Last-Event-ID must be a seq"))
        })
        .transpose()?;
    let since = match last_id {
        Some(id) => Some(id),
        None => num(q, "since")?,
    };
    // Resuming: the events after the last one seen, never a second snapshot.
    let snapshot =
        last_id.is_none() && matches!(q.get("snapshot").map(String::as_str), Some("true" | "1"));
    let req = json!({
        "topics": q.contains_key("topics").then(|| list_param(q, "topics")),
        "filter": {
            "ids": list_param(q, "ids"),
            "kinds": list_param(q, "kinds"),
            "statuses": list_param(q, "statuses"),
        },
        "since": since,
        "snapshot": snapshot,
    });
    let r: Req = serde_json::from_value(req)
        .map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()))?;
    Ok(protocol::Subscribe {
        topics: r.topics,
        filter: r.filter,
        since: r.since,
        snapshot: r.snapshot,
    })
}

/// `/api/v1/events`: the monitor stream as Server-Sent Events. Each frame is one SSE event
/// named by its type (`event`, `snapshot`, `stats`, `lagged`, `resync_required`) with the
/// frame as its data; events and snapshots carry `id:` = seq, so a client that reconnects
/// with `Last-Event-ID` gets exactly the events after it. `lagged` ends the stream (the
/// client reconnects and resumes).
pub(super) async fn sse(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize(&st.cfg, &headers, &q, Access::Read)?;
    let req = sse_subscribe(&headers, &q)?;
    let stream = st.hub.subscribe(req).await.map_err(ApiError::from)?;
    let guard = Open::new(&st.hub, |h| &h.http_streams);
    let stop = st.stop.clone();
    let events = futures::stream::unfold(
        (stream, false, guard, stop),
        |(mut stream, ended, guard, mut stop)| async move {
            if ended {
                return None;
            }
            let frame = tokio::select! {
                f = stream.next() => f?,
                _ = stop.wait_for(|s| *s) => return None,
            };
            let mut e = SseEvent::default().event(frame.kind).data(&*frame.text);
            if let Some(seq) = frame.seq {
                e = e.id(seq.to_string());
            }
            Some((Ok(e), (stream, frame.last, guard, stop)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
