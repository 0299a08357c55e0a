//! Sinks: outbound channels (webhooks, logs, a program's own) that receive the event log.
//!
//! Each sink is a subscriber with its own filter and its own durable cursor: the last seq it
//! has dealt with, saved in the store. A sink's task subscribes with `since` = its cursor, so
//! after a failure, a `lagged` subscription or a restart it resumes where it stopped; delivery
//! is at least once, in seq order, and every event carries its seq so receivers can drop
//! duplicates. A delivery that keeps failing is retried with exponential backoff and jitter;
//! after `max_attempts` its batch becomes a dead letter (saved, visible, replayable) and the
//! sink moves on. Each sink runs in a task of its own and reads the log at its own pace (from
//! the broadcaster's window or the store), so a slow or dead channel delays neither
//! supervision nor any other subscriber or sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::broadcaster::{SubscribeOptions, Subscription, SubscriptionItem};
use crate::model::{Event, EventKind, Status};
use crate::store::Store;

/// Why a delivery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again (a timeout, a refused connection, a 5xx, a 429).
    #[error("{0}")]
    Retry(String),
    /// Trying the same batch again will not help (e.g. the receiver answered 400): the batch
    /// becomes a dead letter at once.
    #[error("{0}")]
    Reject(String),
}

/// An outbound channel. Implement it to receive the fleet's events in a program that embeds
/// the runtime, and register it with [`crate::Runtime::add_sink`].
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Delivers a batch: the events this sink's filter accepts, in seq order (never empty).
    /// `Ok` means delivered; the cursor then moves past the batch.
    async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError>;
}

/// Which events a sink receives (each list empty means "any").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkFilter {
    /// Event kinds (`transition`, `registered`, `alert`, ...).
    pub events: Vec<EventKind>,
    /// Agent kinds.
    pub kinds: Vec<String>,
    /// The status an agent event leads to (`to` of a transition; `online` for a registration;
    /// `left` for a deregistration). Events without one (activity, jobs, alerts) pass.
    pub statuses: Vec<Status>,
}

impl SinkFilter {
    pub fn accepts(&self, e: &Event) -> bool {
        if !self.events.is_empty() && !self.events.contains(&e.body.kind()) {
            return false;
        }
        if !self.kinds.is_empty()
            && !e
                .kind
                .as_deref()
                .is_some_and(|k| self.kinds.iter().any(|x| x == k))
        {
            return false;
        }
        match e.body.status_after() {
            Some(s) if !self.statuses.is_empty() => self.statuses.contains(&s),
            _ => true,
        }
    }
}

/// Where a sink with no saved cursor starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// After the last event published when it is first added (the default: a new webhook is
    /// not flooded with history).
    #[default]
    Now,
    /// From the oldest retained event.
    Beginning,
}

/// How a sink is run.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique among the runtime's sinks; names its cursor in the store.
    pub name: String,
    /// What it is (`webhook`, `log`, ...), for status reports.
    pub kind: String,
    pub filter: SinkFilter,
    /// Most events in one delivery.
    pub batch_size: usize,
    /// Deliveries of one batch before it becomes a dead letter.
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Dead letters kept; beyond this the oldest is dropped (and counted).
    pub max_dead_letters: usize,
    /// The cursor is saved at most this often while events flow (and whenever the sink is
    /// idle or stops): a crash re-delivers at most this much.
    pub cursor_interval: Duration,
    pub start: StartAt,
}

impl SinkConfig {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            filter: SinkFilter::default(),
            batch_size: 100,
            max_attempts: 10,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_dead_letters: 1000,
            cursor_interval: Duration::from_secs(1),
            start: StartAt::Now,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_name {
            return Err(format!(
                "sink name {:?}: 1-64 of A-Za-z0-9 . _ -",
                self.name
            ));
        }
        if self.batch_size == 0 || self.max_attempts == 0 {
            return Err(format!(
                "sink {}: batch_size and max_attempts must be at least 1",
                self.name
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(format!(
                "sink {}: backoff_initial must be > 0 and <= backoff_max",
                self.name
            ));
        }
        Ok(())
    }
}

/// A batch that could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique within the sink.
    pub id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The events (empty when they were lost before delivery, e.g. to retention).
    pub events: Vec<Event>,
    pub error: String,
    pub attempts: u32,
    #[serde(with = "crate::model::ts")]
    pub at: DateTime<Utc>,
}

