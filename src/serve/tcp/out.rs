//! What a connection's writer is given to write.

use std::sync::Arc;

/// What a connection's writer writes: a reply of its own, or a monitor frame that every
/// subscriber of its event shares (its line ending is added as it is written, so no
/// subscriber copies it).
pub(super) enum Out {
    Line(String),
    Frame(Arc<str>),
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
