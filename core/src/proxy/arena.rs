//! Small buffers carved out of shared blocks.
//!
//! Every response and request needs a few small owned buffers: frame headers, encoded header
//! sections, HTTP/1.1 request heads. Copying them into a shared block and splitting them off
//! (`BytesMut::split`) costs a memcpy of a few dozen bytes instead of an allocation each; a
//! block is freed when the last buffer cut from it is.

use bytes::{Bytes, BytesMut};

use crate::h3::frame;

/// Size of each block.
const BLOCK: usize = 16 * 1024;

#[derive(Default)]
pub(super) struct Arena {
    block: BytesMut,
}

impl Arena {
    /// `parts`, concatenated, as one owned buffer.
    pub(super) fn copy(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.block.capacity() < len {
            self.block = BytesMut::with_capacity(BLOCK.max(len));
        }
        for part in parts {
            self.block.extend_from_slice(part);
        }
        self.block.split().freeze()
    }

    /// A frame header for a payload of `len` bytes.
    pub(super) fn frame_header(&mut self, frame_type: u64, len: usize) -> Bytes {
        let mut header = [0u8; 16];
        let n = frame::header_bytes(frame_type, len as u64, &mut header);
        self.copy(&[&header[..n]])
    }

    /// A whole frame whose payload is `payload`.
    pub(super) fn frame(&mut self, frame_type: u64, payload: &[u8]) -> Bytes {
        let mut header = [0u8; 16];
        let n = frame::header_bytes(frame_type, payload.len() as u64, &mut header);
        self.copy(&[&header[..n], payload])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_independent_and_share_blocks() {
        let mut arena = Arena::default();
        let a = arena.copy(&[b"hello", b" "]);
        let b = arena.frame(frame::ty::DATA, b"xyz");
        assert_eq!(&a[..], b"hello ");
        assert_eq!(&b[..], &[0x00, 0x03, b'x', b'y', b'z']);
        // The second came from the same block, right after the first.
        assert_eq!(a.as_ptr() as usize + a.len(), b.as_ptr() as usize);
        let big = arena.copy(&[&vec![7u8; BLOCK * 2]]);
        assert_eq!(big.len(), BLOCK * 2);
    }
}