/// What an operator sees of a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `starting`, `ok`, `retrying`, `stopped`, `failed` (its saved state is unreadable).
    pub state: String,
    /// Every event up to this seq has been delivered, filtered out or dead-lettered.
    pub delivered_seq: u64,
    /// Events published after `delivered_seq`.
    pub lag: u64,
    /// Events delivered (accepted by the receiver) since start.
    pub delivered: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    #[serde(with = "crate::model::ts::opt")]
    pub last_error_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::model::ts::opt")]
    pub last_delivery_at: Option<DateTime<Utc>>,
    /// Dead letters held now.
    pub dead_letters: usize,
    /// Dead letters dropped because more than `max_dead_letters` were held.
    pub dead_letters_dropped: u64,
}

/// What the runtime gives a sink's task: a way to subscribe, and the store.
#[async_trait]
pub(crate) trait LogSource: Send + Sync + 'static {
    async fn subscribe(&self, opts: SubscribeOptions) -> Option<Subscription>;
    async fn last_seq(&self) -> Option<u64>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    cursor: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedDead {
    next_id: u64,
    dropped: u64,
    letters: Vec<DeadLetter>,
}

/// A request to a sink's task.
pub(crate) enum Control {
    /// Deliver dead letters again (all, or one id); answers how many were delivered and how
    /// many are still held.
    Replay(Option<u64>, oneshot::Sender<Result<(usize, usize), String>>),
    /// The dead letters held now.
    DeadLetters(oneshot::Sender<Vec<DeadLetter>>),
}

