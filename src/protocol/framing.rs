//! Line framing with a maximum length: one frame per `\n` (a `\r` before it is dropped).
//!
//! A line longer than the maximum is not an error of the stream: the decoder yields
//! [`Line::TooLarge`] once, discards bytes up to the next newline, and goes on. (A decoder
//! error would end a `FramedRead`, and with it the connection.) Memory per connection stays
//! bounded by the maximum plus one read buffer.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` or `\r\n`.
    Frame(BytesMut),
    /// A line longer than the maximum; its bytes are discarded.
    TooLarge,
}

/// The decoder (use with `tokio_util::codec::FramedRead`).
#[derive(Debug, Clone)]
pub struct LineFrames {
    max: usize,
    /// Bytes already searched for a newline.
    searched: usize,
    /// Inside an oversized line: drop everything up to the next newline.
    discarding: bool,
}

impl LineFrames {
    /// A decoder whose lines (without their ending) are at most `max_frame_bytes` long.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max: max_frame_bytes.max(1),
            searched: 0,
            discarding: false,
        }
    }
}

impl Decoder for LineFrames {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        loop {
            let newline = buf[self.searched..].iter().position(|b| *b == b'\n');
            match (self.discarding, newline) {
                (true, Some(i)) => {
                    buf.advance(self.searched + i + 1);
                    self.searched = 0;
                    self.discarding = false;
                }
                (true, None) => {
                    buf.clear();
                    self.searched = 0;
                    return Ok(None);
                }
                (false, Some(i)) => {
                    let end = self.searched + i;
                    self.searched = 0;
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max {
                        return Ok(Some(Line::TooLarge));
                    }
                    return Ok(Some(Line::Frame(line)));
                }
                (false, None) => {
                    if buf.len() > self.max + 1 {
                        // Too long already (one byte of slack for a `\r`): say so once.
                        self.discarding = true;
                        buf.clear();
                        self.searched = 0;
                        return Ok(Some(Line::TooLarge));
                    }
                    self.searched = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Self::Error> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if !buf.is_empty() && !self.discarding => {
                // A last line without its newline.
                let mut line = buf.split();
                self.searched = 0;
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Ok(Some(match line.len() > self.max {
                    true => Line::TooLarge,
                    false => Line::Frame(line),
                }))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` one after another, then the end of the stream.
    fn run(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut d = LineFrames::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(l) = d.decode(&mut buf).unwrap() {
                out.push(l);
            }
        }
        while let Some(l) = d.decode_eof(&mut buf).unwrap() {
            out.push(l);
        }
        out
    }

    fn frame(s: &str) -> Line {
        Line::Frame(BytesMut::from(s.as_bytes()))
    }

    #[test]
    fn lines_crlf_and_a_last_line_without_newline() {
        assert_eq!(
            run(100, &[b"a\nbb\r\n", b"\nc"]),
            vec![frame("a"), frame("bb"), frame(""), frame("c")]
        );
    }

    #[test]
    fn an_oversized_line_is_reported_once_and_the_next_line_is_read() {
        let long = vec![b'x'; 50];
        let out = run(10, &[&long, &long, b"tail\nok\n"]);
        assert_eq!(out, vec![Line::TooLarge, frame("ok")]);
        // Exactly at the limit is fine; one more is not.
        assert_eq!(
            run(3, &[b"abc\nabcd\n"]),
            vec![frame("abc"), Line::TooLarge]
        );
        assert_eq!(run(3, &[b"abc\r\n"]), vec![frame("abc")]);
    }

    proptest! {
        /// However the bytes are split into reads, the frames are the same; nothing panics;
        /// no frame is longer than the maximum.
        #[test]
        fn framing_does_not_depend_on_how_bytes_arrive(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            max in 1usize..40,
        ) {
            let whole = run(max, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..c]);
                at = c;
            }
            chunks.push(&data[at..]);
            let pieces = run(max, &chunks);
            prop_assert_eq!(&whole, &pieces);
            for l in &whole {
                if let Line::Frame(f) = l {
                    prop_assert!(f.len() <= max);
                    prop_assert!(!f.contains(&b'\n'));
                }
            }
        }
    }
}
