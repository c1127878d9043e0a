//! Prefixed integers (RFC 7541 §5.1, used unchanged by RFC 9204 §4.1.1).
//!
//! An integer is written into the low `N` bits of a first byte whose high `8 - N` bits carry
//! flags. Values below `2^N - 1` fit in the prefix; larger values fill the prefix with ones and
//! continue in 7-bit groups, least significant first, with the high bit of each byte set while
//! more bytes follow.

use super::DecodeError;

/// The largest value the decoder accepts (2^62, the bound RFC 9204 implementations share with
/// QUIC variable-length integers). Anything larger is treated as an overflow.
pub(crate) const MAX_VALUE: u64 = 1 << 62;

/// Appends `value` as a prefixed integer whose prefix is the low `prefix_bits` bits of the first
/// byte; the high bits of that byte are taken from `flags` (whose low `prefix_bits` bits must be
/// zero).
pub(crate) fn encode(flags: u8, prefix_bits: u8, value: u64, out: &mut Vec<u8>) {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = (1u16 << prefix_bits) as u64 - 1;
    debug_assert_eq!(u64::from(flags) & max_prefix, 0);
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Number of bytes [`encode`] writes for `value` with a `prefix_bits`-bit prefix.
#[cfg(test)]
pub(crate) fn encoded_len(prefix_bits: u8, value: u64) -> usize {
    let max_prefix = (1u16 << prefix_bits) as u64 - 1;
    if value < max_prefix {
        return 1;
    }
    let mut rest = value - max_prefix;
    let mut len = 2;
    while rest >= 0x80 {
        rest >>= 7;
        len += 1;
    }
    len
}

/// Decodes a prefixed integer from the start of `buf`, using the low `prefix_bits` bits of the
/// first byte. Returns the value and the number of bytes consumed.
///
/// Fails with [`DecodeError::BadInteger`] when `buf` ends inside the integer, when the value
/// exceeds [`MAX_VALUE`], or when the continuation runs past the point where any further byte
/// would overflow (so endless `0x80` padding is rejected after a handful of bytes).
pub(crate) fn decode(buf: &[u8], prefix_bits: u8) -> Result<(u64, usize), DecodeError> {
    decode_partial(buf, prefix_bits)?.ok_or(DecodeError::BadInteger)
}

/// Like [`decode`], for input that may still be arriving: `Ok(None)` when `buf` ends before the
/// integer does (including when it is empty). Overflow and overlong encodings are still
/// errors, detected as early as possible, so a peer cannot make a caller buffer forever.
pub(crate) fn decode_partial(
    buf: &[u8],
    prefix_bits: u8,
) -> Result<Option<(u64, usize)>, DecodeError> {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = (1u16 << prefix_bits) as u64 - 1;
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut value = u64::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(Some((value, 1)));
    }
    let mut shift = 0u32;
    for (i, &byte) in buf[1..].iter().enumerate() {
        // 9 continuation bytes carry 63 bits, which already covers MAX_VALUE; a tenth byte
        // (shift 63) cannot contribute anything representable.
        if shift > 56 {
            return Err(DecodeError::BadInteger);
        }
        // (byte & 0x7f) << 56 < 2^63 and value <= 2^62 here, so neither step can wrap.
        value += u64::from(byte & 0x7f) << shift;
        if value > MAX_VALUE {
            return Err(DecodeError::BadInteger);
        }
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 2)));
        }
        shift += 7;
    }
    // Out of input; if the next byte would be the tenth continuation byte it is doomed already.
    if shift > 56 {
        return Err(DecodeError::BadInteger);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7541_c1_examples() {
        // C.1.1: 10 with a 5-bit prefix.
        let mut out = Vec::new();
        encode(0, 5, 10, &mut out);
        assert_eq!(out, [0x0a]);
        assert_eq!(decode(&out, 5), Ok((10, 1)));

        // C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        encode(0, 5, 1337, &mut out);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        assert_eq!(decode(&out, 5), Ok((1337, 3)));

        // C.1.3: 42 starting at an octet boundary (8-bit prefix).
        out.clear();
        encode(0, 8, 42, &mut out);
        assert_eq!(out, [0x2a]);
        assert_eq!(decode(&out, 8), Ok((42, 1)));
    }

    #[test]
    fn flags_are_kept_and_ignored() {
        let mut out = Vec::new();
        encode(0xc0, 6, 17, &mut out);
        assert_eq!(out, [0xd1]);
        assert_eq!(decode(&out, 6), Ok((17, 1)));

        out.clear();
        encode(0x50, 4, 15, &mut out);
        assert_eq!(out, [0x5f, 0x00]);
        assert_eq!(decode(&out, 4), Ok((15, 2)));
    }

    #[test]
    fn boundaries_round_trip() {
        for prefix in 1..=8u8 {
            let max_prefix = (1u64 << prefix) - 1;
            for value in [
                0,
                1,
                max_prefix.saturating_sub(1),
                max_prefix,
                max_prefix + 1,
                max_prefix + 127,
                max_prefix + 128,
                1 << 20,
                u64::from(u32::MAX),
                MAX_VALUE - 1,
                MAX_VALUE,
            ] {
                let mut out = Vec::new();
                encode(0, prefix, value, &mut out);
                assert_eq!(out.len(), encoded_len(prefix, value));
                // Trailing bytes must not be consumed.
                out.push(0xff);
                assert_eq!(
                    decode(&out, prefix),
                    Ok((value, out.len() - 1)),
                    "{prefix} {value}"
                );
            }
        }
    }

    #[test]
    fn rejects_truncation() {
        assert_eq!(decode(&[], 5), Err(DecodeError::BadInteger));
        assert_eq!(decode(&[0x1f], 5), Err(DecodeError::BadInteger));
        assert_eq!(decode(&[0x1f, 0x9a], 5), Err(DecodeError::BadInteger));
    }

    #[test]
    fn rejects_overflow() {
        // One more than MAX_VALUE.
        let mut out = Vec::new();
        encode(0, 8, MAX_VALUE, &mut out);
        assert!(decode(&out, 8).is_ok());
        let mut too_big = Vec::new();
        // Hand-roll MAX_VALUE + 1 since `encode` itself has no upper bound.
        encode(0, 8, MAX_VALUE + 1, &mut too_big);
        assert_eq!(decode(&too_big, 8), Err(DecodeError::BadInteger));
        // u64::MAX.
        let mut huge = Vec::new();
        encode(0, 8, u64::MAX, &mut huge);
        assert_eq!(decode(&huge, 8), Err(DecodeError::BadInteger));
    }

    #[test]
    fn partial_input() {
        assert_eq!(decode_partial(&[], 6), Ok(None));
        assert_eq!(decode_partial(&[0x7f], 6), Ok(None));
        assert_eq!(decode_partial(&[0x7f, 0x80], 6), Ok(None));
        assert_eq!(
            decode_partial(&[0x7f, 0x80, 0x01], 6),
            Ok(Some((63 + 128, 3)))
        );
        assert_eq!(decode_partial(&[0x45, 0x00], 6), Ok(Some((5, 1))));
        // Nine continuation bytes with more to come can only overflow.
        let mut doomed = vec![0x3f];
        doomed.extend([0x80; 9]);
        assert_eq!(decode_partial(&doomed, 6), Err(DecodeError::BadInteger));
        assert_eq!(decode_partial(&doomed[..9], 6), Ok(None));
        // Overflow is reported even before the integer ends.
        let mut big = vec![0x3f];
        big.extend([0xff; 9]);
        assert_eq!(decode_partial(&big, 6), Err(DecodeError::BadInteger));
    }

    #[test]
    fn rejects_overlong_padding() {
        // Zero-valued continuation bytes: nine are tolerated, the tenth is refused.
        let mut ok = vec![0xff];
        ok.extend([0x80; 8]);
        ok.push(0x00);
        assert_eq!(decode(&ok, 8), Ok((255, 10)));
        let mut bad = vec![0xff];
        bad.extend([0x80; 9]);
        bad.push(0x00);
        assert_eq!(decode(&bad, 8), Err(DecodeError::BadInteger));
        let mut endless = vec![0xff];
        endless.extend([0x80; 1000]);
        assert_eq!(decode(&endless, 8), Err(DecodeError::BadInteger));
    }
}
