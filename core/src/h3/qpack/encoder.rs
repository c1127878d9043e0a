//! Encoding field sections (RFC 9204 §4.5) with the static table only.

use crate::fields::FieldSection;

use super::static_table::{self, StaticMatch};
use super::{huffman, prefix_int};

/// Encodes fields into `out` (appending): prefix Required Insert Count = 0, Base = 0 (two zero
/// bytes), then per field an Indexed Field Line (static) when name and value match a static
/// entry exactly; else a Literal Field Line With Name Reference (static, N bit 0) when the name
/// matches a static entry; else a Literal Field Line With Literal Name.
///
/// Strings use Huffman coding when that is strictly shorter. Names are written as given
/// (callers pass lowercase).
pub fn encode_field_section<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut Vec<u8>,
) {
    // Field section prefix (§4.5.1): Required Insert Count 0, Sign 0, Delta Base 0.
    out.extend_from_slice(&[0, 0]);
    for (name, value) in fields {
        match static_table::lookup(name, value) {
            Some(StaticMatch::Full(index)) => {
                // Indexed Field Line (§4.5.2): 1 T=1 Index(6+).
                prefix_int::encode(0b1100_0000, 6, u64::from(index), out);
            }
            Some(StaticMatch::Name(index)) => {
                // Literal Field Line with Name Reference (§4.5.4): 0 1 N=0 T=1 Index(4+).
                prefix_int::encode(0b0101_0000, 4, u64::from(index), out);
                write_string(value, 0, 0x80, 7, out);
            }
            None => {
                // Literal Field Line with Literal Name (§4.5.6): 0 0 1 N=0 H NameLen(3+).
                write_string(name, 0b0010_0000, 0x08, 3, out);
                write_string(value, 0, 0x80, 7, out);
            }
        }
    }
}

/// Convenience for encoding a whole [`FieldSection`]; see [`encode_field_section`].
pub fn encode_fields(fields: &FieldSection, out: &mut Vec<u8>) {
    encode_field_section(fields.iter(), out);
}

/// Writes a string literal (§4.1.2): `flags` in the high bits of the first byte, `huffman_flag`
/// set there if the string is Huffman coded, a `prefix_bits`-bit length, then the bytes.
fn write_string(s: &[u8], flags: u8, huffman_flag: u8, prefix_bits: u8, out: &mut Vec<u8>) {
    let coded_len = huffman::encoded_len(s);
    if coded_len < s.len() {
        prefix_int::encode(flags | huffman_flag, prefix_bits, coded_len as u64, out);
        huffman::encode(s, out);
    } else {
        prefix_int::encode(flags, prefix_bits, s.len() as u64, out);
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_only_for_no_fields() {
        let mut out = vec![0xaa];
        encode_field_section(std::iter::empty(), &mut out);
        assert_eq!(out, [0xaa, 0, 0]);
    }

    #[test]
    fn indexed_static() {
        let mut out = Vec::new();
        encode_field_section(
            [
                (&b":method"[..], &b"GET"[..]),
                (&b":status"[..], &b"500"[..]),
            ],
            &mut out,
        );
        // 17 fits the 6-bit prefix; 71 = 63 + 8.
        assert_eq!(out, [0, 0, 0xd1, 0xff, 0x08]);
    }

    #[test]
    fn name_reference_with_raw_and_huffman_values() {
        let mut out = Vec::new();
        encode_field_section([(&b":path"[..], &b"/index.html"[..])], &mut out);
        // Like RFC 9204 Appendix B.1, but the value is Huffman coded (8 bytes instead of 11).
        let mut value = Vec::new();
        huffman::encode(b"/index.html", &mut value);
        assert_eq!(value.len(), 8);
        assert_eq!(&out[..4], [0, 0, 0x51, 0x88]);
        assert_eq!(&out[4..], &value[..]);

        // A value that Huffman coding would not shorten is sent raw.
        out.clear();
        encode_field_section([(&b"age"[..], &b"{}"[..])], &mut out);
        assert_eq!(out, [0, 0, 0x52, 0x02, b'{', b'}']);

        out.clear();
        encode_field_section(
            [(&b"cache-control"[..], &b"no-cache, private"[..])],
            &mut out,
        );
        // Name index 36 = 15 + 21; value Huffman coded.
        assert_eq!(&out[..4], [0, 0, 0x5f, 0x15]);
        let coded_len = huffman::encoded_len(b"no-cache, private");
        assert!(coded_len < 17);
        assert_eq!(out[4], 0x80 | coded_len as u8);
        assert_eq!(out.len(), 5 + coded_len);
    }

    #[test]
    fn long_literal_name_and_value() {
        let name = vec![b'\\'; 300]; // 19-bit code: raw is shorter
        let value = vec![b'0'; 1000]; // 5-bit code: Huffman is shorter
        let mut out = Vec::new();
        encode_field_section([(&name[..], &value[..])], &mut out);
        // Name: 7 + 293 (0xa5 0x02).
        assert_eq!(&out[..5], [0, 0, 0x27, 0xa5, 0x02]);
        assert_eq!(&out[5..305], &name[..]);
        // Value: 625 Huffman bytes = 127 + 498 (0xf2 0x03).
        assert_eq!(&out[305..308], [0xff, 0xf2, 0x03]);
        assert_eq!(out.len(), 308 + 625);
    }
}
