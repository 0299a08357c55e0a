//! The frames every monitor surface answers the same way — `ping`, `subscribe`, `unsubscribe`
//! and `admin` — handled once, for the TCP listener and the WebSocket alike. Each surface
//! gives an [`Outbox`] (its writer's queue) and keeps what is its own: the handshake, the
//! agents' frames, who may send `admin`.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::protocol::{ClientFrame, ErrorCode, ServerFrame};
use crate::serve::admin::admin_op;
use crate::serve::hub::{now_text, Hub, MonitorFrame};

/// Where a session's replies and stream frames go: its writer's bounded queue.
pub(crate) trait Outbox: Clone + Send + Sync + 'static {
    /// Queues a reply; `false` when the connection is gone.
    fn reply(
        &self,
        frame: ServerFrame,
        reference: Option<&Value>,
    ) -> impl Future<Output = bool> + Send;
    /// Queues a frame of the subscription (shared by every subscriber of its event).
    fn frame(&self, frame: MonitorFrame) -> impl Future<Output = bool> + Send;
    /// Whether half of the queue is unread (a client subscribing again and again without
    /// reading would queue a snapshot each time).
    fn backlogged(&self) -> bool;
}

/// A session's monitor side: its subscription, and the frames it answers.
pub(crate) struct Monitoring<O: Outbox> {
    hub: Arc<Hub>,
    out: O,
    /// The task that forwards the subscription's frames to the writer.
    subscription: Option<JoinHandle<()>>,
}

impl<O: Outbox> Monitoring<O> {
    pub(crate) fn new(hub: Arc<Hub>, out: O) -> Self {
        Self {
            hub,
            out,
            subscription: None,
        }
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
                self.out.reply(pong, r).await
            }
            ClientFrame::Subscribe(_) if self.out.backlogged() => {
                let msg = "replies are not being read; subscribe again once they are";
                self.out.reply(error(ErrorCode::Overloaded, msg), r).await
            }
            ClientFrame::Subscribe(sub) => {
                self.stop().await;
                match self.hub.subscribe(sub).await {
                    Ok(stream) => {
                        // The ack goes first, then the stream's frames.
                        if reference.is_some() && !self.out.reply(ServerFrame::Ack, r).await {
                            return Ok(false);
                        }
                        let out = self.out.clone();
                        self.subscription = Some(tokio::spawn(stream.run(move |f| {
                            let out = out.clone();
                            async move { out.frame(f).await }
                        })));
                        true
                    }
                    Err((code, msg)) => self.out.reply(error(code, &msg), r).await,
                }
            }
            ClientFrame::Unsubscribe => {
                self.stop().await;
                match reference.is_some() {
                    true => self.out.reply(ServerFrame::Ack, r).await,
                    false => true,
                }
            }
            ClientFrame::Admin(a) if admin => match admin_op(&self.hub, &a.op, a.args).await {
                Ok(data) => {
                    let result = ServerFrame::Result { ok: true, data };
                    self.out.reply(result, r).await
                }
                Err((code, msg)) => self.out.reply(error(code, &msg), r).await,
            },
            other => return Err(other),
        };
        Ok(sent)
    }

    /// Ends the subscription at once (the connection is closing).
    pub(crate) fn end(&mut self) {
        if let Some(task) = self.subscription.take() {
            task.abort();
        }
    }

    /// Ends the subscription; none of its frames is queued after this returns.
    async fn stop(&mut self) {
        if let Some(task) = self.subscription.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl<O: Outbox> Drop for Monitoring<O> {
    /// A connection cut at shutdown never says it closed: its subscription ends here.
    fn drop(&mut self) {
        self.end();
    }
}

fn error(code: ErrorCode, message: &str) -> ServerFrame<'static> {
    ServerFrame::Error {
        code,
        message: message.to_string(),
    }
}
