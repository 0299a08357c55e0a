//! What every monitor surface shares (TCP monitors, WebSocket, SSE): turning a `subscribe`
//! request into a core subscription, and its items into the protocol's frames; the `stats`
//! frames; and the counters `/metrics` and `stats` report. It also holds the table of which
//! agents are held by what (`owners`), which the TCP and HTTP listeners share.
//!
//! An event's frame is the same for every subscriber, so it is serialized once per event (a
//! small cache keyed by seq) and shared, not once per subscriber. `stats` frames are computed
//! by one task per [`Hub`] (see `stats`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::warn;
use vigil_actors::{
    AgentRecord, Event, EventKind, Runtime, SubscribeOptions, Subscription, SubscriptionItem,
};

use crate::protocol::{self, ErrorCode, ServerFrame};
use crate::serve::owners::Owners;

mod stats;
pub(crate) use stats::now_text;
pub use stats::LatestStats;

/// Events whose frames are kept for reuse (a power of two).
const LINE_SLOTS: usize = 4096;

/// One event's frame, by seq.
type LineSlot = Mutex<Option<(u64, FrameText)>>;

/// A frame's text as every subscriber of it shares it: UTF-8 in a reference-counted buffer,
/// written by the TCP listener as bytes and sent by the WebSocket as a text message, neither
/// copying it.
pub type FrameText = axum::extract::ws::Utf8Bytes;

/// How a node reaches the other nodes of its cluster.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// The admin token it presents (the first of its own `[auth]` admin tokens).
    pub token: Option<String>,
    /// TLS, when the listeners take it: the trusted roots (`server_name` unused).
    pub tls: Option<crate::client::ClientTls>,
    /// The name their certificates carry; default: the host of their advertised address.
    pub name: Option<String>,
}

/// Shared by every monitor surface of one runtime.
pub struct Hub {
    rt: Arc<Runtime>,
    lines: Box<[LineSlot]>,
    stats: watch::Receiver<Option<Arc<LatestStats>>>,
    /// The task computing `stats` frames (it ends with the hub).
    stats_task: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// TCP connections open now (the listener keeps it).
    pub tcp_connections: AtomicU64,
    /// Frames received over TCP (the listener keeps it).
    pub frames: AtomicU64,
    /// Heartbeats taken: over TCP (among `frames`) and over HTTP (the listeners keep it).
    pub heartbeats: AtomicU64,
    /// On a cluster node: times this process was fenced and joined again (main sets it).
    pub rejoins: AtomicU64,
    /// How this node reaches the other nodes of its cluster (see `forward`).
    peers: std::sync::OnceLock<Peers>,
    /// WebSocket and SSE streams open now.
    pub http_streams: AtomicU64,
    /// Subscriptions of remote monitors open now.
    pub subscribers: AtomicU64,
    /// Subscriptions ended by `lagged` since the start.
    pub lagged: AtomicU64,
    /// Which agents a TCP connection holds, and the handles of those registered over HTTP.
    pub(crate) owners: Owners,
    /// Bounds the activity and job reports of agents held by no connection (over HTTP, or
    /// forwarded by another node) that wait for the registry, as each TCP connection's do.
    pub(crate) reports: vigil_actors::ReportQuota,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.stats_task.get() {
            task.abort();
        }
    }
}

/// Counts something open (a connection, a stream) in one of the hub's counters while it
/// lives.
pub struct Open {
    hub: Arc<Hub>,
    counter: fn(&Hub) -> &AtomicU64,
}

