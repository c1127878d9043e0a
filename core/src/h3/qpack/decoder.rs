//! Decoding encoded field sections (RFC 9204 §4.5) against the static table only.

use crate::fields::FieldSection;

use super::huffman::{self, HuffmanError};
use super::{prefix_int, static_table};

/// Errors while decoding a field section; all map to QPACK_DECOMPRESSION_FAILED (0x200) except
/// HeaderTooLarge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The section references the dynamic table (a non-zero Required Insert Count, a negative
    /// Base, or a field line with T = 0 or post-base indexing), but we advertise a dynamic
    /// table capacity of 0.
    #[error("field section references the dynamic table, whose capacity is 0")]
    DynamicReference,
    /// A static table index past the last entry (98).
    #[error("static table index {0} out of range")]
    BadStaticIndex(u64),
    /// A prefixed integer that is truncated, too large (over 2^62) or needlessly long.
    #[error("integer overflow or truncated integer")]
    BadInteger,
    /// The section ends in the middle of a field line, or a string is longer than what is left.
    #[error("truncated field line")]
    Truncated,
    /// A Huffman-coded string contains EOS or has invalid padding.
    #[error("invalid Huffman encoding")]
    BadHuffman,
    /// The decoded section is larger than allowed. `size` is the size counted when the limit
    /// was crossed (the full section may be larger still).
    #[error("decoded field section of {size} bytes exceeds the limit of {limit}")]
    HeaderTooLarge {
        /// Size counted so far, as RFC 9114 §4.2.2 counts it.
        size: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl DecodeError {
    /// True for [`DecodeError::HeaderTooLarge`], the one error that is not a
    /// QPACK_DECOMPRESSION_FAILED connection error: the section was well formed, just too big.
    pub fn is_too_large(&self) -> bool {
        matches!(self, DecodeError::HeaderTooLarge { .. })
    }
}

impl From<HuffmanError> for DecodeError {
    fn from(_: HuffmanError) -> Self {
        DecodeError::BadHuffman
    }
}

/// Per-field overhead in the RFC 9114 §4.2.2 size.
const FIELD_OVERHEAD: usize = 32;

/// A field section decoder that keeps its scratch buffer (for Huffman-coded strings) between
/// calls, so steady-state decoding allocates only inside the output [`FieldSection`].
#[derive(Debug, Default, Clone)]
pub struct FieldDecoder {
    scratch: Vec<u8>,
}

impl FieldDecoder {
    /// A decoder with an empty scratch buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Same as [`decode_field_section`], reusing this decoder's scratch buffer.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_size: usize,
        out: &mut FieldSection,
    ) -> Result<(), DecodeError> {
        out.clear();
        let mut r = Reader { block, pos: 0 };

        // Field section prefix (§4.5.1): Required Insert Count, then Sign + Delta Base.
        let required_insert_count = r.int(8)?;
        if required_insert_count != 0 {
            return Err(DecodeError::DynamicReference);
        }
        let sign = r.peek()? & 0x80 != 0;
        let _delta_base = r.int(7)?;
        if sign {
            // Base = 0 - Delta Base - 1 < 0, which §4.5.1.2 forbids; only a dynamic table
            // user could have meant anything by it.
            return Err(DecodeError::DynamicReference);
        }

        let mut size = 0usize;
        let limit = max_size;
        let check = |size: usize| {
            if size > limit {
                Err(DecodeError::HeaderTooLarge { size, limit })
            } else {
                Ok(())
            }
        };

        while !r.is_empty() {
            size = size.saturating_add(FIELD_OVERHEAD);
            check(size)?;
            let first = r.peek()?;
            self.scratch.clear();
            if first & 0x80 != 0 {
                // Indexed Field Line (§4.5.2): 1 T Index(6+).
                if first & 0x40 == 0 {
                    return Err(DecodeError::DynamicReference);
                }
                let (name, value) = static_entry(r.int(6)?)?;
                size = size.saturating_add(name.len() + value.len());
                check(size)?;
                out.push(name, value);
            } else if first & 0x40 != 0 {
                // Literal Field Line with Name Reference (§4.5.4): 0 1 N T Index(4+).
                if first & 0x10 == 0 {
                    return Err(DecodeError::DynamicReference);
                }
                let (name, _) = static_entry(r.int(4)?)?;
                size = size.saturating_add(name.len());
                check(size)?;
                let value = r.string(0x80, 7, &mut self.scratch)?;
                size = size.saturating_add(value.len());
                check(size)?;
                out.push(name, value.get(&self.scratch));
            } else if first & 0x20 != 0 {
                // Literal Field Line with Literal Name (§4.5.6): 0 0 1 N H NameLen(3+).
                let name = r.string(0x08, 3, &mut self.scratch)?;
                size = size.saturating_add(name.len());
                check(size)?;
                let value = r.string(0x80, 7, &mut self.scratch)?;
                size = size.saturating_add(value.len());
                check(size)?;
                out.push(name.get(&self.scratch), value.get(&self.scratch));
            } else {
                // 0001xxxx: Indexed Field Line with Post-Base Index (§4.5.3);
                // 0000xxxx: Literal Field Line with Post-Base Name Reference (§4.5.5).
                return Err(DecodeError::DynamicReference);
            }
        }
        Ok(())
    }
}