/// A running sink.
pub(crate) struct SinkHandle {
    pub name: String,
    pub status: Arc<Mutex<SinkStatus>>,
    pub control: mpsc::Sender<Control>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SinkHandle {
    pub fn spawn(
        cfg: SinkConfig,
        sink: Arc<dyn Sink>,
        source: Arc<dyn LogSource>,
        store: Arc<dyn Store>,
    ) -> Self {
        let status = Arc::new(Mutex::new(SinkStatus {
            name: cfg.name.clone(),
            kind: cfg.kind.clone(),
            state: "starting".into(),
            delivered_seq: 0,
            lag: 0,
            delivered: 0,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            last_delivery_at: None,
            dead_letters: 0,
            dead_letters_dropped: 0,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let (control, control_rx) = mpsc::channel(16);
        let name = cfg.name.clone();
        let runner = Runner {
            cfg,
            sink,
            source,
            store,
            status: status.clone(),
            stop: stop_rx,
            control: control_rx,
            cursor: 0,
            saved_cursor: 0,
            saved_at: tokio::time::Instant::now(),
            dead: SavedDead::default(),
        };
        let task = tokio::spawn(runner.run());
        SinkHandle {
            name,
            status,
            control,
            stop,
            task: Some(task),
        }
    }

    /// Stops the task after it saves its cursor (an undelivered batch is delivered again
    /// after a restart).
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                warn!(sink = %self.name, "sink did not stop within 5 s; aborted");
                t.abort();
            }
        }
        lock(&self.status).state = "stopped".into();
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Where a sink's dead letters are saved: `/` is not allowed in a sink's name, so no sink's
/// cursor can share the key.
fn dead_key(name: &str) -> String {
    format!("{name}/dead")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop ended because the sink is stopping.
struct Stopped;

struct Runner {
    cfg: SinkConfig,
    sink: Arc<dyn Sink>,
    source: Arc<dyn LogSource>,
    store: Arc<dyn Store>,
    status: Arc<Mutex<SinkStatus>>,
    stop: watch::Receiver<bool>,
    control: mpsc::Receiver<Control>,
    cursor: u64,
    saved_cursor: u64,
    saved_at: tokio::time::Instant,
    dead: SavedDead,
}

impl Runner {
    async fn run(mut self) {
        if self.restore().await.is_err() {
            return;
        }
        info!(sink = %self.cfg.name, kind = %self.cfg.kind, cursor = self.cursor, "sink started");
        let _ = self.follow().await;
        self.save_cursor().await;
        debug!(sink = %self.cfg.name, cursor = self.cursor, "sink stopped");
    }

    /// Reads the saved cursor and dead letters (retrying while the store fails).
    async fn restore(&mut self) -> Result<(), Stopped> {
        let key = self.cfg.name.clone();
        let saved = self.load_state(&key).await?;
        let dead = self.load_state(&dead_key(&key)).await?;
        // State that cannot be read is not taken for "no state": a fresh start would skip
        // events (`start = "now"`) or overwrite the dead letters.
        if let Some(t) = dead {
            match serde_json::from_str::<SavedDead>(&t) {
                Ok(d) => self.dead = d,
                Err(e) => {
                    return self.refuse(format!("its saved dead letters are unreadable: {e}"))
                }
            }
        }
        let saved = match saved.map(|t| serde_json::from_str::<Saved>(&t)) {
            Some(Err(e)) => return self.refuse(format!("its saved cursor is unreadable: {e}")),
            Some(Ok(s)) => Some(s),
            None => None,
        };
        match saved {
            Some(s) => {
                self.cursor = s.cursor;
                self.saved_cursor = s.cursor;
            }
            None => {
                self.cursor = match self.cfg.start {
                    StartAt::Beginning => 0,
                    StartAt::Now => loop {
                        if let Some(seq) = self.source.last_seq().await {
                            break seq;
                        }
                        self.pause(Duration::from_millis(200)).await?;
                    },
                };
                // Saved at once: a restart before the first event must not move the start.
                // (If the store refuses, `saved_cursor` stays apart from the cursor, and the
                // save is tried again with the next one.)
                self.saved_cursor = u64::MAX;
                self.save_cursor().await;
            }
        }
        let mut st = lock(&self.status);
        st.delivered_seq = self.cursor;
        st.dead_letters = self.dead.letters.len();
        st.dead_letters_dropped = self.dead.dropped;
        st.state = "ok".into();
        Ok(())
    }

    /// Stops before delivering anything, and says why in the status and the log.
    fn refuse(&mut self, why: String) -> Result<(), Stopped> {
        tracing::error!(sink = %self.cfg.name, "sink not started: {why}");
        let mut st = lock(&self.status);
        st.state = "failed".into();
        st.last_error = Some(why);
        st.last_error_at = Some(Utc::now());
        Err(Stopped)
    }

    async fn load_state(&mut self, key: &str) -> Result<Option<String>, Stopped> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.sink_state(key).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    warn!(sink = %self.cfg.name, error = %e, "sink cannot read its state; retrying");
                    self.pause(wait).await?;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Subscribes after the cursor and delivers, until stopped.
    async fn follow(&mut self) -> Result<(), Stopped> {
        let mut wait = Duration::from_millis(100);
        loop {
            let opts = SubscribeOptions {
                since: Some(self.cursor),
                ..SubscribeOptions::default()
            };
            let Some(mut sub) = self.source.subscribe(opts).await else {
                // The runtime is stopping or busy: try again shortly.
                self.pause(wait).await?;
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            };
            match self.drain(&mut sub).await? {
                // Fell behind (the receiver was slow): resume from the cursor.
                Some(SubscriptionItem::Lagged { .. }) => {
                    wait = Duration::from_millis(100);
                    continue;
                }
                Some(SubscriptionItem::ResyncRequired { oldest }) => {
                    // Retention dropped events this sink never delivered: say so in a dead
                    // letter (without the events) and go on from the oldest one kept. A
                    // resync that does not move the cursor (the history could not be read, or
                    // the cursor is ahead of what is published) is waited out, not retried in
                    // a loop.
                    let first = self.cursor + 1;
                    let last = oldest.saturating_sub(1);
                    if last < first {
                        self.pause(wait).await?;
                        wait = (wait * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    self.dead_letter(
                        first,
                        last,
                        Vec::new(),
                        "dropped by the event retention before delivery".into(),
                        0,
                    )
                    .await?;
                    self.cursor = self.cursor.max(last);
                    lock(&self.status).delivered_seq = self.cursor;
                    self.save_cursor().await;
                }
                // The runtime is stopping.
                _ => {
                    lock(&self.status).state = "stopped".into();
                    return Ok(());
                }
            }
        }
    }

    /// Delivers from one subscription; returns the item that ended it.
    async fn drain(&mut self, sub: &mut Subscription) -> Result<Option<SubscriptionItem>, Stopped> {
        let mut batch: Vec<Arc<Event>> = Vec::with_capacity(self.cfg.batch_size);
        loop {
            let first = tokio::select! {
                item = sub.next() => item,
                _ = self.stop.changed() => return Err(Stopped),
                Some(c) = self.control.recv() => {
                    self.handle(c).await?;
                    continue;
                }
                // Idle: the cursor catches up in the store.
                _ = tokio::time::sleep(self.cfg.cursor_interval), if self.saved_cursor != self.cursor => {
                    self.save_cursor().await;
                    continue;
                }
            };
            let mut end = None;
            match first {
                Some(SubscriptionItem::Event(e)) => batch.push(e),
                other => return Ok(other),
            }
            // Whatever else is queued already joins the batch.
            while batch.len() < self.cfg.batch_size {
                match sub.next().now_or_never() {
                    Some(Some(SubscriptionItem::Event(e))) => batch.push(e),
                    Some(other) => {
                        end = Some(other);
                        break;
                    }
                    None => break,
                }
            }
            self.process(&mut batch).await?;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Delivers what the filter accepts of `batch` and moves the cursor past it.
    async fn process(&mut self, batch: &mut Vec<Arc<Event>>) -> Result<(), Stopped> {
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(());
        };
        // A resumed subscription never repeats an event, but a cursor is only ever moved on.
        batch.retain(|e| e.seq > self.cursor);
        let wanted: Vec<Arc<Event>> = batch
            .drain(..)
            .filter(|e| self.cfg.filter.accepts(e))
            .collect();
        if !wanted.is_empty() {
            self.deliver_or_dead_letter(wanted).await?;
        }
        self.cursor = self.cursor.max(last);
        lock(&self.status).delivered_seq = self.cursor;
        if self.saved_at.elapsed() >= self.cfg.cursor_interval {
            self.save_cursor().await;
        }
        Ok(())
    }

    async fn deliver_or_dead_letter(&mut self, events: Vec<Arc<Event>>) -> Result<(), Stopped> {
        let (first, last) = (events[0].seq, events[events.len() - 1].seq);
        match self.deliver(&events).await? {
            Ok(()) => {}
            Err((error, attempts)) => {
                warn!(sink = %self.cfg.name, first, last, attempts, error = %error, "delivery failed for good; kept as a dead letter");
                let events = events.iter().map(|e| (**e).clone()).collect();
                self.dead_letter(first, last, events, error, attempts)
                    .await?;
            }
        }
        Ok(())
    }

    /// Tries to deliver `events` up to `max_attempts` times. The outer error is "stopping";
    /// the inner one the last failure and the attempts made.
    async fn deliver(
        &mut self,
        events: &[Arc<Event>],
    ) -> Result<Result<(), (String, u32)>, Stopped> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let r = tokio::select! {
                r = self.sink.deliver(events) => r,
                _ = self.stop.changed() => return Err(Stopped),
            };
            let now = Utc::now();
            match r {
                Ok(()) => {
                    let mut st = lock(&self.status);
                    st.delivered += events.len() as u64;
                    st.consecutive_failures = 0;
                    st.last_delivery_at = Some(now);
                    st.state = "ok".into();
                    return Ok(Ok(()));
                }
                Err(e) => {
                    let final_ =
                        matches!(e, SinkError::Reject(_)) || attempt >= self.cfg.max_attempts;
                    {
                        let mut st = lock(&self.status);
                        st.consecutive_failures += 1;
                        st.last_error = Some(e.to_string());
                        st.last_error_at = Some(now);
                        st.state = "retrying".into();
                    }
                    debug!(sink = %self.cfg.name, attempt, error = %e, "delivery failed");
                    if final_ {
                        return Ok(Err((e.to_string(), attempt)));
                    }
                    let wait = self.backoff(attempt);
                    self.pause(wait).await?;
                }
            }
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .backoff_initial
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.cfg.backoff_max);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Waits `d` (stop interrupts; control requests are answered meanwhile).
    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = self.stop.changed() => return Err(Stopped),
                Some(c) = self.control.recv() => {
                    // Replays wait for the sink to be healthy again; other requests are answered.
                    match c {
                        Control::Replay(_, reply) => {
                            let _ = reply.send(Err("the sink is failing; replay once it delivers again".into()));
                        }
                        Control::DeadLetters(reply) => {
                            let _ = reply.send(self.dead.letters.clone());
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, c: Control) -> Result<(), Stopped> {
        match c {
            Control::DeadLetters(reply) => {
                let _ = reply.send(self.dead.letters.clone());
            }
            Control::Replay(id, reply) => {
                let picked: Vec<DeadLetter> = self
                    .dead
                    .letters
                    .iter()
                    .filter(|d| id.is_none_or(|id| d.id == id) && !d.events.is_empty())
                    .cloned()
                    .collect();
                if id.is_some() && picked.is_empty() {
                    let _ = reply.send(Err(format!(
                        "no replayable dead letter {}",
                        id.unwrap_or(0)
                    )));
                    return Ok(());
                }
                let mut delivered = 0;
                for d in picked {
                    let events: Vec<Arc<Event>> = d.events.iter().cloned().map(Arc::new).collect();
                    match self.deliver(&events).await? {
                        Ok(()) => {
                            delivered += 1;
                            self.dead.letters.retain(|x| x.id != d.id);
                        }
                        Err((error, attempts)) => {
                            if let Some(x) = self.dead.letters.iter_mut().find(|x| x.id == d.id) {
                                x.error = error;
                                x.attempts += attempts;
                                x.at = Utc::now();
                            }
                            break;
                        }
                    }
                }
                // A replay's removals that cannot be saved are redone by the next change; at
                // worst a replayed letter is replayed again (at least once).
                let _ = self.save_dead().await;
                info!(sink = %self.cfg.name, delivered, left = self.dead.letters.len(), "dead letters replayed");
                let _ = reply.send(Ok((delivered, self.dead.letters.len())));
            }
        }
        Ok(())
    }

    /// Keeps a batch as a dead letter. It is saved before the cursor may move past the batch:
    /// while the store refuses, the sink waits (and retries) rather than lose the events.
    async fn dead_letter(
        &mut self,
        first: u64,
        last: u64,
        events: Vec<Event>,
        error: String,
        attempts: u32,
    ) -> Result<(), Stopped> {
        self.dead.next_id += 1;
        self.dead.letters.push(DeadLetter {
            id: self.dead.next_id,
            first_seq: first,
            last_seq: last,
            events,
            error,
            attempts,
            at: Utc::now(),
        });
        while self.dead.letters.len() > self.cfg.max_dead_letters {
            self.dead.letters.remove(0);
            self.dead.dropped += 1;
        }
        let mut wait = Duration::from_millis(100);
        while !self.save_dead().await {
            self.pause(wait).await?;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }

    /// Saves the dead letters; false if the store refused.
    async fn save_dead(&mut self) -> bool {
        {
            let mut st = lock(&self.status);
            st.dead_letters = self.dead.letters.len();
            st.dead_letters_dropped = self.dead.dropped;
        }
        let text = match serde_json::to_string(&self.dead) {
            Ok(t) => t,
            Err(e) => {
                warn!(sink = %self.cfg.name, error = %e, "dead letters not serializable");
                return true;
            }
        };
        let key = dead_key(&self.cfg.name);
        match self.store.put_sink_state(&key, &text).await {
            Ok(()) => true,
            Err(e) => {
                warn!(sink = %self.cfg.name, error = %e, "dead letters not saved; will retry");
                false
            }
        }
    }

    /// Saves the cursor if it moved. A failure is logged and tried again later: the cursor in
    /// the store only ever lags, which means re-delivery, never loss.
    async fn save_cursor(&mut self) {
        if self.saved_cursor == self.cursor {
            return;
        }
        let text = match serde_json::to_string(&Saved {
            cursor: self.cursor,
        }) {
            Ok(t) => t,
            Err(_) => return,
        };
        match self.store.put_sink_state(&self.cfg.name, &text).await {
            Ok(()) => {
                self.saved_cursor = self.cursor;
                self.saved_at = tokio::time::Instant::now();
            }
            Err(e) => {
                self.saved_at = tokio::time::Instant::now();
                warn!(sink = %self.cfg.name, error = %e, "sink cursor not saved; will retry");
            }
        }
    }
}

/// A sink that writes each event as a structured `tracing` event (target `vigil::sink`).
#[derive(Debug, Default)]
pub struct LogSink {
    pub name: String,
}

#[async_trait]
impl Sink for LogSink {
    async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        for e in events {
            let to = e.body.status_after().map(|s| s.as_str());
            let from = e.body.status_before().map(|s| s.as_str());
            info!(
                target: "vigil::sink",
                sink = %self.name,
                seq = e.seq,
                at = %e.at,
                event = ?e.body.kind(),
                agent = e.agent.as_ref().map(|a| a.as_str()),
                kind = e.kind.as_deref(),
                from,
                to,
                "event"
            );
        }
        Ok(())
    }
}
