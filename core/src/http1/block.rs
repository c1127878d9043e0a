//! Accumulation of a field block (a response head or a trailer section) that may arrive split
//! across several reads.
//!
//! The block is parsed straight from the caller's input when it arrives whole, the common case.
//! Otherwise its bytes are copied into an internal buffer, bounded by a size limit, and the
//! parser runs again only when a new line ending shows up. Since the parser fails once there
//! are more field lines than allowed, a block trickling in costs at most a bounded number of
//! parses rather than one per read.

use bytes::{Buf, Bytes, BytesMut};

use super::response::ParseError;

/// Outcome of one parse attempt over a candidate block: `Ok(None)` means "incomplete",
/// `Ok(Some((n, value)))` means the block is the first `n` bytes.
pub(crate) type BlockParse<T> = Result<Option<(usize, T)>, ParseError>;

/// Buffer for a field block being received.
#[derive(Debug, Default)]
pub(crate) struct FieldBlock {
    buf: Vec<u8>,
}

impl FieldBlock {
    /// An empty buffer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The bytes of an incomplete block received so far.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Feeds `input` to the block. On success, consumes exactly the block's bytes from `input`
    /// (the bytes after it stay there) and returns the parsed value; otherwise consumes what was
    /// buffered and returns `Ok(None)`. Fails with `too_large` once the block would exceed `max`
    /// bytes, and with whatever `parse` reports.
    pub(crate) fn feed<T>(
        &mut self,
        input: &mut Bytes,
        max: usize,
        too_large: ParseError,
        mut parse: impl FnMut(&[u8]) -> BlockParse<T>,
    ) -> Result<Option<T>, ParseError> {
        if input.is_empty() {
            return Ok(None);
        }

        if self.buf.is_empty() {
            // Fast path: try the input as it is, without copying. Bytes past the limit are not
            // looked at, so that the outcome does not depend on how the input was split.
            let window = &input[..input.len().min(max)];
            if let Some((len, value)) = parse(window)? {
                input.advance(len);
                return Ok(Some(value));
            }
            if input.len() >= max {
                return Err(too_large);
            }
            self.buf.extend_from_slice(input);
            input.advance(input.len());
            return Ok(None);
        }

        let old = self.buf.len();
        let take = input.len().min(max.saturating_sub(old));
        self.buf.extend_from_slice(&input[..take]);
        if self.buf[old..].contains(&b'\n') {
            if let Some((len, value)) = parse(&self.buf)? {
                if len >= old {
                    input.advance(len - old);
                } else {
                    // Not reachable: a block ends with a line ending, and the block was tried
                    // when that line ending arrived. Handled anyway by giving the buffered
                    // bytes past the block back to the input.
                    let mut rest = BytesMut::with_capacity(old - len + input.len());
                    rest.extend_from_slice(&self.buf[len..old]);
                    rest.extend_from_slice(input);
                    *input = rest.freeze();
                }
                self.buf.clear();
                return Ok(Some(value));
            }
        }
        if self.buf.len() >= max {
            return Err(too_large);
        }
        input.advance(take);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy block parser: the block ends after the first "\n\n" or "\n\r\n".
    fn toy(buf: &[u8]) -> BlockParse<Vec<u8>> {
        if buf.first() == Some(&b'!') {
            return Err(ParseError::InvalidStatusLine);
        }
        for i in 0..buf.len() {
            if buf[i] == b'\n'
                && i >= 1
                && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'))
            {
                return Ok(Some((i + 1, buf[..i + 1].to_vec())));
            }
        }
        Ok(None)
    }

    #[test]
    fn whole_and_split() {
        let data = b"abc\r\ndef\r\n\r\nrest";
        for split in 0..=data.len() {
            let mut block = FieldBlock::new();
            let mut a = Bytes::copy_from_slice(&data[..split]);
            let first = block
                .feed(&mut a, 100, ParseError::HeadTooLarge, toy)
                .unwrap();
            let value = match first {
                Some(v) => {
                    assert_eq!(a, &b"rest"[..split - 12]);
                    v
                }
                None => {
                    assert!(a.is_empty());
                    let mut b = Bytes::copy_from_slice(&data[split..]);
                    let v = block
                        .feed(&mut b, 100, ParseError::HeadTooLarge, toy)
                        .unwrap();
                    assert_eq!(b, &b"rest"[..]);
                    v.unwrap()
                }
            };
            assert_eq!(value, b"abc\r\ndef\r\n\r\n");
        }
    }

    #[test]
    fn limit() {
        let mut block = FieldBlock::new();
        let mut a = Bytes::from_static(b"0123456789");
        assert_eq!(
            block.feed(&mut a, 10, ParseError::HeadTooLarge, toy),
            Err(ParseError::HeadTooLarge)
        );

        let mut block = FieldBlock::new();
        let mut a = Bytes::from_static(b"01234");
        assert_eq!(
            block.feed(&mut a, 10, ParseError::HeadTooLarge, toy),
            Ok(None)
        );
        let mut b = Bytes::from_static(b"56789");
        assert_eq!(
            block.feed(&mut b, 10, ParseError::HeadTooLarge, toy),
            Err(ParseError::HeadTooLarge)
        );

        // Exactly at the limit is fine.
        let mut block = FieldBlock::new();
        let mut a = Bytes::from_static(b"0123");
        assert_eq!(
            block.feed(&mut a, 7, ParseError::HeadTooLarge, toy),
            Ok(None)
        );
        let mut b = Bytes::from_static(b"5\n\nXYZ");
        assert_eq!(
            block.feed(&mut b, 7, ParseError::HeadTooLarge, toy),
            Ok(Some(b"01235\n\n".to_vec()))
        );
        assert_eq!(b, &b"XYZ"[..]);
    }
}
