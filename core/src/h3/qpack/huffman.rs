//! The HPACK/QPACK Huffman code (RFC 7541 §5.2 and Appendix B).
//!
//! The code in Appendix B is canonical: codes of equal length are consecutive in symbol order,
//! and each length's first code follows on from the previous length's last. So the table below
//! lists only each symbol's code length, and the codes themselves are rebuilt at compile time.
//!
//! Decoding walks a 4-bit-at-a-time state machine, also built at compile time: a state is an
//! internal node of the code tree, and each `(state, nibble)` transition says which node is
//! reached, which symbol (at most one, since no code is shorter than 5 bits) was completed on
//! the way, and whether the EOS code was hit. A string may end only in a state reached by
//! at most 7 one-bits since the last completed symbol, which is exactly the padding rule.

/// Why a Huffman-coded string was rejected (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The string contains the EOS symbol.
    #[error("Huffman string contains the EOS symbol")]
    Eos,
    /// The string ends with more than 7 bits of padding, or padding that is not all ones.
    #[error("invalid Huffman padding")]
    Padding,
}

/// Number of symbols: the 256 byte values plus EOS.
const SYMBOLS: usize = 257;
/// The EOS symbol.
const EOS: u16 = 256;

/// Code length in bits of each symbol (RFC 7541 Appendix B), 16 symbols a row; EOS last.
const CODE_LENGTHS: [u8; SYMBOLS] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20  !"#$%&'()*+,-./
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30 0-9:;<=>?
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40 @A-O
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50 P-Z[\]^_
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60 `a-o
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70 p-z{|}~ DEL
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

/// The longest code, in bits.
const MAX_CODE_LEN: u8 = 30;

/// Each symbol's code, right-aligned, rebuilt from [`CODE_LENGTHS`] (canonical assignment).
const CODES: [u32; SYMBOLS] = build_codes();

const fn build_codes() -> [u32; SYMBOLS] {
    let mut codes = [0u32; SYMBOLS];
    let mut next = 0u32;
    let mut len = 1u8;
    while len <= MAX_CODE_LEN {
        let mut sym = 0;
        while sym < SYMBOLS {
            if CODE_LENGTHS[sym] == len {
                codes[sym] = next;
                next += 1;
            }
            sym += 1;
        }
        next <<= 1;
        len += 1;
    }
    // A complete prefix code ends with the all-ones code of the longest length, so after the
    // final shift `next` is exactly 2^(MAX_CODE_LEN + 1).
    assert!(next == 1 << (MAX_CODE_LEN as u32 + 1));
    codes
}

/// Internal nodes of the code tree: a complete binary tree with 257 leaves has 256.
const NODES: usize = SYMBOLS - 1;

/// A child in the code tree: a node index, or a symbol with [`LEAF`] set; 0 means unset (the
/// root is never a child).
const LEAF: u16 = 0x8000;

/// The code tree: `tree[node][bit]`.
const fn build_tree() -> [[u16; 2]; NODES] {
    let mut tree = [[0u16; 2]; NODES];
    let mut allocated = 1usize; // node 0 is the root
    let mut sym = 0;
    while sym < SYMBOLS {
        let len = CODE_LENGTHS[sym] as u32;
        let code = CODES[sym];
        let mut node = 0usize;
        let mut i = 0u32;
        while i < len {
            let bit = ((code >> (len - 1 - i)) & 1) as usize;
            if i + 1 == len {
                assert!(tree[node][bit] == 0, "code is not prefix-free");
                tree[node][bit] = LEAF | sym as u16;
            } else {
                let child = tree[node][bit];
                if child == 0 {
                    assert!(allocated < NODES, "too many tree nodes");
                    tree[node][bit] = allocated as u16;
                    node = allocated;
                    allocated += 1;
                } else {
                    assert!(child & LEAF == 0, "code is not prefix-free");
                    node = child as usize;
                }
            }
            i += 1;
        }
        sym += 1;
    }
    assert!(allocated == NODES);
    tree
}

/// Flag: the transition completed a symbol, stored in [`Transition::sym`].
const EMIT: u8 = 1;
/// Flag: the transition ran into the EOS code.
const FAIL: u8 = 2;
/// Flag: the state reached is a valid place for the string to end.
const ACCEPT: u8 = 4;

/// One step of the decoding state machine.
#[derive(Clone, Copy)]
struct Transition {
    next: u8,
    sym: u8,
    flags: u8,
}

/// `DECODE[state][nibble]`, 256 × 16 transitions (12 KiB).
static DECODE: [[Transition; 16]; NODES] = build_decoder();

const fn build_decoder() -> [[Transition; 16]; NODES] {
    let tree = build_tree();

    // A node may end the string if the path from the root to it is at most 7 ones.
    let mut accepting = [false; NODES];
    accepting[0] = true;
    let mut node = 0usize;
    let mut depth = 0;
    while depth < 7 {
        let child = tree[node][1];
        if child & LEAF != 0 {
            break;
        }
        node = child as usize;
        accepting[node] = true;
        depth += 1;
    }

    let mut table = [[Transition {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; NODES];
    let mut state = 0;
    while state < NODES {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut sym = 0u8;
            let mut flags = 0u8;
            let mut bit = 0;
            while bit < 4 {
                let b = (nibble >> (3 - bit)) & 1;
                let child = tree[node][b];
                if child & LEAF != 0 {
                    let s = child & !LEAF;
                    if s == EOS {
                        flags |= FAIL;
                        node = 0;
                        break;
                    }
                    sym = s as u8;
                    flags |= EMIT;
                    node = 0;
                } else {
                    node = child as usize;
                }
                bit += 1;
            }
            if accepting[node] && flags & FAIL == 0 {
                flags |= ACCEPT;
            }
            table[state][nibble] = Transition {
                next: node as u8,
                sym,
                flags,
            };
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// The length in bytes of `src` once Huffman coded (including padding).
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: u64 = src
        .iter()
        .map(|&b| u64::from(CODE_LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8) as usize
}

/// Appends the Huffman coding of `src` to `out`, padded with ones to a whole byte.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(src));
    // Pending bits sit in the low `pending` bits of `acc`; bits above them are stale and are
    // shifted out or masked off by the `as u8` truncation. `pending` stays below 8 between
    // symbols, so at most 37 meaningful bits are ever held.
    let mut acc = 0u64;
    let mut pending = 0u32;
    for &b in src {
        let len = u32::from(CODE_LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CODES[usize::from(b)]);
        pending += len;
        while pending >= 8 {
            pending -= 8;
            out.push((acc >> pending) as u8);
        }
    }
    if pending > 0 {
        // The EOS code is all ones, so its most significant bits are a run of ones.
        out.push(((acc << (8 - pending)) as u8) | (0xff >> pending));
    }
}

/// Decodes the Huffman-coded `src`, appending the bytes to `out`.
///
/// On error, `out` may hold part of the decoded string.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Every code is at least 5 bits long.
    out.reserve(src.len() * 8 / 5);
    let mut state = 0usize;
    let mut accept = true;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let t = DECODE[state][usize::from(nibble)];
            if t.flags & FAIL != 0 {
                return Err(HuffmanError::Eos);
            }
            if t.flags & EMIT != 0 {
                out.push(t.sym);
            }
            state = usize::from(t.next);
            accept = t.flags & ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn enc(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(s, &mut out);
        assert_eq!(out.len(), encoded_len(s));
        out
    }

    fn dec(s: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(s, &mut out).map(|()| out)
    }

    #[test]
    fn codes_match_rfc7541_appendix_b_samples() {
        // (symbol, code, length) straight from the table.
        let samples: [(usize, u32, u8); 20] = [
            (0, 0x1ff8, 13),
            (1, 0x7fffd8, 23),
            (9, 0xffffea, 24),
            (10, 0x3ffffffc, 30),
            (13, 0x3ffffffd, 30),
            (22, 0x3ffffffe, 30),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b':' as usize, 0x5c, 7),
            (b'<' as usize, 0x7ffc, 15),
            (b'\\' as usize, 0x7fff0, 19),
            (b'z' as usize, 0x7b, 7),
            (b'~' as usize, 0x1ffd, 13),
            (127, 0xffffffc, 28),
            (128, 0xfffe6, 20),
            (195, 0x7fff1, 19),
            (199, 0x1ffffec, 25),
            (203, 0x7ffffde, 27),
            (255, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ];
        for (sym, code, len) in samples {
            assert_eq!((CODES[sym], CODE_LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn rfc7541_c4_vectors() {
        let vectors: [(&[u8], &str); 4] = [
            (b"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            (b"no-cache", "a8eb 1064 9cbf"),
            (b"custom-key", "25a8 49e9 5ba9 7d7f"),
            (b"custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ];
        for (plain, coded) in vectors {
            let coded = hex(coded);
            assert_eq!(enc(plain), coded);
            assert_eq!(dec(&coded).unwrap(), plain);
        }
    }

    #[test]
    fn rfc7541_c6_vectors() {
        let vectors: [(&[u8], &str); 6] = [
            (b"302", "6402"),
            (b"private", "aec3 771a 4b"),
            (
                b"Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                b"https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
            (b"gzip", "9bd9 ab"),
            (
                b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        ];
        for (plain, coded) in vectors {
            let coded = hex(coded);
            assert_eq!(enc(plain), coded);
            assert_eq!(dec(&coded).unwrap(), plain);
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(dec(&enc(&all)).unwrap(), all);
        for b in 0..=255u8 {
            assert_eq!(dec(&enc(&[b])).unwrap(), [b]);
            assert_eq!(dec(&enc(&[b, b, b])).unwrap(), [b, b, b]);
        }
    }

    #[test]
    fn empty() {
        assert_eq!(enc(b""), b"");
        assert_eq!(encoded_len(b""), 0);
        assert_eq!(dec(b"").unwrap(), b"");
    }

    #[test]
    fn rejects_eos() {
        // EOS alone: 30 ones, then 2 bits of padding.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
        // 'a' (00011) then EOS and 5 bits of padding.
        assert_eq!(enc(b"a"), [0x1f]);
        assert_eq!(dec(&[0x1f, 0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
    }

    #[test]
    fn rejects_long_padding() {
        // '0' is 00000; a whole byte of ones after it is 8 padding bits.
        assert_eq!(dec(&[0x07]).unwrap(), b"0");
        assert_eq!(dec(&[0x07, 0xff]), Err(HuffmanError::Padding));
        // A lone all-ones byte is 8 padding bits too.
        assert_eq!(dec(&[0xff]), Err(HuffmanError::Padding));
    }

    #[test]
    fn rejects_padding_with_zeros() {
        // '0' (00000) then padding 110 instead of 111.
        assert_eq!(dec(&[0x06]), Err(HuffmanError::Padding));
        // '0' then 000: decodes as the start of another code, not padding.
        assert_eq!(dec(&[0x00]), Err(HuffmanError::Padding));
    }

    #[test]
    fn seven_bits_of_padding_is_fine() {
        // 'e' (00101) + 'a' (00011) = 10 bits; 6 bits of padding.
        assert_eq!(dec(&enc(b"ea")).unwrap(), b"ea");
        // Five 5-bit codes are 25 bits, leaving exactly 7 bits of padding.
        let coded = enc(b"00000");
        assert_eq!(coded.len(), 4);
        assert_eq!(coded[3] & 0x7f, 0x7f);
        assert_eq!(dec(&coded).unwrap(), b"00000");
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let coded = enc(&data);
            prop_assert_eq!(dec(&coded).unwrap(), data);
        }

        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            if decode(&data, &mut out).is_ok() {
                // Whatever decodes must re-encode to the same bytes: the padding rule leaves
                // exactly one valid coding per string.
                prop_assert_eq!(enc(&out), data);
            }
        }
    }
}
