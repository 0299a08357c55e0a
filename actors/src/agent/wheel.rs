//! The deadline wheel: one task per runtime that holds every agent's pending deadline.
//!
//! An agent actor arms one deadline at a time (tagged with a generation, so a stale one is
//! dropped). When a deadline falls the wheel first looks at the agent's heartbeat stamp: if a
//! beat moved a sliding deadline forward, the entry is re-queued for the new instant and the
//! actor hears nothing. Only a deadline that is really due becomes a `Tick` message. So a
//! healthy agent costs one wheel operation per interval and no actor message, and the wheel's
//! own lateness on waking is a measurement of the runtime's scheduling lag
//! (see [`crate::rules::lag`]). A deadline that is due waits while the agent's connection
//! has not applied what it received by then ([`crate::lag::BeatSource`]).

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::agent::cell::AgentCell;
use crate::agent::AgentMsg;
use crate::rules::lag::LagMonitor;

/// A request to wake an agent at `at`.
pub(crate) struct Arm {
    pub at: Instant,
    pub gen: u64,
    pub cell: Arc<AgentCell>,
    /// Set when the deadline is `last_seen + slide`: a newer stamp moves it forward.
    pub slide: Option<Duration>,
}

struct Entry {
    gen: u64,
    cell: Arc<AgentCell>,
    /// The deadline itself.
    at: Instant,
    /// `Arm::slide` in nanoseconds, 0 for none.
    slide_ns: u64,
}

/// Slots of the ring: 2^16 of 1 ms, a horizon of 65.5 s.
const SLOTS: usize = 1 << 16;
const TICK_NS: u128 = 1_000_000;
/// Emptied slots' vectors kept for reuse, and the most room one may keep (a burst's vector,
/// a whole fleet armed in one millisecond, goes back to the allocator).
const MAX_SPARE: usize = 64;
const MAX_SPARE_ROOM: usize = 1 << 14;

/// A hashed timing wheel of 1 ms slots: O(1) to insert and to take what is due, whatever the
/// number of agents (a binary heap of 100,000 entries cost a third of the server's CPU at
/// 300,000 beats/s, mostly in cache misses). An entry is placed in the slot of its wake time
/// rounded up, so it never fires early and at most 1 ms late. Entries beyond the 65.5 s
/// horizon wait in a heap and move into the ring as it comes near.
struct Timers<T> {
    epoch: Instant,
    /// The next tick to process; every entry in the ring has a tick in `done..done + SLOTS`.
    done: u64,
    slots: Vec<Vec<T>>,
    /// One bit per slot: not empty.
    bits: Vec<u64>,
    len: usize,
    far: BinaryHeap<FarOf<T>>,
    /// Emptied slots' vectors, kept for the next slot to fill: a slot is filled once per
    /// turn of the ring, so a vector left in each would hold the ring's whole horizon of
    /// room (gigabytes for a large fleet), and a fresh one per slot would take fresh pages
    /// from the system on every millisecond.
    spare: Vec<Vec<T>>,
}

struct FarOf<T>(u64, T);

impl<T> PartialEq for FarOf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for FarOf<T> {}
impl<T> PartialOrd for FarOf<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for FarOf<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.cmp(&self.0)
    }
}

