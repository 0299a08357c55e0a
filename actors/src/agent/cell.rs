//! `AgentCell`: what an agent's actor shares with the outside, so that a heartbeat that can
//! change nothing never becomes an actor message (the fast path).
//!
//! The protocol between a beat and the actor (both sides use `SeqCst`):
//! - a beat stamps `last_seen` (`fetch_max`), then reads `fast`; if `fast` is still set the
//!   beat is done, otherwise it is sent to the actor as a message marked `stamped`;
//! - the actor clears `fast` before it reads the stamp and decides anything, and sets it again
//!   afterwards only if a beat can change nothing (online, healthy, no restart grace).
//!
//! So every beat is either seen by the actor through the stamp or arrives as a message; a beat
//! seen both ways is recognised by its stamp and counted once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use ractor::ActorRef;
use tokio::time::Instant;

use crate::agent::AgentMsg;
use crate::model::{AgentId, Metrics, Reported};
use crate::rules::lag::BeatSource;

/// The shared half of one supervised agent.
#[derive(Debug)]
pub(crate) struct AgentCell {
    pub(crate) id: AgentId,
    /// The runtime clock's epoch: stamps are nanoseconds since it, plus one.
    base: Instant,
    stamp: AtomicU64,
    fast: AtomicBool,
    connected: AtomicBool,
    reported: AtomicU8,
    timer_gen: AtomicU64,
    own_interval_ms: AtomicU64,
    /// A hash of the last activity sent to the registry (0: none): an unchanged activity on
    /// every heartbeat stops here instead of reaching the one sequencer.
    activity: AtomicU64,
    /// The incarnation of the latest registration (0 until one is answered): a handle of an
    /// older one is stale.
    incarnation: AtomicU64,
    metrics: Mutex<Option<Metrics>>,
    kind: RwLock<Arc<str>>,
    actor: RwLock<Option<ActorRef<AgentMsg>>>,
    /// The input the beats of a registration (by its incarnation) come in by.
    source: RwLock<Option<(u64, Arc<dyn BeatSource>)>>,
}

impl AgentCell {
    /// Records `activity` as the last one reported; false when it is the same as before.
    pub(crate) fn activity_changed(&self, activity: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        activity.hash(&mut h);
        let h = h.finish().max(1);
        self.activity.swap(h, SeqCst) != h
    }

    pub(crate) fn new(id: AgentId, kind: Arc<str>, base: Instant) -> Arc<Self> {
        Arc::new(Self {
            id,
            base,
            stamp: AtomicU64::new(0),
            fast: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            reported: AtomicU8::new(0),
            timer_gen: AtomicU64::new(0),
            own_interval_ms: AtomicU64::new(0),
            activity: AtomicU64::new(0),
            incarnation: AtomicU64::new(0),
            metrics: Mutex::new(None),
            kind: RwLock::new(kind),
            actor: RwLock::new(None),
            source: RwLock::new(None),
        })
    }

    pub(crate) fn id(&self) -> &AgentId {
        &self.id
    }

    /// The fast path: stamps a healthy beat at `at`. True when the beat is fully handled;
    /// false when it must be sent to the actor (as `stamped`).
    pub(crate) fn try_fast_beat(&self, at: Instant) -> bool {
        if !self.fast.load(SeqCst) {
            return false;
        }
        self.stamp.fetch_max(stamp(self.base, at), SeqCst);
        self.fast.load(SeqCst)
    }

    /// Actor side: closes the fast path and returns the latest stamp.
    pub(crate) fn close_fast(&self) -> Option<Instant> {
        self.fast.store(false, SeqCst);
        from_stamp(self.base, self.stamp.load(SeqCst))
    }

    pub(crate) fn open_fast(&self, open: bool) {
        self.fast.store(open, SeqCst);
    }

    pub(crate) fn record_seen(&self, at: Instant) {
        self.stamp.fetch_max(stamp(self.base, at), SeqCst);
    }

