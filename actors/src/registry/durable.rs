//! What waits for durability, and what the edges are told before they queue more.
//!
//! - [`Backpressure`]: shared by the registry (which writes it) and the places work enters
//!   (registration, admin writes, subscriptions), so they can refuse with `overloaded` while
//!   the store fails or too many events wait for it, instead of queueing without bound.
//! - [`Waiter`]: an answer held by the registry until the events before it are durable, so no
//!   caller is told of a change that a crash could still undo.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::admin::{AdminError, AdminResponse};
use crate::model::{Event, EventBody};
use crate::registry::intake::Intake;

/// Bytes an event is taken to cost while it waits, beyond its strings.
const EVENT_OVERHEAD: usize = 160;

/// About how much memory an event holds while it waits for the store (its JSON is of the
/// same order). A cheap estimate: it is taken for every event sequenced.
pub(crate) fn event_bytes(e: &Event) -> usize {
    let strings = match &e.body {
        EventBody::Registered {
            name,
            metadata,
            capabilities,
            ..
        } => {
            name.len()
                + metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 16)
                    .sum::<usize>()
                + capabilities.iter().map(|c| c.len() + 8).sum::<usize>()
        }
        EventBody::Activity { from, to, detail } => {
            from.as_ref().map_or(0, String::len) + to.len() + detail.as_ref().map_or(0, String::len)
        }
        EventBody::Job {
            job,
            from,
            to,
            error,
            ..
        } => {
            job.len()
                + from.as_ref().map_or(0, String::len)
                + to.len()
                + error.as_ref().map_or(0, String::len)
        }
        EventBody::Alert { issue, detail, .. } => issue.len() + detail.len(),
        EventBody::Transition { .. } | EventBody::Deregistered { .. } => 0,
    };
    EVENT_OVERHEAD + e.agent.as_ref().map_or(0, |a| a.as_str().len()) + strings
}

/// The state of the write pipeline as the edges see it.
#[derive(Debug)]
pub(crate) struct Backpressure {
    /// The log's last write succeeded.
    pub store_ok: Arc<AtomicBool>,
    /// Bytes of events sequenced and not yet durable (see [`event_bytes`]).
    pending_bytes: AtomicU64,
    max_pending_bytes: u64,
    /// Reports on their way to the registry.
    pub reports: Arc<Intake>,
}

impl Backpressure {
    pub(crate) fn new(store_ok: Arc<AtomicBool>, max_pending_bytes: u64) -> Self {
        Self {
            store_ok,
            pending_bytes: AtomicU64::new(0),
            max_pending_bytes,
            reports: Arc::default(),
        }
    }

    pub(crate) fn set_pending_bytes(&self, n: u64) {
        self.pending_bytes.store(n, Ordering::Relaxed);
    }

    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Why new registrations are refused: too many events wait for the store already.
    pub(crate) fn refuse_registration(&self) -> Option<String> {
        let pending = self.pending_bytes();
        (pending > self.max_pending_bytes).then(|| {
            format!(
                "{pending} bytes of events wait for the store (limit {}); try again later",
                self.max_pending_bytes
            )
        })
    }

    /// Why an admin write or a new subscription is refused: the store is failing, or too
    /// many events wait for it.
    pub(crate) fn refuse_write(&self) -> Option<String> {
        if !self.store_ok.load(Ordering::SeqCst) {
            return Some("the store is failing; try again when it recovers".into());
        }
        self.refuse_registration()
    }
}

/// An answer the registry sends once every event sequenced before it is durable.
pub(crate) enum Waiter {
    /// A signal that the events are durable.
    Durable(RpcReplyPort<()>),
    /// An admin write's answer (evict, set_status, maintenance, deregister).
    Admin(
        RpcReplyPort<Result<AdminResponse, AdminError>>,
        Box<Result<AdminResponse, AdminError>>,
    ),
}

impl Waiter {
    /// Whether the caller has stopped waiting (its answer can be dropped).
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Waiter::Durable(r) => r.is_closed(),
            Waiter::Admin(r, _) => r.is_closed(),
        }
    }

    pub(crate) fn answer(self) {
        match self {
            Waiter::Durable(r) => {
                let _ = r.send(());
            }
            Waiter::Admin(r, answer) => {
                let _ = r.send(*answer);
            }
        }
    }
}
