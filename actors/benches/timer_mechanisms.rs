//! Compares three ways for one-actor-per-agent supervision to notice a missed heartbeat
//! deadline, each implemented minimally in this file with real ractor actors (not the vigil
//! runtime):
//!
//! - **A, timer per beat**: every beat is an actor message; the actor aborts its pending
//!   `send_after` and starts a new one for the full deadline.
//! - **B, lazy deadline**: every beat is an actor message that only updates `last_seen`; the
//!   actor keeps one pending `send_after`, and when it fires it re-arms for the remaining time
//!   (or records a miss).
//! - **C, fast path + wheel**: a beat is a `fetch_max` of a nanosecond stamp shared with the
//!   actor, and no message; one wheel task (a `BinaryHeap` and `sleep_until`, fed by an
//!   unbounded mpsc) holds every deadline, slides it by reading the stamp when it falls, and
//!   messages the actor only when a deadline is really missed. This is the design of
//!   `vigil_actors::wheel` and `vigil_actors::cell`.
//!
//! Every agent beats every 1 s and its deadline is 1 s after its last beat. After a miss the
//! next deadline is one interval later, so every agent always has exactly one pending deadline.
//!
//! Each (mechanism, run) executes in a fresh child process (this binary re-run with
//! `--child <A|B|C>`), so RSS and allocator state do not leak between runs. A child, on a
//! multi-threaded tokio runtime with 2 worker threads:
//!
//! 1. reads VmRSS, spawns N agent actors and arms their first deadline, reads VmRSS again:
//!    **RSS bytes per agent**;
//! 2. **correctness**: 2 paced producer tasks (on the same runtime, like a network reader)
//!    beat every agent once a second, spread evenly over the second, for 2 s of warm-up (the
//!    deadlines armed at spawn settle into the beat pattern) and 5 s measured. The period is
//!    990 ms, not 1 s: see `PACED_LEAD_NS` for why a period equal to the deadline cannot be
//!    used. Every agent is on schedule, so every miss with a deadline in the measured window
//!    is a **false miss**. Each is judged against ground truth the
//!    driver keeps (when it actually delivered each agent's last two beats) and put in one of
//!    two kinds:
//!    - **lost beat**: the beat had been delivered within the second before the deadline and
//!      the mechanism did not see it: a bug in the mechanism (judged over the whole run);
//!    - **delivered late**: the runtime ran the driver more than 10 ms late, so the beat
//!      really arrived over 1 s after the previous one. The driver's worst lateness over the
//!      measured rounds is reported too: how much the mechanism's own load delays other tasks
//!      on the runtime;
//! 3. **throughput**: 2 producer tasks beat round-robin over all agents as fast as they can for
//!    5 s. A beat counts when it is done: for C when the stamp is stored, for A and B when the
//!    actor has handled the message (each worker thread counts in its own padded counter). For
//!    A and B the producers keep at most 65,536 beats in flight, so the mailboxes stay bounded
//!    and the rate is what the actors sustain. Process CPU time (user + sys from
//!    `/proc/self/stat`) over the window divided by the beats gives **µs CPU per beat**.
//!
//! Each mechanism runs 3 times (interleaved A, B, C, A, B, C, ...); the table shows medians.
//!
//! Run (release build; about 2-3 minutes at the default N):
//!
//! ```text
//! cd /work/main && CARGO_TARGET_DIR=/tmp/bench-target cargo bench -p vigil-actors --bench timer_mechanisms
//! ```
//!
//! Environment: `VIGIL_BENCH_AGENTS` (default 100000), `VIGIL_BENCH_RUNS` (default 3).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::mpsc;

/// Heartbeat interval and deadline after the last beat, in nanoseconds.
const DEADLINE_NS: u64 = 1_000_000_000;
const WORKER_THREADS: usize = 2;
const PRODUCERS: usize = 2;
/// Paced phase: rounds before misses count, and rounds measured.
const WARMUP_ROUNDS: u64 = 2;
const MEASURED_ROUNDS: u64 = 5;
/// The paced driver's period is the interval less this lead. With a period of exactly the
/// deadline, consecutive beats are `1 s + (lateness now - lateness before)` apart, which
/// exceeds 1 s about half the time by the driver's own sub-millisecond wake-up jitter: those
/// are real misses of a 1 s deadline, not errors of the mechanism. The lead absorbs that jitter.
const PACED_LEAD_NS: u64 = 10_000_000;
const PACED_PERIOD_NS: u64 = DEADLINE_NS - PACED_LEAD_NS;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);
/// Beats a producer sends between yields.
const BATCH: usize = 256;
/// Upper bound on beats sent but not yet handled by an actor (A and B).
const MAX_IN_FLIGHT: u64 = 65_536;
/// Linux exposes CPU times in `/proc` in USER_HZ units, which is 100 on every architecture.
const USER_HZ: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Time and counters

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the child started; 0 is never a beat.
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

