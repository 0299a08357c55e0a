//! One connection: the handshake, the read loop and the writer task that sends its replies.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, Instrument};
use vigil_actors::ReportQuota;

use super::applied::Applied;
use super::backlog::{BacklogSink, Metered};
use super::bucket::Bucket;
use super::out::{append, line, Out};
use super::session::Session;
use super::{Shared, MAX_QUEUED_REPORTS};
use crate::protocol::framing::{Line, LineFrames};
use crate::protocol::{
    self, error_line, ClientFrame, ErrorCode, Frame, Hello, Role, ServerFrame, Welcome,
    FEATURE_BEATS, PROTOCOL_VERSION, SERVER_NAME,
};
use crate::serve::hub::{now_text, Open};
use crate::serve::monitoring::Monitoring;
use crate::serve::outgoing::Outbound;
use crate::serve::owners::Control;

/// One connection: handshake, then frames until the peer closes, is closed, or the listener
/// stops.
pub(super) async fn connection<S>(
    shared: Arc<Shared>,
    stream: S,
    applied: Arc<Applied>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let _open = Open::new(&shared.hub, |h| &h.tcp_connections);
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(
        Metered::new(read, applied.clone()),
        LineFrames::new(shared.cfg.max_frame_bytes),
    );
    let (out_tx, out_rx) = mpsc::channel::<Out>(1024);
    let drain = shared.cfg.drain_timeout;
    let writer = async move {
        // What is waiting (replies, and the subscription's frames) goes out in one write: a
        // monitor's burst of events is one syscall, not one per event.
        let mut outbound = Outbound::new(out_rx);
        let mut buf = Vec::with_capacity(4096);
        while let Some(out) = outbound.next().await {
            buf.clear();
            append(&out, &mut buf);
            while buf.len() < WRITE_BATCH {
                match outbound.try_next() {
                    Some(more) => append(&more, &mut buf),
                    None => break,
                }
            }
            if write.write_all(&buf).await.is_err() {
                break;
            }
            // A snapshot or a long list can be megabytes: not kept for the connection's life.
            if buf.capacity() > 4 * WRITE_BATCH {
                buf = Vec::with_capacity(4096);
            }
        }
        let _ = tokio::time::timeout(drain, write.shutdown()).await;
    };
    // (In the connection's span, as whatever it logs.)
    let writer = tokio::spawn(writer.in_current_span());

    // Handshake: the first frame must be `hello`.
    let first = tokio::time::timeout(shared.cfg.handshake_timeout, next_frame(&mut frames)).await;
    let hello = match first {
        Err(_) => {
            let _ = out_tx
                .send(
                    error_line(
                        ErrorCode::HelloRequired,
                        "no hello within the handshake timeout",
                        None,
                    )
                    .into(),
                )
                .await;
            None
        }
        Ok(None) => None,
        Ok(Some(Ok(Some(Frame {
            body: ClientFrame::Hello(h),
            reference,
        })))) => Some((h, reference)),
        Ok(Some(Ok(_) | Err(_))) => {
            let _ = out_tx
                .send(
                    error_line(
                        ErrorCode::HelloRequired,
                        "the first frame must be hello",
                        None,
                    )
                    .into(),
                )
                .await;
            None
        }
    };
    let role = match hello {
        Some((h, reference)) => match handshake(&shared, &h) {
            Ok(()) => {
                let features = granted(&h);
                let batched = !features.is_empty();
                let welcome = ServerFrame::Welcome(Welcome {
                    protocol: PROTOCOL_VERSION,
                    session: Some(format!("{:016x}", rand_session())),
                    server: SERVER_NAME.into(),
                    heartbeat_interval_ms: Some(shared.cfg.heartbeat_interval.as_millis() as u64),
                    time: now_text(),
                    features,
                });
                let _ = out_tx.send(welcome.line(reference.as_ref()).into()).await;
                Some((h.role, batched))
            }
            Err((code, msg)) => {
                let _ = out_tx
                    .send(error_line(code, &msg, reference.as_ref()).into())
                    .await;
                None
            }
        },
        None => None,
    };
    if let Some((role, batched)) = role {
        if role == Role::Agent {
            let rt = shared.hub.runtime().clone();
            frames.get_mut().report_to(rt as Arc<dyn BacklogSink>);
        }
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        tracing::Span::current()
            .record("conn", conn)
            .record("role", role.as_str());
        let mut session = Session {
            shared: shared.clone(),
            conn,
            role,
            out: out_tx.clone(),
            owned: HashMap::default(),
            bad: 0,
            bucket: Bucket::new(shared.cfg.rate_limit, shared.cfg.rate_burst),
            monitoring: Monitoring::new(shared.hub.clone(), out_tx.clone(), line),
            beats: 0,
            batched,
            reports: ReportQuota::new(MAX_QUEUED_REPORTS),
            applied,
        };
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Control>();
        // One future for the stop, made once: a new `changed()` per frame would register
        // with the listener's shared watch (a lock) on every heartbeat.
        let stopped = async {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::pin!(stopped);
        let mut stopping = false;
        let mut idle = crate::serve::net::Idle::new(shared.cfg.idle_timeout);
        loop {
            tokio::select! {
                item = next_frame(&mut frames) => {
                    let Some(mut item) = item else { break };
                    idle.touch();
                    // The frames already read go through without a trip round the `select!`
                    // (each trip polls the stop and control branches too), and the frame
                    // counter every connection shares is added to once per batch.
                    let mut n = 0;
                    let open = loop {
                        n += 1;
                        if !session.handle(item, &ctl_tx).await {
                            break false;
                        }
                        match next_frame(&mut frames).now_or_never() {
                            Some(Some(more)) => item = more,
                            _ => break true,
                        }
                    };
                    shared.hub.frames.fetch_add(n, Ordering::Relaxed);
                    if session.beats > 0 {
                        shared.hub.heartbeats.fetch_add(session.beats, Ordering::Relaxed);
                        session.beats = 0;
                    }
                    if !open {
                        break;
                    }
                }
                Some(ctl) = ctl_rx.recv() => session.control(ctl).await,
                () = idle.expired() => {
                    debug!("no frame within the idle timeout; closing");
                    break;
                }
                () = &mut stopped => {
                    stopping = true;
                    break;
                }
            }
        }
        session.closed(!stopping);
    }
    drop(out_tx);
    // The writer sends what is queued, then closes (bounded by the drain timeout).
    let _ = tokio::time::timeout(drain + Duration::from_millis(100), writer).await;
}

/// The next item: a decoded frame, a blank line (`Ok(None)`), or a decoding error; `None` at
/// the end of the stream (or a read error).
async fn next_frame<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LineFrames>,
) -> Option<Result<Option<Frame>, protocol::FrameError>> {
    match frames.next().await? {
        Ok(Line::Frame(bytes)) => Some(protocol::decode(&bytes)),
        Ok(Line::TooLarge) => Some(Err(protocol::FrameError {
            code: ErrorCode::FrameTooLarge,
            message: "frame longer than max_frame_bytes; skipped".into(),
            reference: None,
        })),
        Err(e) => {
            debug!(error = %e, "read failed");
            None
        }
    }
}

fn handshake(shared: &Shared, h: &Hello) -> Result<(), (ErrorCode, String)> {
    if h.protocol != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedProtocol,
            format!("this server speaks protocol {PROTOCOL_VERSION}"),
        ));
    }
    if !shared.cfg.admits(h.role, h.token.as_deref()) {
        return Err((ErrorCode::Unauthorized, "wrong or missing token".into()));
    }
    Ok(())
}

/// The features of `hello` this listener grants: `beats` to an agent connection.
fn granted(h: &Hello) -> Vec<String> {
    let beats = h.role == Role::Agent && h.features.iter().any(|f| f == FEATURE_BEATS);
    match beats {
        true => vec![FEATURE_BEATS.to_string()],
        false => Vec::new(),
    }
}

fn rand_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or(0) as u128);
    h.finish()
}

/// Most bytes of queued lines a connection's writer puts in one write.
const WRITE_BATCH: usize = 64 * 1024;
