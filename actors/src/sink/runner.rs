//! A sink's task: follows the durable log from its cursor, delivers with retries and
//! backoff, parks what fails for good as dead letters, saves its cursor.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{
    dead_key, Control, DeadLetter, LogSource, Sink, SinkConfig, SinkError, SinkStatus, StartAt,
    Stopped,
};
use crate::broadcaster::{SubscribeOptions, Subscription, SubscriptionItem};
use crate::model::Event;
use crate::rules::backoff::{Backoff, Jitter};
use crate::store::Store;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    cursor: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SavedDead {
    next_id: u64,
    dropped: u64,
    pub(super) letters: Vec<DeadLetter>,
}

pub(super) struct Runner {
    pub(super) cfg: SinkConfig,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) source: Arc<dyn LogSource>,
    pub(super) store: Arc<dyn Store>,
    pub(super) status: Arc<Mutex<SinkStatus>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) control: mpsc::Receiver<Control>,
    pub(super) cursor: u64,
    pub(super) saved_cursor: u64,
    pub(super) saved_at: tokio::time::Instant,
    pub(super) dead: SavedDead,
}

/// A sink's retries of its own work (claiming the sink, reading and saving its state,
/// subscribing again): from 100 ms to 5 s, without spread (one process retrying its store and
/// its runtime). Deliveries back off by the sink's settings instead ([`Runner::backoff`]).
fn store_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Jitter::None,
    )
}

impl Runner {
    /// Delivers until stopped (or until its saved state turns out unreadable); gives the
    /// runner back, to be run again (on a cluster, when this node delivers the sink again).
    pub(super) async fn run(mut self) -> Self {
        if self.restore().await.is_err() {
            return self;
        }
        info!(sink = %self.cfg.name, kind = %self.cfg.kind, cursor = self.cursor, "sink started");
        let _ = self.follow().await;
        self.save_cursor().await;
        debug!(sink = %self.cfg.name, cursor = self.cursor, "sink stopped");
        self
    }

    /// Reads the saved cursor and dead letters (retrying while the store fails), after
    /// claiming the sink for this process (see [`Store::claim_sink`]).
    async fn restore(&mut self) -> Result<(), Stopped> {
        let key = self.cfg.name.clone();
        let mut backoff = store_backoff();
        while let Err(e) = self.store.claim_sink(&key).await {
            warn!(sink = %self.cfg.name, error = %e, "sink cannot claim its delivery; retrying");
            self.pause(backoff.fail()).await?;
        }
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
        let mut st = self.status.lock();
        st.delivered_seq = self.cursor;
        st.dead_letters = self.dead.letters.len();
        st.dead_letters_dropped = self.dead.dropped;
        st.state = "ok".into();
        Ok(())
    }

    /// Stops before delivering anything, and says why in the status and the log.
    fn refuse(&mut self, why: String) -> Result<(), Stopped> {
        tracing::error!(sink = %self.cfg.name, "sink not started: {why}");
        let mut st = self.status.lock();
        st.state = "failed".into();
        st.last_error = Some(why);
        st.last_error_at = Some(Utc::now());
        Err(Stopped)
    }

    async fn load_state(&mut self, key: &str) -> Result<Option<String>, Stopped> {
        let mut backoff = store_backoff();
        loop {
            match self.store.sink_state(key).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    warn!(sink = %self.cfg.name, error = %e, "sink cannot read its state; retrying");
                    self.pause(backoff.fail()).await?;
                }
            }
        }
    }

    /// Subscribes after the cursor and delivers, until stopped.
    async fn follow(&mut self) -> Result<(), Stopped> {
        let mut backoff = store_backoff();
        loop {
            let opts = SubscribeOptions {
                since: Some(self.cursor),
                ..SubscribeOptions::default()
            };
            let Some(mut sub) = self.source.subscribe(opts).await else {
                // The runtime is stopping or busy: try again shortly.
                self.pause(backoff.fail()).await?;
                continue;
            };
            match self.drain(&mut sub).await? {
                // Fell behind (the receiver was slow): resume from the cursor.
                Some(SubscriptionItem::Lagged { .. }) => {
                    backoff.reset();
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
                        self.pause(backoff.fail()).await?;
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
                    self.status.lock().delivered_seq = self.cursor;
                    self.save_cursor().await;
                }
                // The runtime is stopping.
                _ => {
                    self.status.lock().state = "stopped".into();
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
        self.status.lock().delivered_seq = self.cursor;
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
                    let mut st = self.status.lock();
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
                        let mut st = self.status.lock();
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

    /// The wait after `attempt` failed attempts: doubled from `backoff_initial` up to
    /// `backoff_max`, half of it fixed and half random.
    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(
            self.cfg.backoff_initial,
            self.cfg.backoff_max,
            Jitter::Equal,
        )
        .wait(attempt)
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
        let mut backoff = store_backoff();
        while !self.save_dead().await {
            self.pause(backoff.fail()).await?;
        }
        Ok(())
    }

    /// Saves the dead letters; false if the store refused.
    async fn save_dead(&mut self) -> bool {
        {
            let mut st = self.status.lock();
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
