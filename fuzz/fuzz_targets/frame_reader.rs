//! Arbitrary stream bytes, split at an arbitrary point: the frame reader yields the same frames
//! whichever way the input is split, and never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spooky_core::h3::frame::{Frame, FrameReader};

fn read_all(pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut reader = FrameReader::new(16 * 1024);
    let mut frames = Vec::new();
    for piece in pieces {
        let mut input = Bytes::copy_from_slice(piece);
        loop {
            match reader.read(&mut input) {
                Ok(Some(Frame::Data(d))) => match frames.last_mut() {
                    Some(Frame::Data(prev)) => {
                        let mut joined = prev.to_vec();
                        joined.extend_from_slice(&d);
                        *prev = Bytes::from(joined);
                    }
                    _ => frames.push(Frame::Data(d)),
                },
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, false),
            }
        }
    }
    (frames, true)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = usize::from(data[0]) % data.len();
    let rest = &data[1..];
    let split = split.min(rest.len());
    let whole = read_all(&[rest]);
    let pieces = read_all(&[&rest[..split], &rest[split..]]);
    if whole.1 && pieces.1 {
        assert_eq!(whole.0, pieces.0);
    }
});