/// Decodes an encoded field section (the payload of a HEADERS frame) into `out` (cleared first).
///
/// `max_size` is the limit on the decoded size as RFC 9114 §4.2.2 counts it (sum of name +
/// value lengths + 32 per field); exceeding it returns [`DecodeError::HeaderTooLarge`] as soon
/// as it is known, without decoding the rest of the section. On error `out` holds the fields
/// decoded so far and should be discarded.
pub fn decode_field_section(
    block: &[u8],
    max_size: usize,
    out: &mut FieldSection,
) -> Result<(), DecodeError> {
    FieldDecoder::new().decode(block, max_size, out)
}

fn static_entry(index: u64) -> Result<(&'static [u8], &'static [u8]), DecodeError> {
    static_table::get(index).ok_or(DecodeError::BadStaticIndex(index))
}

/// A decoded string: either a slice of the encoded section or a range of the scratch buffer.
enum Str<'a> {
    Raw(&'a [u8]),
    Scratch(usize, usize),
}

impl<'a> Str<'a> {
    fn len(&self) -> usize {
        match *self {
            Str::Raw(s) => s.len(),
            Str::Scratch(start, end) => end - start,
        }
    }

    fn get<'s>(&self, scratch: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match *self {
            Str::Raw(s) => s,
            Str::Scratch(start, end) => &scratch[start..end],
        }
    }
}

