//! QPACK (RFC 9204) with the static table only, and the HPACK/QPACK Huffman code.
//!
//! Spooky advertises `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0` and
//! `SETTINGS_QPACK_BLOCKED_STREAMS = 0`, so no peer may use the dynamic table with us and we
//! never use one when encoding. That keeps QPACK stateless: no encoder or decoder streams to
//! process, no blocked streams, and a field section can be decoded on its own the moment its
//! HEADERS frame is complete.
//!
//! - [`decode_field_section`] (or a reusable [`FieldDecoder`]) turns a HEADERS frame payload
//!   into a [`FieldSection`], rejecting anything that references the dynamic table and
//!   enforcing the RFC 9114 §4.2.2 size limit as it goes.
//! - [`encode_field_section`] / [`encode_fields`] produce a field section that uses the static
//!   table where it can and Huffman coding where it is shorter.
//! - [`huffman`] is the RFC 7541 Appendix B code, usable on its own.
//!
//! Every [`DecodeError`] except [`DecodeError::HeaderTooLarge`] is a connection error of type
//! [`QPACK_DECOMPRESSION_FAILED`].

mod decoder;
mod encoder;
pub mod huffman;
mod prefix_int;
pub mod static_table;

#[cfg(doc)]
use crate::fields::FieldSection;

pub use decoder::{DecodeError, FieldDecoder, decode_field_section};
pub use encoder::{encode_field_section, encode_fields};
pub use huffman::HuffmanError;

/// HTTP/3 error code QPACK_DECOMPRESSION_FAILED (RFC 9204 §6): the decoder failed to interpret
/// an encoded field section.
pub const QPACK_DECOMPRESSION_FAILED: u64 = 0x200;

/// Decodes a prefixed integer (RFC 7541 §5.1) from the start of `buf`, whose first byte keeps
/// its value in the low `prefix_bits` bits, for instructions that may arrive piecemeal (such as
/// those on the QPACK decoder stream).
///
/// Returns `Ok(Some((value, bytes_used)))`, or `Ok(None)` if `buf` ends before the integer does.
/// Values above 2^62 and encodings padded past the point of overflow are
/// [`DecodeError::BadInteger`], detected without waiting for the rest of the integer.
///
/// # Panics
///
/// If `prefix_bits` is not in `1..=8`.
pub fn decode_prefix_int(buf: &[u8], prefix_bits: u8) -> Result<Option<(u64, usize)>, DecodeError> {
    assert!(
        (1..=8).contains(&prefix_bits),
        "prefix of {prefix_bits} bits"
    );
    prefix_int::decode_partial(buf, prefix_bits)
}

/// Appends `value` as a prefixed integer (RFC 7541 §5.1) with a `prefix_bits`-bit prefix; the
/// high `8 - prefix_bits` bits of the first byte are taken from `flags`.
///
/// # Panics
///
/// If `prefix_bits` is not in `1..=8`, or `flags` has bits inside the prefix.
pub fn encode_prefix_int(flags: u8, prefix_bits: u8, value: u64, out: &mut Vec<u8>) {
    assert!(
        (1..=8).contains(&prefix_bits),
        "prefix of {prefix_bits} bits"
    );
    assert!(
        u16::from(flags) & ((1u16 << prefix_bits) - 1) == 0,
        "flags overlap the prefix"
    );
    prefix_int::encode(flags, prefix_bits, value, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_prefix_int_helpers() {
        // A Stream Cancellation (RFC 9204 §4.4.2) for stream 100: 01 + 6-bit prefix.
        let mut out = Vec::new();
        encode_prefix_int(0x40, 6, 100, &mut out);
        assert_eq!(out, [0x7f, 0x25]);
        assert_eq!(decode_prefix_int(&out, 6), Ok(Some((100, 2))));
        assert_eq!(decode_prefix_int(&out[..1], 6), Ok(None));
        assert_eq!(decode_prefix_int(&[], 6), Ok(None));
        let mut bad = vec![0x7f];
        bad.extend([0xff; 10]);
        assert_eq!(decode_prefix_int(&bad, 6), Err(DecodeError::BadInteger));
    }

    #[test]
    fn error_codes() {
        assert_eq!(QPACK_DECOMPRESSION_FAILED, 0x200);
        assert!(DecodeError::HeaderTooLarge { size: 1, limit: 0 }.is_too_large());
        assert!(!DecodeError::DynamicReference.is_too_large());
        assert_eq!(
            DecodeError::from(HuffmanError::Eos),
            DecodeError::BadHuffman
        );
    }
}
