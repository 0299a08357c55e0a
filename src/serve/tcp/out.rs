//! What a connection's writer is given to write.

use serde_json::Value;
use tokio::sync::mpsc;

use crate::protocol::ServerFrame;
use crate::serve::hub::{FrameText, MonitorFrame};
use crate::serve::monitoring::Outbox;

/// What a connection's writer writes: a reply of its own, or a monitor frame that every
/// subscriber of its event shares (its line ending is added as it is written, so no
/// subscriber copies it).
pub(super) enum Out {
    Line(String),
    Frame(FrameText),
}

impl Out {
    pub(super) fn append_to(&self, buf: &mut Vec<u8>) {
        match self {
            Out::Line(l) => buf.extend_from_slice(l.as_bytes()),
            Out::Frame(f) => {
                buf.extend_from_slice(f.as_bytes());
                buf.push(b'\n');
            }
        }
    }
}

impl From<String> for Out {
    fn from(line: String) -> Self {
        Out::Line(line)
    }
}

/// A connection's writer queue, as the monitor frames' [`Outbox`]: replies as lines, stream
/// frames shared.
#[derive(Clone)]
pub(super) struct TcpOut(pub(super) mpsc::Sender<Out>);

impl Outbox for TcpOut {
    async fn reply(&self, frame: ServerFrame<'_>, reference: Option<&Value>) -> bool {
        self.0.send(Out::Line(frame.line(reference))).await.is_ok()
    }

    async fn frame(&self, frame: MonitorFrame) -> bool {
        self.0.send(Out::Frame(frame.text)).await.is_ok()
    }

    fn backlogged(&self) -> bool {
        self.0.capacity() < self.0.max_capacity() / 2
    }
}
