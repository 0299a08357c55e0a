//! The resume rules of `vigil watch` (no IO).

use serde_json::Value;

use crate::protocol::ServerFrame;

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

    /// Takes one frame of a subscription (`value` is the frame as the server sent it, kept
    /// for printing): the line to show (if any), and how to subscribe again when the
    /// subscription ended.
    pub fn on_frame(
        &mut self,
        frame: &ServerFrame,
        value: Value,
    ) -> (Option<WatchLine>, Option<Start>) {
        match frame {
            ServerFrame::Snapshot { seq, .. } => {
                self.last_seq = Some(*seq);
                (Some(WatchLine::Snapshot(value)), None)
            }
            ServerFrame::Event(e) => {
                let seq = e.seq;
                if self.last_seq.is_some_and(|last| seq <= last) {
                    return (None, None); // shown already
                }
                self.last_seq = Some(seq);
                (Some(WatchLine::Event { seq, frame: value }), None)
            }
            ServerFrame::Stats(_) => (Some(WatchLine::Stats(value)), None),
            ServerFrame::Lagged { last_seq } => {
                let resume_after = self.last_seq.or(Some(*last_seq));
                self.last_seq = resume_after;
                let again = self.start();
                (
                    Some(WatchLine::Lagged {
                        frame: value,
                        resume_after,
                    }),
                    Some(again),
                )
            }
            ServerFrame::ResyncRequired { oldest } => {
                let last_seq = self.last_seq.take();
                (
                    Some(WatchLine::Resync {
                        frame: value,
                        oldest: *oldest,
                        last_seq,
                    }),
                    Some(Start::Snapshot),
                )
            }
            _ => (None, None),
        }
    }
}
