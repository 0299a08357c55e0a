//! The three mechanisms, each as small as it can be: A (timer per beat), B (lazy deadline),
//! C (fast path and wheel).

use super::*;

// ---------------------------------------------------------------------------------------------
// A: timer per beat

pub(crate) enum AMsg {
    Beat,
    Deadline { gen: u64 },
}

pub(crate) struct TimerPerBeat;

pub(crate) struct AArgs {
    pub(crate) idx: usize,
    pub(crate) judge: Arc<Judge>,
}

pub(crate) struct AState {
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

pub(crate) enum BMsg {
    Beat { at: u64 },
    Check { fired: u64 },
}

pub(crate) struct LazyDeadline;

pub(crate) struct BArgs {
    pub(crate) idx: usize,
    pub(crate) judge: Arc<Judge>,
}

pub(crate) struct BState {
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
pub(crate) struct CAgent {
    pub(crate) idx: usize,
    /// Latest beat, nanoseconds since the epoch (0: none yet).
    pub(crate) stamp: AtomicU64,
    pub(crate) actor: OnceLock<ActorRef<CMsg>>,
}

pub(crate) enum CMsg {
    Missed { deadline: u64 },
}

/// A request to the wheel: wake `agent` at `at`, unless its stamp has moved the deadline.
pub(crate) struct Arm {
    at: u64,
    agent: Arc<CAgent>,
}

pub(crate) struct Entry {
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
pub(crate) async fn run_wheel(mut rx: mpsc::UnboundedReceiver<Arm>, received: Arc<AtomicUsize>) {
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

pub(crate) async fn sleep_until_opt(at: Option<u64>) {
    match at {
        Some(at) => tokio::time::sleep_until(instant_at(at)).await,
        None => std::future::pending().await,
    }
}

pub(crate) struct FastPathWheel;

pub(crate) struct CArgs {
    pub(crate) agent: Arc<CAgent>,
    pub(crate) wheel: mpsc::UnboundedSender<Arm>,
    pub(crate) judge: Arc<Judge>,
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
