//! Arbitrary field lists through request validation: never panics, and whatever passes has
//! the pseudo-headers the RFC requires.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spooky_core::fields::FieldSection;
use spooky_core::h3::message::{Method, validate_request};

fuzz_target!(|data: &[u8]| {
    let mut fields = FieldSection::new();
    // Fields separated by 0xff, name and value by 0xfe.
    for field in data.split(|&b| b == 0xff) {
        let mut parts = field.splitn(2, |&b| b == 0xfe);
        let name = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        fields.push(name, value);
    }
    if let Ok(head) = validate_request(fields) {
        assert!(!head.method_bytes().is_empty());
        if head.method != Method::Connect {
            assert!(head.scheme().is_some() && head.path().is_some());
        }
        for (name, value) in head.regular_fields() {
            assert!(!name.iter().any(u8::is_ascii_uppercase));
            assert!(!value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
        }
    }
});
