//! HTTP field sections (header and trailer lists) stored in one buffer.
//!
//! A request's fields are decoded into a single byte buffer plus a list of ranges, so
//! decoding a header section costs one or two allocations however many fields it has, and a
//! `FieldSection` can be cleared and reused.

use std::ops::Range;

use smallvec::SmallVec;

/// An ordered list of `(name, value)` pairs, names and values stored back to back in `buf`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FieldSection {
    buf: Vec<u8>,
    fields: SmallVec<[FieldRange; 16]>,
}

#[derive(Clone, PartialEq, Eq)]
struct FieldRange {
    name: Range<u32>,
    value: Range<u32>,
}

impl FieldSection {
    /// An empty section.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty section with room for `bytes` of names and values and `fields` fields.
    pub fn with_capacity(bytes: usize, fields: usize) -> Self {
        FieldSection {
            buf: Vec::with_capacity(bytes),
            fields: SmallVec::with_capacity(fields),
        }
    }

    /// Appends a field; names and values are copied as given (no case folding, no checks).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name_start = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let value_start = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        let end = self.buf.len() as u32;
        self.fields.push(FieldRange {
            name: name_start..value_start,
            value: value_start..end,
        });
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Removes every field, keeping the allocations.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
    }

    /// The `index`th field.
    pub fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.fields.get(index).map(|f| self.resolve(f))
    }

    /// Fields in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().map(|f| self.resolve(f))
    }

    /// The value of the first field called `name` (compared exactly: callers pass lowercase).
    pub fn find(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of the fields called `name`.
    pub fn find_all<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Size as RFC 9114 §4.2.2 counts it: names and values plus 32 bytes per field.
    pub fn rfc_size(&self) -> usize {
        self.buf.len() + 32 * self.fields.len()
    }

    fn resolve(&self, f: &FieldRange) -> (&[u8], &[u8]) {
        (
            &self.buf[f.name.start as usize..f.name.end as usize],
            &self.buf[f.value.start as usize..f.value.end as usize],
        )
    }
}

impl std::fmt::Debug for FieldSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

impl<'a> FromIterator<(&'a [u8], &'a [u8])> for FieldSection {
    fn from_iter<T: IntoIterator<Item = (&'a [u8], &'a [u8])>>(iter: T) -> Self {
        let mut section = FieldSection::new();
        for (n, v) in iter {
            section.push(n, v);
        }
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_find_iterate() {
        let mut s = FieldSection::new();
        s.push(b":method", b"GET");
        s.push(b"accept", b"*/*");
        s.push(b"accept", b"text/html");
        assert_eq!(s.len(), 3);
        assert_eq!(s.find(b":method"), Some(&b"GET"[..]));
        assert_eq!(s.find_all(b"accept").count(), 2);
        assert_eq!(s.rfc_size(), 7 + 3 + 6 + 3 + 6 + 9 + 3 * 32);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.find(b"accept"), None);
    }
}
