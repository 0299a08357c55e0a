//! A monitor connection's outgoing side: one bounded queue of its replies, and the frames of
//! its subscription, both read by the connection's one writer task.
//!
//! The writer polls the subscription itself: no task stands between the broadcaster and the
//! socket, so a delivery costs one wake-up, and whatever is waiting (replies and events) goes
//! out in one write. Replies and subscription changes share the queue, so they keep their
//! order: the frames of a subscription that ended are never written after the reply that
//! says so, and a new subscription's frames come after its `ack`.

use futures::FutureExt;
use tokio::sync::mpsc;

use crate::serve::hub::{MonitorFrame, MonitorStream};

/// What a session queues for its writer.
pub(crate) enum Queued<R> {
    /// A reply of the session's own, ready to write.
    Reply(R),
    /// The subscription whose frames follow (replacing any before it).
    Subscribe(Box<MonitorStream>),
    /// The subscription ends here.
    Unsubscribe,
}

impl<R> From<R> for Queued<R> {
    fn from(reply: R) -> Self {
        Queued::Reply(reply)
    }
}

/// What the writer writes next.
pub(crate) enum Outgoing<R> {
    Reply(R),
    Frame(MonitorFrame),
}

/// What woke the writer.
enum Woken<R> {
    Queue(Option<Queued<R>>),
    Stream(Option<MonitorFrame>),
}

/// The writer's end: the queue, and the subscription it follows.
pub(crate) struct Outbound<R> {
    rx: mpsc::Receiver<Queued<R>>,
    stream: Option<Box<MonitorStream>>,
}

impl<R> Outbound<R> {
    pub(crate) fn new(rx: mpsc::Receiver<Queued<R>>) -> Self {
        Self { rx, stream: None }
    }

    /// Waits for the next thing to write; `None` once the session has dropped its end of the
    /// queue and everything in it was taken. Replies go before stream frames when both wait.
    pub(crate) async fn next(&mut self) -> Option<Outgoing<R>> {
        loop {
            let woken = match &mut self.stream {
                None => Woken::Queue(self.rx.recv().await),
                Some(stream) => tokio::select! {
                    biased;
                    queued = self.rx.recv() => Woken::Queue(queued),
                    frame = stream.next() => Woken::Stream(frame),
                },
            };
            let out = match woken {
                Woken::Queue(queued) => self.take(queued?),
                Woken::Stream(frame) => self.frame(frame),
            };
            if out.is_some() {
                return out;
            }
        }
    }

    /// The next thing to write if one is waiting now, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Outgoing<R>> {
        loop {
            if let Ok(queued) = self.rx.try_recv() {
                match self.take(queued) {
                    Some(out) => return Some(out),
                    None => continue,
                }
            }
            // Cancel safe: the stream's `next` takes nothing it does not return.
            let frame = self.stream.as_mut()?.next().now_or_never()?;
            if let Some(out) = self.frame(frame) {
                return Some(out);
            }
        }
    }

    fn take(&mut self, queued: Queued<R>) -> Option<Outgoing<R>> {
        match queued {
            Queued::Reply(r) => return Some(Outgoing::Reply(r)),
            Queued::Subscribe(stream) => self.stream = Some(stream),
            Queued::Unsubscribe => self.stream = None,
        }
        None
    }

    /// A frame of the stream (`None`: it has ended, and is dropped).
    fn frame(&mut self, frame: Option<MonitorFrame>) -> Option<Outgoing<R>> {
        match frame {
            Some(f) => {
                if f.last {
                    self.stream = None;
                }
                Some(Outgoing::Frame(f))
            }
            None => {
                self.stream = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;
    use vigil_actors::{AgentId, MemStore, Registration, Runtime, RuntimeConfig};

    use super::{Outbound, Outgoing, Queued};
    use crate::serve::hub::Hub;

    const WAIT: Duration = Duration::from_secs(10);

    fn seq_of(out: Option<Outgoing<&'static str>>) -> Result<u64, String> {
        match out {
            Some(Outgoing::Frame(f)) => f.seq.ok_or_else(|| format!("a {} frame", f.kind)),
            Some(Outgoing::Reply(r)) => Err(format!("the reply {r:?}")),
            None => Err("the end".into()),
        }
    }

    async fn register(rt: &Runtime, id: &str) {
        let id = AgentId::new(id).expect("a valid id");
        rt.register_sequenced(Registration::new(id))
            .await
            .expect("registered");
    }

    #[tokio::test]
    async fn a_subscription_follows_its_ack_and_writes_nothing_after_it_ends() {
        let rt = Arc::new(
            Runtime::start(RuntimeConfig::default(), MemStore::new())
                .await
                .expect("a runtime"),
        );
        let hub = Hub::new(rt.clone(), Duration::from_secs(60));
        let (tx, rx) = mpsc::channel::<Queued<&'static str>>(16);
        let mut outbound = Outbound::new(rx);

        let sub = serde_json::from_value(serde_json::json!({"topics": ["agents"]}))
            .expect("a subscribe frame");
        let stream = hub.subscribe(sub).await.expect("subscribed");
        tx.send("ack".into()).await.expect("queued");
        tx.send(Queued::Subscribe(Box::new(stream)))
            .await
            .expect("queued");
        register(&rt, "a").await;
        register(&rt, "b").await;

        let first = tokio::time::timeout(WAIT, outbound.next())
            .await
            .expect("in time");
        assert!(
            matches!(first, Some(Outgoing::Reply("ack"))),
            "the ack first"
        );
        for want in [1, 2] {
            let out = tokio::time::timeout(WAIT, outbound.next())
                .await
                .expect("in time");
            assert_eq!(seq_of(out), Ok(want));
        }

        // Ended: the events after it are published, but none is written, not even by a
        // writer draining what waits without waiting.
        tx.send(Queued::Unsubscribe).await.expect("queued");
        tx.send("ended".into()).await.expect("queued");
        register(&rt, "c").await;
        let mut watch = rt
            .subscribe(vigil_actors::SubscribeOptions {
                since: Some(2),
                ..Default::default()
            })
            .await
            .expect("subscribed");
        tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("seq 3 published in time")
            .expect("an item");
        assert!(matches!(
            outbound.try_next(),
            Some(Outgoing::Reply("ended"))
        ));
        assert!(outbound.try_next().is_none(), "a frame after the end");
        drop(tx);
        let end = tokio::time::timeout(WAIT, outbound.next())
            .await
            .expect("in time");
        assert!(end.is_none(), "a frame after the end");
    }
}
