//! Arbitrary bytes as a HEADERS payload: the decoder must return a result, never panic, and
//! anything it accepts must re-encode and decode to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spooky_core::fields::FieldSection;
use spooky_core::h3::qpack;

fuzz_target!(|data: &[u8]| {
    let mut fields = FieldSection::new();
    if qpack::decode_field_section(data, 64 * 1024, &mut fields).is_ok() {
        let mut encoded = Vec::new();
        qpack::encode_fields(&fields, &mut encoded);
        let mut again = FieldSection::new();
        qpack::decode_field_section(&encoded, usize::MAX, &mut again)
            .expect("re-encoded section decodes");
        assert_eq!(fields, again);
    }
});
