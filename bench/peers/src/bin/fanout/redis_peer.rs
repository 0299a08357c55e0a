//! Redis pub/sub: each subscriber on a connection of its own (`SUBSCRIBE k<c>`), the publisher
//! on one multiplexed connection sending each tick's events as one pipeline of `PUBLISH`.

use anyhow::Context;
use futures::StreamExt;

use super::common::{channel_of, Ctx, Seen, Sink};

/// Connects subscriber `i` and subscribes it to its channel; returns once Redis has confirmed
/// the subscription (so no event published after it is missed), with the task that receives.
pub async fn subscriber(
    client: redis::Client,
    i: usize,
    channels: usize,
    ctx: Ctx,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<Seen>>> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .with_context(|| format!("subscriber {i}: connecting to Redis"))?;
    let channel = channel_of(i, channels);
    pubsub
        .subscribe(&channel)
        .await
        .with_context(|| format!("subscriber {i}: SUBSCRIBE {channel}"))?;
    Ok(async move {
        let mut messages = pubsub.into_on_message();
        let (mut seen, mut stop) = (Seen::default(), ctx.stop.clone());
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(seen),
                m = messages.next() => match m {
                    Some(m) => seen.note(
                        m.get_payload_bytes(),
                        ctx.recording.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                    // Redis closes a subscriber's connection when its output buffer passes
                    // `client-output-buffer-limit pubsub` (it cannot keep up): a failure here.
                    None => anyhow::bail!(
                        "subscriber {i}: Redis closed its connection before the end (a \
                         subscriber too slow for client-output-buffer-limit pubsub is dropped)"
                    ),
                },
            }
        }
    })
}

/// The publisher's connection.
pub struct Publisher {
    con: redis::aio::MultiplexedConnection,
}

impl Publisher {
    pub async fn connect(client: &redis::Client) -> anyhow::Result<Self> {
        let con = client
            .get_multiplexed_async_connection()
            .await
            .context("the publisher: connecting to Redis")?;
        Ok(Publisher { con })
    }
}

impl Sink for Publisher {
    async fn send(&mut self, batch: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        pipe.query_async::<()>(&mut self.con)
            .await
            .context("the publisher: PUBLISH pipeline")
    }
}