impl Open {
    /// Counts one more in `counter` of `hub`, until the returned value is dropped.
    pub fn new(hub: &Arc<Hub>, counter: fn(&Hub) -> &AtomicU64) -> Self {
        counter(hub).fetch_add(1, Ordering::Relaxed);
        Self {
            hub: hub.clone(),
            counter,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        (self.counter)(&self.hub).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which frames a subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topics {
    /// Agent events: `registered`, `transition`, `activity`, `deregistered`.
    pub agents: bool,
    /// Job events.
    pub jobs: bool,
    /// `stats` frames (the latest counts, on a change).
    pub stats: bool,
    /// Alert events.
    pub alerts: bool,
}

/// A subscription turned into frames.
pub struct MonitorStream {
    hub: Arc<Hub>,
    sub: Option<Subscription>,
    topics: Topics,
    stats: watch::Receiver<Option<Arc<LatestStats>>>,
}

/// One frame for a monitor, without its line ending.
#[derive(Debug, Clone)]
pub struct MonitorFrame {
    /// The frame's JSON.
    pub text: FrameText,
    /// The frame's type (`event`, `snapshot`, `stats`, `lagged`, `resync_required`).
    pub kind: &'static str,
    /// The event's seq (for a snapshot: the seq it is as of).
    pub seq: Option<u64>,
    /// The subscription ends after this frame.
    pub last: bool,
}

impl Hub {
    /// A hub for `rt`, computing `stats` frames at most once per `stats_interval`.
    pub fn new(rt: Arc<Runtime>, stats_interval: Duration) -> Arc<Self> {
        let (tx, rx) = watch::channel(None);
        let owners = Owners::new(&rt);
        let hub = Arc::new(Hub {
            rt,
            lines: (0..LINE_SLOTS).map(|_| Mutex::new(None)).collect(),
            stats: rx,
            stats_task: std::sync::OnceLock::new(),
            tcp_connections: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
            peers: std::sync::OnceLock::new(),
            http_streams: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            owners,
            reports: vigil_actors::ReportQuota::new(crate::serve::tcp::MAX_QUEUED_REPORTS),
        });
        // Spawned once the hub exists: the task holds it weakly (it ends with the hub), and a
        // task that ran before the hub was whole would find nothing to count.
        let task = stats::spawn(Arc::downgrade(&hub), stats_interval, tx);
        let _ = hub.stats_task.set(task.abort_handle());
        hub
    }

    /// The runtime the hub serves.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// Sets how this node reaches the other nodes of its cluster when it forwards an admin
    /// write to the agent's owner (the first set is kept).
    pub fn set_peers(&self, peers: Peers) {
        let _ = self.peers.set(peers);
    }

    pub(crate) fn peers(&self) -> Option<&Peers> {
        self.peers.get()
    }

    /// The latest `stats` frame, if one has been computed.
    pub fn latest_stats(&self) -> Option<Arc<LatestStats>> {
        self.stats.borrow().clone()
    }

    /// An event's frame, serialized once and shared by every subscriber.
    pub fn event_line(&self, e: &Event) -> Option<FrameText> {
        let slot = &self.lines[(e.seq as usize) & (LINE_SLOTS - 1)];
        if let Some((seq, text)) = &*slot.lock() {
            if *seq == e.seq {
                return Some(text.clone());
            }
        }
        let text: FrameText = match ServerFrame::event_text(e) {
            Ok(t) => t.into(),
            Err(err) => {
                warn!(error = %err, seq = e.seq, "an event could not be serialized");
                return None;
            }
        };
        *slot.lock() = Some((e.seq, text.clone()));
        Some(text)
    }

    /// Starts a subscription as a `subscribe` frame asks; the error is the protocol's.
    pub async fn subscribe(
        self: &Arc<Self>,
        req: protocol::Subscribe,
    ) -> Result<MonitorStream, (ErrorCode, String)> {
        let (opts, topics) = options(req)?;
        // Only `stats`: no events, so no subscription in the core.
        let sub = match topics.agents || topics.jobs || topics.alerts {
            true => Some(
                self.rt
                    .subscribe(opts)
                    .await
                    .map_err(|e| (ErrorCode::from(&e), e.to_string()))?,
            ),
            false => None,
        };
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        // The first stats frame is the current one.
        let mut stats = self.stats.clone();
        stats.mark_changed();
        Ok(MonitorStream {
            hub: self.clone(),
            sub,
            topics,
            stats,
        })
    }
}

/// A `subscribe` frame's topics and filter as the core's options.
pub fn options(
    req: protocol::Subscribe,
) -> Result<(SubscribeOptions, Topics), (ErrorCode, String)> {
    let mut filter = req.filter;
    let mut topics = Topics {
        agents: true,
        jobs: true,
        stats: false,
        alerts: true,
    };
    if let Some(names) = &req.topics {
        topics = Topics {
            agents: false,
            jobs: false,
            stats: false,
            alerts: false,
        };
        for t in names {
            match t.as_str() {
                "agents" => topics.agents = true,
                "jobs" => topics.jobs = true,
                "stats" => topics.stats = true,
                "alerts" => topics.alerts = true,
                other => {
                    let shown: String = other.chars().take(64).collect();
                    return Err((
                        ErrorCode::InvalidField,
                        format!("unknown topic {shown:?} (agents, jobs, stats, alerts)"),
                    ));
                }
            }
        }
        let mut kinds = Vec::new();
        if topics.agents {
            kinds.extend([
                EventKind::Registered,
                EventKind::Transition,
                EventKind::Activity,
                EventKind::Deregistered,
            ]);
        }
        if topics.jobs {
            kinds.push(EventKind::Job);
        }
        if topics.alerts {
            kinds.push(EventKind::Alert);
        }
        filter.events = kinds;
    }
    Ok((
        SubscribeOptions {
            filter,
            since: req.since,
            snapshot: req.snapshot,
        },
        topics,
    ))
}

impl MonitorStream {
    /// The next frame; `None` when the subscription has ended.
    pub async fn next(&mut self) -> Option<MonitorFrame> {
        loop {
            tokio::select! {
                item = next_item(&mut self.sub) => return self.frame(item?),
                changed = self.stats.changed(), if self.topics.stats => {
                    if changed.is_err() {
                        self.topics.stats = false;
                        continue;
                    }
                    let Some(stats) = self.stats.borrow_and_update().clone() else { continue };
                    return Some(MonitorFrame {
                        text: stats.frame.clone(),
                        kind: "stats",
                        seq: None,
                        last: false,
                    });
                }
            }
        }
    }

    fn frame(&self, item: SubscriptionItem) -> Option<MonitorFrame> {
        Some(match item {
            SubscriptionItem::Event(e) => MonitorFrame {
                text: self.hub.event_line(&e)?,
                kind: "event",
                seq: Some(e.seq),
                last: false,
            },
            SubscriptionItem::Snapshot(s) => {
                let jobs = match self.topics.jobs {
                    true => open_jobs(&s.agents),
                    false => vec![],
                };
                // The counts of the latest `stats` frame (and its `at`).
                let stats = self
                    .hub
                    .latest_stats()
                    .map(|s| s.counts.clone())
                    .unwrap_or_else(|| json!({}));
                let frame = ServerFrame::Snapshot {
                    seq: s.seq,
                    agents: Cow::Borrowed(&s.agents),
                    jobs,
                    stats,
                };
                MonitorFrame {
                    text: frame.text(None).into(),
                    kind: "snapshot",
                    seq: Some(s.seq),
                    last: false,
                }
            }
            SubscriptionItem::Lagged { last_seq } => {
                self.hub.lagged.fetch_add(1, Ordering::Relaxed);
                MonitorFrame {
                    text: ServerFrame::Lagged { last_seq }.text(None).into(),
                    kind: "lagged",
                    seq: None,
                    last: true,
                }
            }
            SubscriptionItem::ResyncRequired { oldest } => MonitorFrame {
                text: ServerFrame::ResyncRequired { oldest }.text(None).into(),
                kind: "resync_required",
                seq: None,
                last: true,
            },
        })
    }
}

impl Drop for MonitorStream {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The subscription's next item; never, without one (a `stats`-only monitor).
async fn next_item(sub: &mut Option<Subscription>) -> Option<SubscriptionItem> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Every unfinished job of these agents, as a snapshot lists them.
fn open_jobs(agents: &[AgentRecord]) -> Vec<Value> {
    agents
        .iter()
        .flat_map(|a| {
            a.jobs.iter().map(move |(job, j)| {
                json!({"agent": a.id, "job": job, "state": j.state, "progress": j.progress})
            })
        })
        .collect()
}
