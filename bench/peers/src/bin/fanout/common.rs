//! What the two peers share: the event payload, what a subscriber notes of each message, the
//! publisher's pacing, and the figures (quantiles, CPU time, the machine).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::watch;

/// What the subscribers and the publisher are told while they run.
#[derive(Clone)]
pub struct Ctx {
    /// Set for the measured window: subscribers record delays only while it is.
    pub recording: Arc<AtomicBool>,
    /// Turns true when the run is over: every task returns what it has.
    pub stop: watch::Receiver<bool>,
}

/// The channel (NATS: subject) subscriber `i` follows, as vigil's monitor `i` follows kind
/// `k{i mod kinds}`.
pub fn channel_of(i: usize, channels: usize) -> String {
    format!("k{}", i % channels.max(1))
}

/// The wall clock, µs since the epoch: the publisher stamps each event with it, and a
/// subscriber's delay is its own reading at receipt minus the stamp (one machine, one clock).
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One event: a JSON object with its channel, its sequence number on that channel and the
/// publish time (µs since the epoch), padded to `size` bytes with a `pad` string, so that the
/// peers carry about as many bytes as a vigil event frame.
pub fn payload(kind: &str, seq: u64, at_us: u64, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"type":"event","kind":"{kind}","seq":{seq},"at_us":{at_us},"pad":""#);
    let tail = b"\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut v = Vec::with_capacity(head.len() + pad + tail.len());
    v.extend_from_slice(head.as_bytes());
    v.resize(v.len() + pad, b'.');
    v.extend_from_slice(tail);
    v
}

/// The fields of an event a subscriber looks at (the others, `pad` included, are skipped by
/// the parser, as vigil's monitors skip the rest of a frame).
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    seq: u64,
    at_us: u64,
}

/// The seq and stamp of an event, read from its head as [`payload`] writes it, without
/// parsing the rest (vigil's monitors read a frame's head the same way); anything else goes to
/// the parser.
fn head(bytes: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(128))?).ok()?;
    let rest = text.strip_prefix(r#"{"type":"event","kind":""#)?;
    let (_kind, rest) = rest.split_once(r#"","seq":"#)?;
    let (seq, rest) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit())?);
    let rest = rest.strip_prefix(r#","at_us":"#)?;
    let at = &rest[..rest.find(|c: char| !c.is_ascii_digit())?];
    Some((seq.parse().ok()?, at.parse().ok()?))
}

/// What one subscriber saw.
#[derive(Default)]
pub struct Seen {
    /// The delay of each event received in the window, µs.
    pub late_us: Vec<u32>,
    /// Jumps in its channel's sequence (each one or more messages dropped, or out of order).
    pub gaps: u64,
    /// Messages the jumps skipped.
    pub dropped: u64,
    /// Messages that were not an event this benchmark published.
    pub unreadable: u64,
    /// The last sequence number seen (0: none yet).
    last: u64,
}

impl Seen {
    /// Notes one message. Every subscriber subscribed before the first event was published,
    /// so its stream must start at seq 1 and go up by one.
    pub fn note(&mut self, bytes: &[u8], recording: bool) {
        let (seq, at_us) = match head(bytes) {
            Some(h) => h,
            None => match serde_json::from_slice::<Head>(bytes) {
                Ok(h) if h.ty == "event" => (h.seq, h.at_us),
                _ => {
                    self.unreadable += 1;
                    return;
                }
            },
        };
        if seq != self.last + 1 {
            self.gaps += 1;
            self.dropped += seq.saturating_sub(self.last + 1);
        }
        self.last = seq;
        if recording {
            let late = wall_us().saturating_sub(at_us);
            self.late_us.push(late.min(u32::MAX as u64) as u32);
        }
    }
}

/// How a peer's publisher hands over one tick's events.
pub trait Sink: Send {
    /// Sends the events (channel, payload) and returns once the peer has taken them all
    /// (Redis: the pipeline's replies; NATS: the flush).
    fn send(
        &mut self,
        batch: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The publisher: every 1 ms tick, the events due by then (`rate` per second since the start,
/// so a late tick catches up), round robin over the channels, each with its channel's next
/// sequence number. Counts the events the peer took in `published`; returns at the stop.
pub async fn publish(
    mut sink: impl Sink,
    rate: u32,
    channels: usize,
    payload_bytes: usize,
    published: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let names: Vec<String> = (0..channels.max(1))
        .map(|c| channel_of(c, channels))
        .collect();
    let mut seq = vec![0u64; names.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (t0, mut sent, mut next) = (Instant::now(), 0u64, 0usize);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            _ = tick.tick() => {}
        }
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        let at_us = wall_us();
        let mut batch = Vec::with_capacity(due.saturating_sub(sent) as usize);
        while sent < due {
            let c = next % names.len();
            next += 1;
            seq[c] += 1;
            batch.push((
                names[c].clone(),
                payload(&names[c], seq[c], at_us, payload_bytes),
            ));
            sent += 1;
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        sink.send(batch).await?;
        published.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_size_and_reads_back() {
        let p = payload("k7", 42, 1_700_000_000_000_000, 330);
        assert_eq!(p.len(), 330);
        let mut seen = Seen {
            last: 41,
            ..Seen::default()
        };
        seen.note(&p, true);
        assert_eq!((seen.gaps, seen.unreadable, seen.late_us.len()), (0, 0, 1));
        // A jump of three: one gap, two messages dropped.
        seen.note(&payload("k7", 45, wall_us(), 330), false);
        assert_eq!((seen.gaps, seen.dropped, seen.late_us.len()), (1, 2, 1));
    }

    #[test]
    fn an_event_is_read_from_its_head_as_the_parser_reads_it() {
        let p = payload("k7", 42, 1_700_000_000_123_456, 300);
        assert_eq!(p.len(), 300);
        assert_eq!(head(&p), Some((42, 1_700_000_000_123_456)));
        let h: Head = serde_json::from_slice(&p).expect("JSON");
        assert_eq!((h.ty, h.seq, h.at_us), ("event", 42, 1_700_000_000_123_456));
        assert_eq!(
            head(br#"{"seq":1,"type":"event","kind":"k","at_us":5}"#),
            None
        );
    }
}