fn instant_at(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(epoch() + Duration::from_nanos(ns.saturating_sub(1)))
}

/// A counter on its own cache lines.
#[repr(align(128))]
struct Padded(AtomicU64);

const SLOTS: usize = 8;
/// Beat messages handled, one counter per thread so that counting costs no contention.
static HANDLED: [Padded; SLOTS] = [const { Padded(AtomicU64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

fn count_handled() {
    SLOT.with(|s| HANDLED[*s].0.fetch_add(1, Ordering::Relaxed));
}

fn handled_total() -> u64 {
    HANDLED.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

// ---------------------------------------------------------------------------------------------
// Ground truth for the correctness check

#[derive(Default)]
struct Truth {
    prev: AtomicU64,
    last: AtomicU64,
}

/// Knows when each agent really beat, and sorts the misses agents report.
struct Judge {
    truth: Box<[Truth]>,
    /// Misses with a deadline after this are not judged (the paced phase is over).
    judge_until: AtomicU64,
    /// Misses of late-delivered beats count only from here (after the warm-up).
    late_from: AtomicU64,
    /// The mechanism missed a deadline although it had been handed a beat in time.
    lost_misses: AtomicU64,
    /// The beat was handed to the mechanism after the deadline: the driver was late.
    lag_misses: AtomicU64,
}

impl Judge {
    fn new(n: usize) -> Self {
        Self {
            truth: (0..n).map(|_| Truth::default()).collect(),
            judge_until: AtomicU64::new(u64::MAX),
            late_from: AtomicU64::new(u64::MAX),
            lost_misses: AtomicU64::new(0),
            lag_misses: AtomicU64::new(0),
        }
    }

    /// Driver side, after the beat was handed to the mechanism. One writer per agent.
    fn record_beat(&self, agent: usize, at: u64) {
        let t = &self.truth[agent];
        t.prev
            .store(t.last.load(Ordering::Relaxed), Ordering::Release);
        t.last.store(at, Ordering::Release);
    }

    /// An agent's actor records that its deadline `deadline` was missed.
    fn miss(&self, agent: usize, deadline: u64) {
        if deadline > self.judge_until.load(Ordering::Relaxed) {
            return;
        }
        let t = &self.truth[agent];
        let last = t.last.load(Ordering::Acquire);
        // The latest beat at or before the deadline. Beats are a second apart, so at most one
        // came after it; should both have, count the beat as lost (the conservative side).
        let beat = if last <= deadline {
            last
        } else {
            t.prev.load(Ordering::Acquire)
        };
        let delivered_in_time = beat != 0 && (beat > deadline || beat + DEADLINE_NS > deadline);
        if delivered_in_time {
            self.lost_misses.fetch_add(1, Ordering::Relaxed);
        } else if deadline >= self.late_from.load(Ordering::Relaxed) {
            self.lag_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A: timer per beat

enum AMsg {
    Beat,
    Deadline { gen: u64 },
}

struct TimerPerBeat;

struct AArgs {
    idx: usize,
    judge: Arc<Judge>,
}

struct AState {
    idx: usize,
    judge: Arc<Judge>,
    gen: u64,
    deadline: u64,
    pending: Option<JoinHandle<Result<(), MessagingErr<AMsg>>>>,
}

impl AState {
    /// Replaces the pending timer with one that falls `after` from now.
    fn arm(&mut self, myself: &ActorRef<AMsg>, after: Duration) {
        if let Some(old) = self.pending.take() {
            old.abort();
        }
        self.gen += 1;
        let gen = self.gen;
        self.deadline = now_ns() + after.as_nanos() as u64;
        self.pending = Some(myself.send_after(after, move || AMsg::Deadline { gen }));
    }
}

impl Actor for TimerPerBeat {
    type Msg = AMsg;
    type State = AState;
    type Arguments = AArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AMsg>,
        args: AArgs,
    ) -> Result<AState, ActorProcessingErr> {
        let mut st = AState {
            idx: args.idx,
            judge: args.judge,
            gen: 0,
            deadline: 0,
            pending: None,
        };
        st.arm(&myself, Duration::from_nanos(DEADLINE_NS));
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<AMsg>,
        msg: AMsg,
        st: &mut AState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AMsg::Beat => {
                count_handled();
                st.arm(&myself, Duration::from_nanos(DEADLINE_NS));
            }
            // A timer that fired after the beat that aborted it is stale.
            AMsg::Deadline { gen } if gen == st.gen => {
                st.judge.miss(st.idx, st.deadline);
                let next = st.deadline + DEADLINE_NS;
                st.arm(&myself, Duration::from_nanos(next.saturating_sub(now_ns())));
                st.deadline = next;
            }
            AMsg::Deadline { .. } => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AMsg>,
        st: &mut AState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(pending) = st.pending.take() {
            pending.abort();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// B: lazy deadline

enum BMsg {
    Beat { at: u64 },
    Check { fired: u64 },
}

struct LazyDeadline;

struct BArgs {
    idx: usize,
    judge: Arc<Judge>,
}

struct BState {
    idx: usize,
    judge: Arc<Judge>,
    last_seen: u64,
    /// The deadline the pending timer was set for.
    armed_for: u64,
    pending: Option<JoinHandle<Result<(), MessagingErr<BMsg>>>>,
}

impl BState {
    fn arm(&mut self, myself: &ActorRef<BMsg>, at: u64) {
        self.armed_for = at;
        let after = Duration::from_nanos(at.saturating_sub(now_ns()));
        // The timer stamps when it fired: every beat sent before then is already queued ahead
        // of the check, so the check decides as of that instant.
        self.pending = Some(myself.send_after(after, || BMsg::Check { fired: now_ns() }));
    }
}

impl Actor for LazyDeadline {
    type Msg = BMsg;
    type State = BState;
    type Arguments = BArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BMsg>,
        args: BArgs,
    ) -> Result<BState, ActorProcessingErr> {
        let mut st = BState {
            idx: args.idx,
            judge: args.judge,
            last_seen: 0,
            armed_for: 0,
            pending: None,
        };
        st.arm(&myself, now_ns() + DEADLINE_NS);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<BMsg>,
        msg: BMsg,
        st: &mut BState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BMsg::Beat { at } => {
                count_handled();
                st.last_seen = st.last_seen.max(at);
            }
            BMsg::Check { fired } => {
                let mut due = st.armed_for;
                if st.last_seen != 0 {
                    due = due.max(st.last_seen + DEADLINE_NS);
                }
                if due > fired {
                    st.arm(&myself, due);
                } else {
                    st.judge.miss(st.idx, due);
                    st.arm(&myself, due + DEADLINE_NS);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BMsg>,
        st: &mut BState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(pending) = st.pending.take() {
            pending.abort();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// C: fast path + shared deadline wheel

/// What an agent's actor shares with the beat path and the wheel.
struct CAgent {
    idx: usize,
    /// Latest beat, nanoseconds since the epoch (0: none yet).
    stamp: AtomicU64,
    actor: OnceLock<ActorRef<CMsg>>,
}

enum CMsg {
    Missed { deadline: u64 },
}

/// A request to the wheel: wake `agent` at `at`, unless its stamp has moved the deadline.
struct Arm {
    at: u64,
    agent: Arc<CAgent>,
}

struct Entry {
    at: u64,
    order: u64,
    agent: Arc<CAgent>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and the earliest deadline must come first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// The wheel task; `received` counts arms taken in (to know when spawning has settled).
async fn run_wheel(mut rx: mpsc::UnboundedReceiver<Arm>, received: Arc<AtomicUsize>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut order = 0u64;
    let mut push = |heap: &mut BinaryHeap<Entry>, at: u64, agent: Arc<CAgent>| {
        order += 1;
        heap.push(Entry { at, order, agent });
    };
    loop {
        let next = heap.peek().map(|e| e.at);
        tokio::select! {
            biased;
            arm = rx.recv() => {
                let Some(arm) = arm else { return };
                let mut n = 1;
                push(&mut heap, arm.at, arm.agent);
                while let Ok(arm) = rx.try_recv() {
                    push(&mut heap, arm.at, arm.agent);
                    n += 1;
                }
                received.fetch_add(n, Ordering::Relaxed);
            }
            _ = sleep_until_opt(next) => {
                let now = now_ns();
                while heap.peek().is_some_and(|e| e.at <= now) {
                    let Some(Entry { at, agent, .. }) = heap.pop() else { break };
                    let seen = agent.stamp.load(Ordering::SeqCst);
                    let at = if seen == 0 { at } else { at.max(seen + DEADLINE_NS) };
                    if at > now {
                        push(&mut heap, at, agent); // a beat slid it: the actor hears nothing
                    } else if let Some(actor) = agent.actor.get() {
                        let _ = actor.cast(CMsg::Missed { deadline: at });
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<u64>) {
    match at {
        Some(at) => tokio::time::sleep_until(instant_at(at)).await,
        None => std::future::pending().await,
    }
}

struct FastPathWheel;

struct CArgs {
    agent: Arc<CAgent>,
    wheel: mpsc::UnboundedSender<Arm>,
    judge: Arc<Judge>,
}

impl Actor for FastPathWheel {
    type Msg = CMsg;
    type State = CArgs;
    type Arguments = CArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CMsg>,
        args: CArgs,
    ) -> Result<CArgs, ActorProcessingErr> {
        let _ = args.agent.actor.set(myself);
        let _ = args.wheel.send(Arm {
            at: now_ns() + DEADLINE_NS,
            agent: args.agent.clone(),
        });
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CMsg>,
        msg: CMsg,
        st: &mut CArgs,
    ) -> Result<(), ActorProcessingErr> {
        let CMsg::Missed { deadline } = msg;
        st.judge.miss(st.agent.idx, deadline);
        let _ = st.wheel.send(Arm {
            at: deadline + DEADLINE_NS,
            agent: st.agent.clone(),
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The three mechanisms behind one beat path

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    A,
    B,
    C,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::A, Kind::B, Kind::C];

    fn key(self) -> &'static str {
        match self {
            Kind::A => "A",
            Kind::B => "B",
            Kind::C => "C",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == s)
    }

    fn title(self) -> &'static str {
        match self {
            Kind::A => "A: timer per beat (abort + send_after per beat)",
            Kind::B => "B: lazy deadline (message per beat, one send_after)",
            Kind::C => "C: fast path + wheel (atomic stamp, shared heap)",
        }
    }
}

enum Mech {
    A(Vec<ActorRef<AMsg>>),
    B(Vec<ActorRef<BMsg>>),
    C(Vec<Arc<CAgent>>),
}

impl Mech {
    fn len(&self) -> usize {
        match self {
            Mech::A(v) => v.len(),
            Mech::B(v) => v.len(),
            Mech::C(v) => v.len(),
        }
    }

    /// True when a beat is done only once an actor has handled it.
    fn via_actor(&self) -> bool {
        !matches!(self, Mech::C(_))
    }

    /// One heartbeat of agent `i` at `at`.
    #[inline]
    fn beat(&self, i: usize, at: u64) {
        match self {
            Mech::A(v) => {
                let _ = v[i].cast(AMsg::Beat);
            }
            Mech::B(v) => {
                let _ = v[i].cast(BMsg::Beat { at });
            }
            Mech::C(v) => {
                v[i].stamp.fetch_max(at, Ordering::SeqCst);
            }
        }
    }
}

const SPAWN_CHUNK: usize = 1024;

/// Spawns `n` agents of `kind`, each arming its first deadline in `pre_start`.
async fn spawn_agents(
    kind: Kind,
    n: usize,
    judge: Arc<Judge>,
    wheel: Option<mpsc::UnboundedSender<Arm>>,
) -> Mech {
    let chunks = (0..n)
        .step_by(SPAWN_CHUNK)
        .map(|s| s..(s + SPAWN_CHUNK).min(n));
    match kind {
        Kind::A => {
            let mut refs = Vec::with_capacity(n);
            for chunk in chunks {
                let spawned = join_all(chunk.map(|idx| {
                    let judge = judge.clone();
                    Actor::spawn(None, TimerPerBeat, AArgs { idx, judge })
                }))
                .await;
                refs.extend(spawned.into_iter().map(|r| r.expect("spawn agent").0));
            }
            Mech::A(refs)
        }
        Kind::B => {
            let mut refs = Vec::with_capacity(n);
            for chunk in chunks {
                let spawned = join_all(chunk.map(|idx| {
                    let judge = judge.clone();
                    Actor::spawn(None, LazyDeadline, BArgs { idx, judge })
                }))
                .await;
                refs.extend(spawned.into_iter().map(|r| r.expect("spawn agent").0));
            }
            Mech::B(refs)
        }
        Kind::C => {
            let wheel = wheel.expect("C needs the wheel");
            let agents: Vec<Arc<CAgent>> = (0..n)
                .map(|idx| {
                    Arc::new(CAgent {
                        idx,
                        stamp: AtomicU64::new(0),
                        actor: OnceLock::new(),
                    })
                })
                .collect();
            for chunk in chunks {
                let spawned = join_all(chunk.map(|idx| {
                    let args = CArgs {
                        agent: agents[idx].clone(),
                        wheel: wheel.clone(),
                        judge: judge.clone(),
                    };
                    Actor::spawn(None, FastPathWheel, args)
                }))
                .await;
                for r in spawned {
                    r.expect("spawn agent");
                }
            }
            Mech::C(agents)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Beat drivers

/// Correctness driver: producer `p` beats agents `p, p + PRODUCERS, ...`, agent `i` at
/// `start + (k + i/N) × period` for each round `k`, and records ground truth after each beat.
///
/// Returns the driver's own lateness over the measured rounds: the largest `beat - scheduled`
/// and how many beats came later than `PACED_LEAD_NS` after their slot.
async fn paced(
    p: usize,
    mech: Arc<Mech>,
    judge: Arc<Judge>,
    start: u64,
    rounds: u64,
) -> (u64, u64) {
    let n = mech.len();
    let mut since_yield = 0;
    let (mut max_late, mut late_beats) = (0, 0);
    for k in 0..rounds {
        for i in (p..n).step_by(PRODUCERS) {
            let sched = start + k * PACED_PERIOD_NS + (i as u64 * PACED_PERIOD_NS) / n as u64;
            let mut at = now_ns();
            if sched > at {
                tokio::time::sleep_until(instant_at(sched)).await;
                at = now_ns();
                since_yield = 0;
            }
            mech.beat(i, at);
            judge.record_beat(i, at);
            if k >= WARMUP_ROUNDS {
                let late = at.saturating_sub(sched);
                max_late = max_late.max(late);
                late_beats += u64::from(late > PACED_LEAD_NS);
            }
            since_yield += 1;
            if since_yield >= BATCH {
                tokio::task::yield_now().await;
                since_yield = 0;
            }
        }
    }
    (max_late, late_beats)
}

/// Throughput driver: producer `p` beats its agents round-robin as fast as it can.
async fn blast(p: usize, mech: Arc<Mech>, stop: Arc<AtomicBool>, sent: Arc<[Padded; PRODUCERS]>) {
    let n = mech.len();
    if p >= n {
        return;
    }
    let via_actor = mech.via_actor();
    let handled_base = handled_total();
    let mut i = p;
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            mech.beat(i, now_ns());
            i += PRODUCERS;
            if i >= n {
                i = p;
            }
        }
        count += BATCH as u64;
        sent[p].0.store(count, Ordering::Relaxed);
        if via_actor {
            // Keep the mailboxes bounded: wait for the actors to catch up.
            loop {
                let sent_total: u64 = sent.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
                let handled = handled_total().saturating_sub(handled_base);
                if sent_total.saturating_sub(handled) <= MAX_IN_FLIGHT
                    || stop.load(Ordering::Relaxed)
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// /proc readers

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("comm in /proc/self/stat") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // utime is field 14, stime field 15
        .take(2)
        .map(|v| v.parse().expect("utime/stime"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 1000 / USER_HZ)
}

/// The 1-minute load average: other processes competing for the CPUs skew every number.
fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn agents_from_env() -> usize {
    std::env::var("VIGIL_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100_000)
}

fn runs_from_env() -> usize {
    std::env::var("VIGIL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

// ---------------------------------------------------------------------------------------------
// One run (child process)

fn child(kind: Kind) {
    epoch();
    let n = agents_from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_time()
        .build()
        .expect("tokio runtime");
    let line = rt.block_on(async move {
        let judge = Arc::new(Judge::new(n));
        let received = Arc::new(AtomicUsize::new(0));
        let wheel = (kind == Kind::C).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_wheel(rx, received.clone()));
            tx
        });

        // 1. RSS per agent: spawn and arm.
        let rss_before = rss_kb();
        let spawn_start = Instant::now();
        let mech = tokio::spawn(spawn_agents(kind, n, judge.clone(), wheel.clone()))
            .await
            .expect("spawn task");
        while kind == Kind::C && received.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let spawn_ms = spawn_start.elapsed().as_millis();
        let rss_after = rss_kb();
        let mech = Arc::new(mech);

        // 2. Correctness: paced beats, every agent once a second.
        let start = now_ns() + 10_000_000;
        let rounds = WARMUP_ROUNDS + MEASURED_ROUNDS;
        let end = start + rounds * PACED_PERIOD_NS;
        judge
            .late_from
            .store(start + WARMUP_ROUNDS * PACED_PERIOD_NS, Ordering::Relaxed);
        judge.judge_until.store(end, Ordering::Relaxed);
        let drivers: Vec<_> = (0..PRODUCERS)
            .map(|p| tokio::spawn(paced(p, mech.clone(), judge.clone(), start, rounds)))
            .collect();
        let (mut driver_max_late, mut driver_late_beats) = (0, 0);
        for d in drivers {
            let (max_late, late_beats) = d.await.expect("paced driver");
            driver_max_late = driver_max_late.max(max_late);
            driver_late_beats += late_beats;
        }
        // Let the deadlines of the last paced second fall and be handled.
        tokio::time::sleep_until(instant_at(end + 300_000_000)).await;

        // 3. Throughput: as fast as possible for a fixed window.
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new([const { Padded(AtomicU64::new(0)) }; PRODUCERS]);
        let done = |sent: &[Padded; PRODUCERS]| -> u64 {
            if mech.via_actor() {
                handled_total()
            } else {
                sent.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
            }
        };
        let base = done(&sent);
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| tokio::spawn(blast(p, mech.clone(), stop.clone(), sent.clone())))
            .collect();
        tokio::time::sleep(THROUGHPUT_WINDOW).await;
        let beats = done(&sent) - base;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_time() - cpu0;
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            p.await.expect("producer");
        }

        format!(
            "RESULT kind={} n={n} beats={beats} secs={secs:.6} cpu_ns={} rss_before_kb={rss_before} \
             rss_after_kb={rss_after} lost_misses={} lag_misses={} spawn_ms={spawn_ms} \
             driver_max_late_us={} driver_late_beats={driver_late_beats} load1={}",
            kind.key(),
            cpu.as_nanos(),
            judge.lost_misses.load(Ordering::Relaxed),
            judge.lag_misses.load(Ordering::Relaxed),
            driver_max_late / 1000,
            load1(),
        )
    });
    println!("{line}");
    // Tearing down 100k actors is not what is measured.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// Driver (parent process)

struct RunResult {
    beats_per_sec: f64,
    cpu_us_per_beat: f64,
    rss_per_agent: f64,
    lost_misses: u64,
    lag_misses: u64,
    spawn_ms: u64,
    driver_max_late_ms: f64,
    driver_late_beats: u64,
    load1: String,
    /// CPUs the process kept busy in the throughput window (2 when nothing else competes).
    cores: f64,
}

impl RunResult {
    /// Every miss while the agents beat on schedule.
    fn false_misses(&self) -> u64 {
        self.lost_misses + self.lag_misses
    }
}

fn parse_result(kind: Kind, stdout: &str) -> RunResult {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("child {kind:?} printed no RESULT line:\n{stdout}"));
    let kv: BTreeMap<&str, &str> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .collect();
    let num = |k: &str| -> f64 {
        kv.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child {kind:?}: no number {k} in {line}"))
    };
    let n = num("n");
    let beats = num("beats");
    RunResult {
        beats_per_sec: beats / num("secs"),
        cpu_us_per_beat: num("cpu_ns") / 1e3 / beats.max(1.0),
        rss_per_agent: (num("rss_after_kb") - num("rss_before_kb")) * 1024.0 / n,
        lost_misses: num("lost_misses") as u64,
        lag_misses: num("lag_misses") as u64,
        spawn_ms: num("spawn_ms") as u64,
        driver_max_late_ms: num("driver_max_late_us") / 1e3,
        driver_late_beats: num("driver_late_beats") as u64,
        load1: kv.get("load1").unwrap_or(&"?").to_string(),
        cores: num("cpu_ns") / 1e9 / num("secs"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// 1234567.8 -> "1,234,568"
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn parent() {
    let n = agents_from_env();
    let runs = runs_from_env();
    let exe = std::env::current_exe().expect("current exe");
    let mut results: BTreeMap<Kind, Vec<RunResult>> = BTreeMap::new();
    for run in 1..=runs {
        for kind in Kind::ALL {
            let out = Command::new(&exe)
                .args(["--child", kind.key()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .output()
                .expect("run child");
            assert!(
                out.status.success(),
                "child {kind:?} failed: {}",
                out.status
            );
            let r = parse_result(kind, &String::from_utf8_lossy(&out.stdout));
            eprintln!(
                "run {run}/{runs} {}: {} beats/s, {:.4} µs CPU/beat, {:.0} B/agent, \
                 {} false misses ({} lost beats), spawn {} ms, paced driver max {:.1} ms late \
                 ({} beats > {} ms), throughput window used {:.2} CPUs, load {}",
                kind.key(),
                thousands(r.beats_per_sec),
                r.cpu_us_per_beat,
                r.rss_per_agent,
                r.false_misses(),
                r.lost_misses,
                r.spawn_ms,
                r.driver_max_late_ms,
                r.driver_late_beats,
                PACED_LEAD_NS / 1_000_000,
                r.cores,
                r.load1
            );
            results.entry(kind).or_default().push(r);
        }
    }

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Timer mechanisms: {} agents, 1 s heartbeat, 1 s deadline",
        thousands(n as f64)
    );
    println!();
    println!("machine: nproc = {nproc}, model name = {}", cpu_model());
    println!(
        "runtime: tokio multi-thread, {WORKER_THREADS} worker threads, ractor 0.16.5, release; \
         {PRODUCERS} producer tasks; median of {runs} runs, each in a fresh process"
    );
    println!();
    println!(
        "| mechanism | beats/s | µs CPU per beat | RSS bytes per agent | false misses \
         (median / max) | of which lost beats (max) | paced driver max lateness, ms (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (kind, rs) in &results {
        let med = |f: fn(&RunResult) -> f64| median(rs.iter().map(f).collect());
        println!(
            "| {} | {} | {:.4} | {:.0} | {:.0} / {} | {} | {:.1} |",
            kind.title(),
            thousands(med(|r| r.beats_per_sec)),
            med(|r| r.cpu_us_per_beat),
            med(|r| r.rss_per_agent),
            med(|r| r.false_misses() as f64),
            rs.iter().map(|r| r.false_misses()).max().unwrap_or(0),
            rs.iter().map(|r| r.lost_misses).max().unwrap_or(0),
            med(|r| r.driver_max_late_ms),
        );
    }
    println!();
    println!(
        "per run (beats/s; µs CPU per beat; RSS bytes per agent; false misses; lost beats; \
         paced driver max lateness; CPUs used in the throughput window, {WORKER_THREADS} when \
         nothing else competes; 1-min load average at the end):"
    );
    for (kind, rs) in &results {
        let cells: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "{}; {:.4}; {:.0}; {}; {}; {:.1} ms; {:.2} CPUs; load {}",
                    thousands(r.beats_per_sec),
                    r.cpu_us_per_beat,
                    r.rss_per_agent,
                    r.false_misses(),
                    r.lost_misses,
                    r.driver_max_late_ms,
                    r.cores,
                    r.load1
                )
            })
            .collect();
        println!("- {}: {}", kind.key(), cells.join(" | "));
    }
    println!();
    println!(
        "false misses: deadlines declared missed in the {MEASURED_ROUNDS} s measured window \
         (after {WARMUP_ROUNDS} s of warm-up) while every agent beat on schedule, once per {} \
         ms, spread evenly. lost beats: of those (and over the whole run), misses although the \
         beat had already been handed to the mechanism in time (a mechanism bug); the rest are \
         beats the paced driver, a task on the same runtime, could only deliver more than {} ms \
         late. paced driver max lateness: the latest any measured beat was delivered after its \
         slot, i.e. the scheduling lag the mechanism's load inflicts on other tasks.",
        PACED_PERIOD_NS / 1_000_000,
        PACED_LEAD_NS / 1_000_000
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--child") {
        Some(i) => {
            let kind = args
                .get(i + 1)
                .and_then(|k| Kind::parse(k))
                .expect("--child A|B|C");
            child(kind);
        }
        None => parent(),
    }
}