struct Reader<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.pos >= self.block.len()
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.block
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// A prefixed integer starting at the current byte. Running out of input before the
    /// integer starts is [`DecodeError::Truncated`]; running out inside it is
    /// [`DecodeError::BadInteger`].
    fn int(&mut self, prefix_bits: u8) -> Result<u64, DecodeError> {
        let rest = &self.block[self.pos..];
        if rest.is_empty() {
            return Err(DecodeError::Truncated);
        }
        let (value, used) = prefix_int::decode(rest, prefix_bits)?;
        self.pos += used;
        Ok(value)
    }

    /// A string literal (§4.1.2): an H flag (`huffman_flag` in the first byte), a length with a
    /// `prefix_bits`-bit prefix, then the bytes. Huffman-coded strings are decoded onto the end
    /// of `scratch`.
    fn string(
        &mut self,
        huffman_flag: u8,
        prefix_bits: u8,
        scratch: &mut Vec<u8>,
    ) -> Result<Str<'a>, DecodeError> {
        let huffman = self.peek()? & huffman_flag != 0;
        let len = self.int(prefix_bits)?;
        let remaining = self.block.len() - self.pos;
        let len = match usize::try_from(len) {
            Ok(len) if len <= remaining => len,
            _ => return Err(DecodeError::Truncated),
        };
        let bytes = &self.block[self.pos..self.pos + len];
        self.pos += len;
        if huffman {
            let start = scratch.len();
            huffman::decode(bytes, scratch)?;
            Ok(Str::Scratch(start, scratch.len()))
        } else {
            Ok(Str::Raw(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::qpack::{encode_field_section, encode_fields};
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(block: &[u8]) -> Result<FieldSection, DecodeError> {
        let mut out = FieldSection::new();
        decode_field_section(block, usize::MAX, &mut out).map(|()| out)
    }

    fn pairs(s: &FieldSection) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }

    fn section(fields: &[(&str, &str)]) -> FieldSection {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn round_trip(fields: &FieldSection) {
        let mut block = Vec::new();
        encode_fields(fields, &mut block);
        let mut out = FieldSection::new();
        decode_field_section(&block, usize::MAX, &mut out).unwrap();
        assert_eq!(&out, fields);
        // The exact size limit passes; one byte less does not.
        let size = fields.rfc_size();
        decode_field_section(&block, size, &mut out).unwrap();
        assert_eq!(&out, fields);
        if size > 0 {
            let err = decode_field_section(&block, size - 1, &mut out).unwrap_err();
            assert!(err.is_too_large(), "{err:?}");
        }
    }

    #[test]
    fn rfc9204_b1_example() {
        let block = hex("0000 510b 2f69 6e64 6578 2e68 746d 6c");
        let out = decode(&block).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out.get(0), Some((&b":path"[..], &b"/index.html"[..])));
        // Our encoder Huffman codes the value (8 bytes instead of 11), and decodes it back.
        let mut encoded = Vec::new();
        encode_fields(&out, &mut encoded);
        assert_eq!(&encoded[..4], [0x00, 0x00, 0x51, 0x88]);
        assert_eq!(encoded.len(), 12);
        assert_eq!(decode(&encoded).unwrap(), out);
    }

    #[test]
    fn empty_section() {
        assert!(decode(&[0, 0]).unwrap().is_empty());
        let mut block = Vec::new();
        encode_fields(&FieldSection::new(), &mut block);
        assert_eq!(block, [0, 0]);
        // A positive Delta Base with Required Insert Count 0 is legal (and meaningless).
        assert!(decode(&[0, 0x05]).unwrap().is_empty());
    }

    #[test]
    fn output_is_cleared_first() {
        let mut out = section(&[("stale", "field")]);
        decode_field_section(&[0, 0, 0xd1], 1000, &mut out).unwrap();
        assert_eq!(pairs(&out), [(b":method".to_vec(), b"GET".to_vec())]);
    }

    #[test]
    fn typical_request_round_trips() {
        round_trip(&section(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "www.example.com"),
            (":path", "/api/v1/items?id=42&sort=desc"),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
            ),
            ("accept", "*/*"),
            ("accept-encoding", "gzip, deflate, br"),
            ("accept-language", "en-US,en;q=0.5"),
            ("cookie", "session=abc123"),
            ("cookie", "theme=dark"),
            ("x-request-id", "7f1c0d1e-55aa-4c0b-9b9e-1234567890ab"),
            ("x-empty", ""),
        ]));
    }

    #[test]
    fn typical_response_round_trips() {
        round_trip(&section(&[
            (":status", "200"),
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "1234"),
            ("cache-control", "max-age=3600"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("server", "spooky"),
            ("vary", "accept-encoding"),
            (
                "strict-transport-security",
                "max-age=31536000; includesubdomains",
            ),
            ("set-cookie", "id=\u{e9}t\u{e9}; Path=/; HttpOnly"),
            ("x-binary", "\u{0}\u{1}\u{7f}\u{ff}"),
        ]));
        round_trip(&section(&[(":status", "404")]));
        round_trip(&section(&[(":status", "599")]));
    }

    #[test]
    fn every_static_entry_is_an_indexed_field_line() {
        for (i, (name, value)) in static_table::STATIC_TABLE.iter().enumerate() {
            let mut block = Vec::new();
            encode_field_section([(*name, *value)], &mut block);
            let mut expected = vec![0, 0];
            prefix_int::encode(0xc0, 6, i as u64, &mut expected);
            assert_eq!(block, expected, "entry {i}");
            let out = decode(&block).unwrap();
            assert_eq!(out.get(0), Some((*name, *value)));
            assert_eq!(out.len(), 1);
        }
    }

    #[test]
    fn encoder_representations() {
        // Name reference + Huffman value: "www.example.com" is 12 bytes Huffman coded.
        let mut block = Vec::new();
        encode_field_section([(&b":authority"[..], &b"www.example.com"[..])], &mut block);
        assert_eq!(block, hex("0000 50 8c f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        assert_eq!(
            pairs(&decode(&block).unwrap()),
            [(b":authority".to_vec(), b"www.example.com".to_vec())]
        );

        // Literal name, both Huffman coded: 0010 1 + len(3+).
        block.clear();
        encode_field_section([(&b"custom-key"[..], &b"custom-value"[..])], &mut block);
        assert_eq!(
            block,
            hex("0000 2f01 25a8 49e9 5ba9 7d7f 89 25a8 49e9 5bb8 e8b4 bf")
        );
        assert_eq!(
            pairs(&decode(&block).unwrap()),
            [(b"custom-key".to_vec(), b"custom-value".to_vec())]
        );

        // Strings that Huffman coding would lengthen are sent raw.
        block.clear();
        encode_field_section([(&b"x-a"[..], &b"\x00\x01"[..])], &mut block);
        assert_eq!(block, hex("0000 23 782d 61 02 0001"));
        // "x-a" is 3 bytes raw and 3 bytes coded (not strictly shorter), so it stays raw.
        assert_eq!(huffman::encoded_len(b"x-a"), 3);
    }

    #[test]
    fn decodes_raw_and_huffman_mixtures() {
        // Literal name raw, value Huffman; name ref with raw value; N bits set everywhere.
        let block = hex("0000 33 666f6f 83 9bd9ab 7f0c 03 616263");
        let out = decode(&block).unwrap();
        assert_eq!(
            pairs(&out),
            [
                (b"foo".to_vec(), b"gzip".to_vec()),
                // Index 15 + 12 = 27 (":status" "404"); value replaced by the literal.
                (b":status".to_vec(), b"abc".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_dynamic_references() {
        let cases: [&[u8]; 7] = [
            &[0x01, 0x00],             // Required Insert Count 1
            &[0x00, 0x80],             // Sign bit with Required Insert Count 0 (negative Base)
            &[0x00, 0x00, 0x80],       // Indexed, T = 0
            &[0x00, 0x00, 0x40, 0x00], // Name reference, T = 0
            &[0x00, 0x00, 0x60, 0x00], // Name reference, N = 1, T = 0
            &[0x00, 0x00, 0x10],       // Indexed with post-base index
            &[0x00, 0x00, 0x00, 0x00], // Literal with post-base name reference
        ];
        for block in cases {
            assert_eq!(
                decode(block),
                Err(DecodeError::DynamicReference),
                "{block:02x?}"
            );
        }
        // Also after valid field lines.
        assert_eq!(
            decode(&[0x00, 0x00, 0xd1, 0x10]),
            Err(DecodeError::DynamicReference)
        );
    }

    #[test]
    fn rejects_bad_static_index() {
        // Indexed: 63 + 36 = 99.
        assert_eq!(
            decode(&[0, 0, 0xff, 0x24]),
            Err(DecodeError::BadStaticIndex(99))
        );
        // Indexed: 98 is the last entry.
        assert!(decode(&[0, 0, 0xff, 0x23]).is_ok());
        // Name reference: 15 + 84 = 99.
        assert_eq!(
            decode(&[0, 0, 0x5f, 0x54, 0x00]),
            Err(DecodeError::BadStaticIndex(99))
        );
        // Very large index.
        assert_eq!(
            decode(&[0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(DecodeError::BadStaticIndex(
                63 + 0x7f + (0x7f << 7) + (0x7f << 14) + (0x0f << 21)
            ))
        );
    }

    #[test]
    fn rejects_bad_integers() {
        // Empty block and missing Delta Base.
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x00]), Err(DecodeError::Truncated));
        // Truncated inside the Required Insert Count / Delta Base.
        assert_eq!(decode(&[0xff]), Err(DecodeError::BadInteger));
        assert_eq!(decode(&[0x00, 0x7f, 0x80]), Err(DecodeError::BadInteger));
        // Overlong Delta Base (zero padding past the overflow point).
        let mut block = vec![0x00, 0x7f];
        block.extend([0x80; 12]);
        block.push(0);
        assert_eq!(decode(&block), Err(DecodeError::BadInteger));
        // Index over 2^62.
        let mut block = vec![0x00, 0x00, 0xff];
        block.extend([0xff; 9]);
        block.push(0x01);
        assert_eq!(decode(&block), Err(DecodeError::BadInteger));
        // String length over 2^62.
        let mut block = vec![0x00, 0x00, 0x51, 0x7f];
        block.extend([0xff; 9]);
        block.push(0x01);
        assert_eq!(decode(&block), Err(DecodeError::BadInteger));
        // Truncated inside a string length.
        assert_eq!(
            decode(&[0x00, 0x00, 0x51, 0x7f]),
            Err(DecodeError::BadInteger)
        );
    }

    #[test]
    fn rejects_truncation() {
        // Value length 11, only 10 bytes present.
        let block = hex("0000 510b 2f69 6e64 6578 2e68 746d");
        assert_eq!(decode(&block), Err(DecodeError::Truncated));
        // Name reference without a value.
        assert_eq!(decode(&[0, 0, 0x51]), Err(DecodeError::Truncated));
        // Literal name without a value.
        assert_eq!(decode(&[0, 0, 0x21, b'a']), Err(DecodeError::Truncated));
        // Literal name longer than the block.
        assert_eq!(decode(&[0, 0, 0x25, b'a']), Err(DecodeError::Truncated));
        // A huge (but valid) length.
        let mut block = vec![0x00, 0x00, 0x51, 0x7f];
        block.extend([0xff; 8]);
        block.push(0x1f);
        assert_eq!(decode(&block), Err(DecodeError::Truncated));
    }

    #[test]
    fn rejects_bad_huffman() {
        // EOS in a value.
        assert_eq!(
            decode(&[0, 0, 0x51, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::BadHuffman)
        );
        // Padding of 8 bits in a name ('0' then 0xff).
        assert_eq!(
            decode(&[0, 0, 0x2a, 0x07, 0xff, 0x00]),
            Err(DecodeError::BadHuffman)
        );
        // Padding not all ones.
        assert_eq!(
            decode(&[0, 0, 0x51, 0x81, 0x06]),
            Err(DecodeError::BadHuffman)
        );
        // The same strings with valid padding decode.
        assert_eq!(
            pairs(&decode(&[0, 0, 0x29, 0x07, 0x81, 0x07]).unwrap()),
            [(b"0".to_vec(), b"0".to_vec())]
        );
    }

    #[test]
    fn header_too_large() {
        let fields = section(&[(":method", "GET"), ("x-long", "0123456789")]);
        let mut block = Vec::new();
        encode_fields(&fields, &mut block);
        let mut out = FieldSection::new();
        assert_eq!(fields.rfc_size(), 7 + 3 + 32 + 6 + 10 + 32);
        assert!(decode_field_section(&block, 90, &mut out).is_ok());
        let err = decode_field_section(&block, 89, &mut out).unwrap_err();
        assert_eq!(
            err,
            DecodeError::HeaderTooLarge {
                size: 90,
                limit: 89
            }
        );
        assert!(err.is_too_large());
        assert!(!DecodeError::Truncated.is_too_large());
        // The per-field overhead alone counts.
        assert_eq!(
            decode_field_section(&block, 0, &mut out),
            Err(DecodeError::HeaderTooLarge { size: 32, limit: 0 })
        );
        // The limit is hit before the junk after it is looked at.
        let mut block = vec![0, 0];
        block.extend([0xd1; 1000]);
        block.extend([0x10, 0xff]);
        assert_eq!(
            decode_field_section(&block, 350, &mut out),
            Err(DecodeError::HeaderTooLarge {
                size: 368,
                limit: 350
            })
        );
        // Eight fields of 42 bytes fit; the ninth's overhead crosses the limit.
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn scratch_is_reused() {
        let mut decoder = FieldDecoder::new();
        let mut out = FieldSection::new();
        let fields = section(&[("custom-key", "custom-value"), ("www", "www.example.com")]);
        let mut block = Vec::new();
        encode_fields(&fields, &mut block);
        for _ in 0..3 {
            decoder.decode(&block, 1 << 16, &mut out).unwrap();
            assert_eq!(out, fields);
        }
    }

    fn field_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let static_name = proptest::sample::select(
            static_table::STATIC_TABLE
                .iter()
                .map(|(n, _)| n.to_vec())
                .collect::<Vec<_>>(),
        );
        let static_value = proptest::sample::select(
            static_table::STATIC_TABLE
                .iter()
                .map(|(_, v)| v.to_vec())
                .collect::<Vec<_>>(),
        );
        let bytes = proptest::collection::vec(any::<u8>(), 0..40);
        let text = "[a-z0-9 ./:;=,-]{0,40}".prop_map(String::into_bytes);
        let name = prop_oneof![static_name, bytes.clone(), text.clone()];
        let value = prop_oneof![static_value, bytes, text];
        (name, value)
    }

    proptest! {
        #[test]
        fn arbitrary_fields_round_trip(
            fields in proptest::collection::vec(field_strategy(), 0..20)
        ) {
            let section: FieldSection =
                fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let mut block = Vec::new();
            encode_field_section(fields.iter().map(|(n, v)| (&n[..], &v[..])), &mut block);
            let mut out = FieldSection::new();
            decode_field_section(&block, section.rfc_size(), &mut out).unwrap();
            prop_assert_eq!(out, section);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut out = FieldSection::new();
            let _ = decode_field_section(&data, usize::MAX, &mut out);
            let _ = decode_field_section(&data, 100, &mut out);
            // Past a valid prefix, so the field line parser sees the noise.
            let mut block = vec![0, 0];
            block.extend_from_slice(&data);
            if decode_field_section(&block, usize::MAX, &mut out).is_ok() {
                prop_assert!(out.len() <= data.len());
            }
        }
    }
}
