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

mod handle;
mod log;
mod runner;

pub(crate) use handle::{Control, SinkHandle};
pub use log::LogSink;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::broadcaster::{SubscribeOptions, Subscription};
use crate::model::{Event, EventKind, Status};
use handle::dead_key;
use runner::{Runner, SavedDead};

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
    /// Whether the filter lets this event through.
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
    /// Which events the sink receives.
    pub filter: SinkFilter,
    /// Most events in one delivery.
    pub batch_size: usize,
    /// Deliveries of one batch before it becomes a dead letter.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each further failure, up to
    /// `backoff_max`. Half of each wait is fixed, half random.
    pub backoff_initial: Duration,
    /// The longest wait between two attempts at a batch.
    pub backoff_max: Duration,
    /// Dead letters kept; beyond this the oldest is dropped (and counted).
    pub max_dead_letters: usize,
    /// The cursor is saved at most this often while events flow (and whenever the sink is
    /// idle or stops): a crash re-delivers at most this much.
    pub cursor_interval: Duration,
    /// Where the sink starts when no cursor is saved.
    pub start: StartAt,
}

impl SinkConfig {
    /// A configuration with defaults: batches of 100, 10 attempts, backoff from 500 ms to 60 s,
    /// 1,000 dead letters kept, the cursor saved every second, starting now.
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

    /// Checks the name (1-64 of `A-Za-z0-9._-`), the batch size, attempts and backoff; the error
    /// says what is wrong.
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
    /// Seq of the first event in the batch.
    pub first_seq: u64,
    /// Seq of the last event in the batch.
    pub last_seq: u64,
    /// The events (empty when they were lost before delivery, e.g. to retention).
    pub events: Vec<Event>,
    /// The last delivery error.
    pub error: String,
    /// Deliveries tried (across replays too).
    pub attempts: u32,
    /// When the batch last failed for good: dead-lettered, or a replay failed (UTC).
    #[serde(with = "crate::model::ts")]
    pub at: DateTime<Utc>,
}

/// What an operator sees of a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// What it is (`webhook`, `log`, ...).
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
    /// Deliveries that failed since the last one that succeeded.
    pub consecutive_failures: u32,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// When the last delivery failed (UTC); `None` if none has.
    #[serde(with = "crate::model::ts::opt")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// When the last delivery succeeded (UTC); `None` if none has.
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

/// The loop ended because the sink is stopping.
struct Stopped;
