//! `/ws`: the monitor protocol over WebSocket.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::access::{authorize, foreign_origin, Access};
use super::error::ApiError;
use super::rest::Params;
use super::AppState;
use crate::protocol::{
    self, ClientFrame, ErrorCode, ServerFrame, Welcome, PROTOCOL_VERSION, SERVER_NAME,
};
use crate::serve::hub::{now_text, FrameText, Open};
use crate::serve::monitoring::Monitoring;
use crate::serve::outgoing::{Outbound, Outgoing, Queued};

/// `/ws`: the monitor protocol over WebSocket, one JSON frame per text message. The token
/// comes with the upgrade request, so no `hello` is needed (one is answered `welcome`).
/// Frames: `subscribe`, `unsubscribe`, `ping`, and `admin` when the token is an admin's.
pub(super) async fn ws(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Params,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let admin = authorize(&st.cfg, &headers, &q, Access::Read)?;
    if foreign_origin(&headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "WebSockets from pages of another origin are refused",
        ));
    }
    // Small buffers: a monitor sends little, and what it receives is flushed as it goes
    // (the library's defaults of 128 KiB each would be most of a subscriber's memory).
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| ws_session(st, socket, admin)))
}

pub(super) async fn ws_session(st: AppState, socket: WebSocket, admin: bool) {
    let _open = Open::new(&st.hub, |h| &h.http_streams);
    let (mut sink, mut source) = socket.split();
    let (out, rx) = mpsc::channel::<Queued<FrameText>>(st.cfg.ws_queue);
    let writer = tokio::spawn(async move {
        // What is waiting (replies, and the subscription's frames) is written, then flushed
        // once.
        let mut outbound = Outbound::new(rx);
        'out: while let Some(first) = outbound.next().await {
            if sink.feed(message(first)).await.is_err() {
                break;
            }
            for _ in 0..64 {
                let Some(more) = outbound.try_next() else {
                    break;
                };
                if sink.feed(message(more)).await.is_err() {
                    break 'out;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut stop = st.stop.clone();
    let mut monitoring = Monitoring::new(st.hub.clone(), out.clone(), text);
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            msg = source.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = protocol::error_line(ErrorCode::BadFrame, "frames are text", None);
                let _ = out.send(FrameText::from(e.trim_end()).into()).await;
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue, // ping/pong: answered by the library
        };
        let frame = match protocol::decode(text.as_bytes()) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                let line = protocol::error_line(e.code, &e.message, e.reference.as_ref());
                let _ = out.send(FrameText::from(line.trim_end()).into()).await;
                continue;
            }
        };
        let reference = frame.reference;
        let handled = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            handled = monitoring.handle(frame.body, &reference, admin) => handled,
        };
        let body = match handled {
            Ok(true) => continue,
            Ok(false) => break,
            Err(body) => body,
        };
        let answer = match body {
            ClientFrame::Hello(_) => ServerFrame::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                session: None,
                server: SERVER_NAME.into(),
                heartbeat_interval_ms: None,
                time: now_text(),
                features: Vec::new(),
            })
            .text(reference.as_ref()),
            _ => error_text(
                ErrorCode::Forbidden,
                "this stream takes monitor frames (and admin frames with an admin token)",
                &reference,
            ),
        };
        let sent = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            sent = out.send(FrameText::from(answer).into()) => sent,
        };
        if sent.is_err() {
            break;
        }
    }
    drop(monitoring);
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    debug!("WebSocket closed");
}

/// A reply as a text message.
fn text(frame: ServerFrame<'_>, reference: Option<&Value>) -> FrameText {
    frame.text(reference).into()
}

/// One text message per frame; a stream frame is shared with every subscriber of its event,
/// not copied.
fn message(out: Outgoing<FrameText>) -> Message {
    match out {
        Outgoing::Reply(text) => Message::Text(text),
        Outgoing::Frame(f) => Message::Text(f.text),
    }
}

pub(super) fn error_text(code: ErrorCode, msg: &str, reference: &Option<Value>) -> String {
    let mut l = protocol::error_line(code, msg, reference.as_ref());
    l.truncate(l.trim_end().len());
    l
}
