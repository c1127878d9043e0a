//! QUIC variable-length integers (RFC 9000 §16), as HTTP/3 frames and stream types use them.

/// Largest value a varint can hold.
pub const MAX: u64 = (1 << 62) - 1;

/// Bytes needed to encode `v` (which must be at most [`MAX`]).
pub fn encoded_len(v: u64) -> usize {
    debug_assert!(v <= MAX);
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends `v` (at most [`MAX`]) in the shortest encoding.
pub fn encode(v: u64, out: &mut Vec<u8>) {
    match encoded_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Writes `v` (at most [`MAX`]) at the start of `out` (8 bytes suffice) and returns its length.
pub fn write(v: u64, out: &mut [u8]) -> usize {
    let len = encoded_len(v);
    let tag: u64 = match len {
        1 => 0,
        2 => 0x4000,
        4 => 0x8000_0000,
        _ => 0xc000_0000_0000_0000,
    };
    let bytes = (v | tag).to_be_bytes();
    out[..len].copy_from_slice(&bytes[8 - len..]);
    len
}

/// Decodes a varint from the start of `buf`: `Some((value, bytes used))`, or `None` if `buf`
/// holds only part of one.
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_examples() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes), Some((value, bytes.len())));
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes);
        }
        // A non-minimal encoding is still a valid varint.
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn write_matches_encode() {
        for v in [0, 37, 63, 64, 15_293, 16_384, 494_878_333, 1 << 30, MAX] {
            let mut a = Vec::new();
            encode(v, &mut a);
            let mut b = [0u8; 8];
            let n = write(v, &mut b);
            assert_eq!(&b[..n], &a[..]);
        }
    }

    #[test]
    fn partial_input_needs_more() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x9d, 0x7f]), None);
    }

    #[test]
    fn boundaries_round_trip() {
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out.len(), encoded_len(v));
            assert_eq!(decode(&out), Some((v, out.len())));
        }
    }
}
