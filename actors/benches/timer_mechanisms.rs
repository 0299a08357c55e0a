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

#[path = "timer_mechanisms/drivers.rs"]
mod drivers;
#[path = "timer_mechanisms/mechanisms.rs"]
mod mechanisms;
#[path = "timer_mechanisms/report.rs"]
mod report;

use drivers::*;
use mechanisms::*;
use report::*;

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