impl<T> Timers<T> {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            done: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            bits: vec![0; SLOTS / 64],
            len: 0,
            far: BinaryHeap::new(),
            spare: Vec::new(),
        }
    }

    /// The tick of an instant, rounded up.
    fn tick_of(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.epoch).as_nanos();
        ns.div_ceil(TICK_NS) as u64
    }

    fn at_tick(&self, tick: u64) -> Instant {
        self.epoch + Duration::from_millis(tick)
    }

    fn insert(&mut self, wake: Instant, item: T) {
        let tick = self.tick_of(wake).max(self.done);
        self.insert_tick(tick, item);
    }

    fn insert_tick(&mut self, tick: u64, item: T) {
        if tick >= self.done + SLOTS as u64 {
            self.far.push(FarOf(tick, item));
            return;
        }
        let i = (tick % SLOTS as u64) as usize;
        let slot = &mut self.slots[i];
        if slot.capacity() == 0 {
            if let Some(v) = self.spare.pop() {
                *slot = v;
            }
        }
        slot.push(item);
        self.bits[i / 64] |= 1 << (i % 64);
        self.len += 1;
    }

    /// Room for entries the wheel holds, in entries (its memory, less the far heap's).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots
            .iter()
            .chain(&self.spare)
            .map(Vec::capacity)
            .sum()
    }

    /// The earliest tick holding anything.
    fn next_tick(&self) -> Option<u64> {
        let far = self.far.peek().map(|f| f.0);
        if self.len == 0 {
            return far;
        }
        let start = (self.done % SLOTS as u64) as usize;
        let words = SLOTS / 64;
        let mut w = start / 64;
        let mut mask = !0u64 << (start % 64);
        for _ in 0..=words {
            let hit = self.bits[w] & mask;
            if hit != 0 {
                let i = w * 64 + hit.trailing_zeros() as usize;
                let dist = (i + SLOTS - start) % SLOTS;
                let tick = self.done + dist as u64;
                return Some(far.map_or(tick, |f| f.min(tick)));
            }
            w = (w + 1) % words;
            mask = !0;
        }
        far
    }

    /// Takes every entry due at or before `now` into `out`.
    fn take_due(&mut self, now: Instant, out: &mut Vec<T>) {
        // Rounded down: a slot is due once its whole millisecond has begun.
        let now_tick = (now.saturating_duration_since(self.epoch).as_nanos() / TICK_NS) as u64;
        if now_tick < self.done {
            return;
        }
        while let Some(t) = self.next_tick() {
            if t > now_tick {
                break;
            }
            if self.far.peek().is_some_and(|f| f.0 == t) {
                if let Some(FarOf(_, item)) = self.far.pop() {
                    out.push(item);
                }
                continue;
            }
            let i = (t % SLOTS as u64) as usize;
            let mut emptied = std::mem::take(&mut self.slots[i]);
            self.len -= emptied.len();
            out.append(&mut emptied);
            if self.spare.len() < MAX_SPARE && emptied.capacity() <= MAX_SPARE_ROOM {
                self.spare.push(emptied);
            }
            self.bits[i / 64] &= !(1 << (i % 64));
            // Slots before `t` are empty: skip to it so the scan starts there next time.
            self.done = t;
        }
        self.done = now_tick + 1;
        // What came within the horizon moves into the ring.
        while self
            .far
            .peek()
            .is_some_and(|f| f.0 < self.done + SLOTS as u64)
        {
            if let Some(FarOf(tick, item)) = self.far.pop() {
                self.insert_tick(tick.max(self.done), item);
            }
        }
    }
}

/// Handle to the wheel task; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Wheel {
    tx: mpsc::UnboundedSender<Arm>,
}

impl Wheel {
    /// Starts the wheel task. It ends when every handle is dropped.
    pub(crate) fn start(lag: Arc<LagMonitor>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, lag));
        Self { tx }
    }

    pub(crate) fn arm(&self, arm: Arm) {
        // The wheel only stops when the runtime is gone; nothing is left to wake then.
        let _ = self.tx.send(arm);
    }
}

fn entry(arm: Arm) -> Entry {
    Entry {
        gen: arm.gen,
        cell: arm.cell,
        at: arm.at,
        slide_ns: arm.slide.map_or(0, |d| (d.as_nanos() as u64).max(1)),
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Arm>, lag: Arc<LagMonitor>) {
    let mut timers: Timers<Entry> = Timers::new(Instant::now());
    let mut due = Vec::new();
    loop {
        let next = timers.next_tick().map(|t| timers.at_tick(t));
        tokio::select! {
            biased;
            arm = rx.recv() => {
                let Some(arm) = arm else { return };
                timers.insert(arm.at, entry(arm));
                while let Ok(arm) = rx.try_recv() {
                    timers.insert(arm.at, entry(arm));
                }
            }
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                if let Some(planned) = next {
                    lag.observe(now.saturating_duration_since(planned), now);
                }
                let slack = lag.slack(now);
                timers.take_due(now, &mut due);
                for e in due.drain(..) {
                    if e.cell.timer_gen() != e.gen {
                        continue; // re-armed or stopped since
                    }
                    let mut at = e.at;
                    if let (true, Some(seen)) = (e.slide_ns != 0, e.cell.last_seen()) {
                        at = at.max(seen + Duration::from_nanos(e.slide_ns));
                    }
                    if at + slack > now {
                        timers.insert(at + slack, Entry { at, ..e });
                        continue;
                    }
                    if waits_for_input(&e.cell, at, slack, now, &lag) {
                        timers.insert(now + recheck(at, now), Entry { at, ..e });
                        continue;
                    }
                    match e.cell.actor() {
                        Some(actor) => {
                            if actor.cast(AgentMsg::Tick { gen: e.gen, slack }).is_err() {
                                debug!(agent = %e.cell.id(), "deadline for a stopped agent actor");
                            }
                        }
                        None => debug!(agent = %e.cell.id(), "deadline with no agent actor"),
                    }
                }
            }
        }
    }
}

/// When a deadline `at` that waits for its agent's input asks again: 5 ms after it first
/// did, then a quarter of how long it has waited (at most 250 ms), so a connection that stays
/// behind for seconds costs a deadline a few dozen asks, not a thousand.
fn recheck(at: Instant, now: Instant) -> Duration {
    let waited = now.saturating_duration_since(at);
    (waited / 4).clamp(Duration::from_millis(5), Duration::from_millis(250))
}

