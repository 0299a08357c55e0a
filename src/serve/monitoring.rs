//! The frames every monitor surface answers the same way — `ping`, `subscribe`, `unsubscribe`
//! and `admin` — handled once, for the TCP listener and the WebSocket alike. Each surface
//! gives its writer's queue and how a reply is written, and keeps what is its own: the
//! handshake, the agents' frames, who may send `admin`.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::protocol::{ClientFrame, ErrorCode, ServerFrame};
use crate::serve::admin::admin_op;
use crate::serve::hub::{now_text, Hub};
use crate::serve::outgoing::Queued;

/// How a surface writes a reply: a line for TCP, a text message for the WebSocket.
pub(crate) type Render<R> = fn(ServerFrame<'_>, Option<&Value>) -> R;

/// A session's monitor side: the frames it answers, queued for its writer, which follows the
/// subscription itself (see `outgoing`).
pub(crate) struct Monitoring<R> {
    hub: Arc<Hub>,
    out: mpsc::Sender<Queued<R>>,
    render: Render<R>,
}

impl<R: Send + 'static> Monitoring<R> {
    pub(crate) fn new(hub: Arc<Hub>, out: mpsc::Sender<Queued<R>>, render: Render<R>) -> Self {
        Self { hub, out, render }
    }

    /// Answers `frame` if it is `ping`, `subscribe`, `unsubscribe`, or `admin` when `admin`
    /// is allowed; gives it back otherwise. `Ok(false)`: the connection is gone.
    pub(crate) async fn handle(
        &mut self,
        frame: ClientFrame,
        reference: &Option<Value>,
        admin: bool,
    ) -> Result<bool, ClientFrame> {
        let r = reference.as_ref();
        let sent = match frame {
            ClientFrame::Ping => {
                let pong = ServerFrame::Pong { time: now_text() };
                self.reply(pong, r).await
            }
            // A client subscribing again and again without reading would queue a snapshot
            // each time.
            ClientFrame::Subscribe(_) if self.backlogged() => {
                let msg = "replies are not being read; subscribe again once they are";
                self.reply(error(ErrorCode::Overloaded, msg), r).await
            }
            ClientFrame::Subscribe(sub) => {
                if !self.queue(Queued::Unsubscribe).await {
                    return Ok(false);
                }
                match self.hub.subscribe(sub).await {
                    Ok(stream) => {
                        // The ack goes first, then the stream's frames.
                        if reference.is_some() && !self.reply(ServerFrame::Ack, r).await {
                            return Ok(false);
                        }
                        self.queue(Queued::Subscribe(Box::new(stream))).await
                    }
                    Err((code, msg)) => self.reply(error(code, &msg), r).await,
                }
            }
            ClientFrame::Unsubscribe => {
                // No frame of the subscription is written after its ack.
                let ended = self.queue(Queued::Unsubscribe).await;
                match reference.is_some() {
                    true => ended && self.reply(ServerFrame::Ack, r).await,
                    false => ended,
                }
            }
            ClientFrame::Admin(a) if admin => match admin_op(&self.hub, &a.op, a.args).await {
                Ok(data) => {
                    let result = ServerFrame::Result { ok: true, data };
                    self.reply(result, r).await
                }
                Err((code, msg)) => self.reply(error(code, &msg), r).await,
            },
            other => return Err(other),
        };
        Ok(sent)
    }

    /// Ends the subscription now if the queue has room (the connection is closing, and its
    /// writer stops once the queue is closed and empty).
    pub(crate) fn end(&mut self) {
        let _ = self.out.try_send(Queued::Unsubscribe);
    }

    /// Queues a reply; `false` when the connection is gone.
    async fn reply(&self, frame: ServerFrame<'_>, reference: Option<&Value>) -> bool {
        self.queue(Queued::Reply((self.render)(frame, reference)))
            .await
    }

    async fn queue(&self, queued: Queued<R>) -> bool {
        self.out.send(queued).await.is_ok()
    }

    /// Whether half of the queue is unread.
    fn backlogged(&self) -> bool {
        self.out.capacity() < self.out.max_capacity() / 2
    }
}

fn error(code: ErrorCode, message: &str) -> ServerFrame<'static> {
    ServerFrame::Error {
        code,
        message: message.to_string(),
    }
}
