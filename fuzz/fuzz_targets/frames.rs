//! Arbitrary bytes, cut into arbitrary chunks, through the line framing and the frame decoder:
//! nothing panics, every line is either a frame or a protocol error, and an oversized line is
//! reported once and skipped.
//!
//! Run: `cargo +nightly fuzz run frames` (from the repository root; needs `cargo install
//! cargo-fuzz`).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use vigil::protocol::framing::{Line, LineFrames};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let max = 16 + (cut as usize) * 4;
    let mut codec = LineFrames::new(max);
    let mut buf = BytesMut::new();
    let step = 1 + (cut as usize % 97);
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(line)) = codec.decode(&mut buf) {
            if let Line::Frame(bytes) = line {
                assert!(bytes.len() <= max);
                match vigil::protocol::decode(&bytes) {
                    Ok(_) => {}
                    Err(e) => assert!(!e.message.is_empty()),
                }
            }
        }
        assert!(buf.len() <= max + step, "the buffer stays bounded");
    }
});