/// Whether the deadline `at` of `cell`, due with `slack`, waits: the agent's connection has
/// not applied all it received by then, and the deadline is less than `max_slack` past (the
/// most a deadline is extended: beyond it the runtime cannot vouch for the agent any longer).
fn waits_for_input(
    cell: &AgentCell,
    at: Instant,
    slack: Duration,
    now: Instant,
    lag: &LagMonitor,
) -> bool {
    let config = lag.config();
    config.enabled
        && now.saturating_duration_since(at) < config.max_slack
        && cell.input_behind(at + slack)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_entry_stays_small() {
        // One per supervised agent: its size is memory per agent.
        assert!(std::mem::size_of::<super::Entry>() <= 40);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timers_give_each_entry_once_never_early_at_most_a_millisecond_late() {
        let t0 = Instant::now();
        let mut w: Timers<u32> = Timers::new(t0);
        // Near, on a slot boundary, inside a millisecond, beyond the horizon, in the past.
        let wakes = [
            (1, t0 + ms(5)),
            (2, t0 + ms(5) + Duration::from_micros(300)),
            (3, t0 + ms(70_000)),
            (4, t0 + ms(200_000)),
            (5, t0),
            (6, t0 + ms(65_535)),
        ];
        for (k, at) in wakes {
            w.insert(at, k);
        }
        let mut fired: Vec<(u32, Instant)> = Vec::new();
        let mut now = t0;
        let mut out = Vec::new();
        while fired.len() < wakes.len() {
            let next = w.next_tick().expect("something is pending");
            now = now.max(w.at_tick(next));
            w.take_due(now, &mut out);
            assert!(!out.is_empty(), "next_tick {next} gave nothing");
            fired.extend(out.drain(..).map(|k| (k, now)));
            assert!(now < t0 + ms(300_000));
        }
        for (k, at) in wakes {
            let (_, when) = fired.iter().find(|(x, _)| *x == k).copied().unwrap();
            assert!(when >= at, "entry {k} fired early");
            assert!(
                when <= at.max(t0) + ms(1),
                "entry {k} fired {:?} late",
                when - at
            );
        }
        assert_eq!(fired.len(), wakes.len(), "each once");
        assert_eq!(w.next_tick(), None);
    }

    #[test]
    fn the_wheel_holds_memory_for_what_is_pending_not_for_its_whole_horizon() {
        // A fleet whose deadlines fall a quarter second ahead, many to each millisecond, for
        // longer than the ring's horizon: every slot is filled once and emptied. What the
        // slots keep after that must follow what is pending (about 250 slots' worth), not
        // the 65,536 slots each left with the room it once needed.
        let t0 = Instant::now();
        let mut w: Timers<u32> = Timers::new(t0);
        let mut out = Vec::new();
        let per_ms = 40u32;
        for tick in 0..(SLOTS as u64 + 1_000) {
            for k in 0..per_ms {
                w.insert(t0 + ms(tick + 250), k);
            }
            w.take_due(t0 + ms(tick), &mut out);
            out.clear();
        }
        let pending = 250 * per_ms as usize;
        let held = w.held();
        assert!(
            held <= 4 * pending,
            "the slots hold room for {held} entries with {pending} pending"
        );
    }

    #[test]
    fn an_emptied_slots_room_goes_to_the_next_slot_filled() {
        // Each millisecond's slot is filled once per turn of the ring: without the room of
        // the slots emptied before it, every one would grow from nothing.
        let t0 = Instant::now();
        let mut w: Timers<u32> = Timers::new(t0);
        let mut out = Vec::new();
        for k in 0..1_000 {
            w.insert(t0 + ms(5), k);
        }
        w.take_due(t0 + ms(5), &mut out);
        assert_eq!(out.len(), 1_000);
        w.insert(t0 + ms(10), 0);
        assert!(w.slots[10].capacity() >= 1_000, "a slot grown from nothing");
    }

    #[test]
    fn timers_match_a_sorted_list_under_random_use() {
        // Random inserts (some in the past, some far) and random clock steps: what is taken
        // is exactly what is due, checked against a plain list.
        let t0 = Instant::now();
        let mut w: Timers<u64> = Timers::new(t0);
        let mut pending: Vec<(u64, Instant)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = t0;
        let mut out = Vec::new();
        for k in 0..20_000u64 {
            let r = next();
            let delay = match r % 10 {
                0 => ms(next() % 300_000),
                1 => Duration::ZERO,
                _ => Duration::from_micros(next() % 5_000_000),
            };
            let at = now + delay;
            w.insert(at, k);
            pending.push((k, at));
            if r % 7 == 0 {
                now += Duration::from_micros(next() % 3_000_000);
                w.take_due(now, &mut out);
                let floor = t0 + ms((now - t0).as_millis() as u64);
                for k in out.drain(..) {
                    let i = pending.iter().position(|(x, _)| *x == k).unwrap();
                    let (_, at) = pending.swap_remove(i);
                    assert!(at <= floor + ms(1) && at <= now + ms(1), "early");
                }
                // Nothing left that was due a whole millisecond ago.
                assert!(pending.iter().all(|(_, at)| *at + ms(1) > floor));
            }
        }
    }
}
