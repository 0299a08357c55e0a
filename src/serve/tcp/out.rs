//! What a TCP connection's writer writes: its replies as lines, and its subscription's frames
//! as every subscriber of their event shares them (the line ending is added as each is
//! written, so no subscriber copies it).

use serde_json::Value;

use crate::protocol::ServerFrame;
use crate::serve::outgoing::{Outgoing, Queued};

/// A TCP connection's queue: replies are lines.
pub(super) type Out = Queued<String>;

/// A reply as a line.
pub(super) fn line(frame: ServerFrame<'_>, reference: Option<&Value>) -> String {
    frame.line(reference)
}

/// Appends what is written next to the write buffer.
pub(super) fn append(out: &Outgoing<String>, buf: &mut Vec<u8>) {
    match out {
        Outgoing::Reply(l) => buf.extend_from_slice(l.as_bytes()),
        Outgoing::Frame(f) => {
            buf.extend_from_slice(f.text.as_bytes());
            buf.push(b'\n');
        }
    }
}
