//! NATS (core, no JetStream): each subscriber is a client of its own (one connection,
//! `SUB k<c>`); the publisher is one client that publishes each tick's events and flushes once.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;

use super::common::{channel_of, Ctx, Seen, Sink};

/// How long a subscriber may take to see its own readiness probe come back.
const PROBE_WAIT: Duration = Duration::from_secs(30);

/// Connects subscriber `i` and subscribes it to its channel; returns once the server has the
/// subscription in place, with the task that receives.
///
/// NATS does not acknowledge a `SUB`, and the client's flush only writes it out. So the
/// subscriber then subscribes to a subject of its own and publishes one probe to it on the same
/// connection: the server handles a connection's operations in order, so once the probe comes
/// back the channel's subscription is in place too.
pub async fn subscriber(
    endpoint: String,
    i: usize,
    channels: usize,
    ctx: Ctx,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<Seen>>> {
    let client = async_nats::connect(endpoint.as_str())
        .await
        .with_context(|| format!("subscriber {i}: connecting to NATS at {endpoint}"))?;
    let channel = channel_of(i, channels);
    let mut messages = client
        .subscribe(channel.clone())
        .await
        .with_context(|| format!("subscriber {i}: SUB {channel}"))?;
    let probe_subject = format!("vigil-bench.ready.{i}");
    let mut probe = client
        .subscribe(probe_subject.clone())
        .await
        .with_context(|| format!("subscriber {i}: SUB {probe_subject}"))?;
    client
        .publish(probe_subject, Bytes::new())
        .await
        .with_context(|| format!("subscriber {i}: publishing its readiness probe"))?;
    client.flush().await?;
    tokio::time::timeout(PROBE_WAIT, probe.next())
        .await
        .with_context(|| {
            format!("subscriber {i}: its readiness probe did not come back within {PROBE_WAIT:?}")
        })?
        .with_context(|| format!("subscriber {i}: the probe's subscription ended"))?;
    probe.unsubscribe().await?;
    Ok(async move {
        // The client (and with it the connection) lives as long as the subscription is read.
        let _client = client;
        let (mut seen, mut stop) = (Seen::default(), ctx.stop.clone());
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(seen),
                m = messages.next() => match m {
                    Some(m) => seen.note(
                        &m.payload,
                        ctx.recording.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                    None => anyhow::bail!("subscriber {i}: its NATS subscription ended before the end"),
                },
            }
        }
    })
}

/// The publisher's client.
pub struct Publisher {
    client: async_nats::Client,
}

impl Publisher {
    pub async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(endpoint)
            .await
            .with_context(|| format!("the publisher: connecting to NATS at {endpoint}"))?;
        Ok(Publisher { client })
    }
}

impl Sink for Publisher {
    async fn send(&mut self, batch: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        for (channel, payload) in batch {
            self.client
                .publish(channel, Bytes::from(payload))
                .await
                .context("the publisher: PUB")?;
        }
        self.client.flush().await.context("the publisher: flush")
    }
}
