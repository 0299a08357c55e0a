//! The resume rules of `vigil watch` (no IO).

use serde_json::Value;

use super::{Start, WatchLine};

/// The resume rules: the last seq shown, and what each subscription frame means for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    last_seq: Option<u64>,
}

impl Cursor {
    /// Starting after `since`, or (`None`) with a snapshot.
    pub fn new(since: Option<u64>) -> Self {
        Self { last_seq: since }
    }

    /// The seq of the last event shown (or of the snapshot, or the `since` asked for).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// How to subscribe now: after the last seq shown, or with a snapshot when there is none.
    pub fn start(&self) -> Start {
        match self.last_seq {
            Some(seq) => Start::Since(seq),
            None => Start::Snapshot,
        }
    }

    /// Takes one frame of a subscription: the line to show (if any), and how to subscribe
    /// again when the subscription ended.
    pub fn on_frame(&mut self, frame: Value) -> (Option<WatchLine>, Option<Start>) {
        match frame["type"].as_str() {
            Some("snapshot") => {
                if let Some(seq) = frame["seq"].as_u64() {
                    self.last_seq = Some(seq);
                }
                (Some(WatchLine::Snapshot(frame)), None)
            }
            Some("event") => {
                let Some(seq) = frame["seq"].as_u64() else {
                    return (None, None); // not a persisted event: nothing to place it by
                };
                if self.last_seq.is_some_and(|last| seq <= last) {
                    return (None, None); // shown already
                }
                self.last_seq = Some(seq);
                (Some(WatchLine::Event { seq, frame }), None)
            }
            Some("stats") => (Some(WatchLine::Stats(frame)), None),
            Some("lagged") => {
                let resume_after = self.last_seq.or(frame["last_seq"].as_u64());
                self.last_seq = resume_after;
                let again = self.start();
                (
                    Some(WatchLine::Lagged {
                        frame,
                        resume_after,
                    }),
                    Some(again),
                )
            }
            Some("resync_required") => {
                let oldest = frame["oldest"].as_u64().unwrap_or(0);
                let last_seq = self.last_seq.take();
                (
                    Some(WatchLine::Resync {
                        frame,
                        oldest,
                        last_seq,
                    }),
                    Some(Start::Snapshot),
                )
            }
            _ => (None, None),
        }
    }
}