    /// The latest beat, fast or not.
    pub(crate) fn last_seen(&self) -> Option<Instant> {
        from_stamp(self.base, self.stamp.load(SeqCst))
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.load(SeqCst)
    }

    pub(crate) fn set_connected(&self, c: bool) {
        self.connected.store(c, SeqCst);
    }

    pub(crate) fn reported(&self) -> Reported {
        match self.reported.load(SeqCst) {
            1 => Reported::Degraded,
            2 => Reported::Unhealthy,
            _ => Reported::Healthy,
        }
    }

    pub(crate) fn set_reported(&self, r: Reported) {
        let v = match r {
            Reported::Healthy => 0,
            Reported::Degraded => 1,
            Reported::Unhealthy => 2,
        };
        self.reported.store(v, SeqCst);
    }

    pub(crate) fn set_metrics(&self, m: Metrics) {
        *self.metrics.lock() = Some(m);
    }

    pub(crate) fn metrics(&self) -> Option<Metrics> {
        self.metrics.lock().clone()
    }

    pub(crate) fn kind(&self) -> Arc<str> {
        self.kind.read().clone()
    }

    pub(crate) fn set_kind(&self, kind: &str) {
        *self.kind.write() = Arc::from(kind);
    }

    /// The heartbeat interval the agent asked for, if any.
    pub(crate) fn own_interval(&self) -> Option<std::time::Duration> {
        let ms = self.own_interval_ms.load(SeqCst);
        (ms != 0).then(|| std::time::Duration::from_millis(ms))
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation.load(SeqCst)
    }

    /// A registration was answered with `n`: handles of earlier ones are stale from now on.
    pub(crate) fn set_incarnation(&self, n: u64) {
        self.incarnation.fetch_max(n, SeqCst);
    }

    pub(crate) fn set_own_interval(&self, i: Option<std::time::Duration>) {
        self.own_interval_ms
            .store(i.map_or(0, |d| d.as_millis().max(1) as u64), SeqCst);
    }

    pub(crate) fn timer_gen(&self) -> u64 {
        self.timer_gen.load(SeqCst)
    }

    pub(crate) fn next_timer_gen(&self) -> u64 {
        self.timer_gen.fetch_add(1, SeqCst) + 1
    }

    /// The beats of registration `incarnation` come in by `source` (a source of an earlier
    /// registration than the one attached is ignored).
    pub(crate) fn set_source(&self, incarnation: u64, source: Arc<dyn BeatSource>) {
        let mut current = self.source.write();
        if current.as_ref().is_none_or(|(n, _)| *n <= incarnation) {
            *current = Some((incarnation, source));
        }
    }

    /// Whether the agent's connection has not yet applied all it received by `at`: a beat may
    /// be waiting there. False when the agent is disconnected, or its latest registration has
    /// no source.
    pub(crate) fn input_behind(&self, at: Instant) -> bool {
        if !self.connected() {
            return false;
        }
        match &*self.source.read() {
            Some((n, source)) if *n == self.incarnation() => !source.applied_through(at),
            _ => false,
        }
    }

    pub(crate) fn actor(&self) -> Option<ActorRef<AgentMsg>> {
        self.actor.read().clone()
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<AgentMsg>>) {
        *self.actor.write() = actor;
    }
}

fn stamp(base: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(base).as_nanos() as u64 + 1
}

fn from_stamp(base: Instant, stamp: u64) -> Option<Instant> {
    (stamp != 0).then(|| base + std::time::Duration::from_nanos(stamp - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_changed_activity_goes_on() {
        let cell = AgentCell::new(
            AgentId::new("a").expect("valid id"),
            Arc::from("k"),
            Instant::now(),
        );
        assert!(cell.activity_changed("idle"), "the first report");
        assert!(
            !cell.activity_changed("idle"),
            "the same again stops at the edge"
        );
        assert!(cell.activity_changed("busy"));
        assert!(cell.activity_changed("idle"));
    }
}
