//! SETTINGS (RFC 9114 §7.2.4, RFC 9204 §5).

use smallvec::SmallVec;

use super::error::{Code, ConnectionError};
use super::frame;
use super::varint;

/// Setting identifiers Spooky knows.
#[allow(missing_docs)]
pub mod id {
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
    pub const MAX_FIELD_SECTION_SIZE: u64 = 0x06;
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x07;
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x08;
    pub const H3_DATAGRAM: u64 = 0x33;
}

/// Identifiers HTTP/2 defined that HTTP/3 reserves: receiving one is H3_SETTINGS_ERROR.
fn is_reserved_h2_setting(id: u64) -> bool {
    matches!(id, 0x00 | 0x02 | 0x03 | 0x04 | 0x05)
}

/// The settings a peer sent, with defaults for those it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSettings {
    /// QPACK dynamic table capacity the peer lets us use (we never use it).
    pub qpack_max_table_capacity: u64,
    /// Largest header section the peer accepts; `None` = unlimited.
    pub max_field_section_size: Option<u64>,
    /// Streams that may block on QPACK.
    pub qpack_blocked_streams: u64,
}

impl PeerSettings {
    /// Decodes a SETTINGS payload. Unknown identifiers are ignored; duplicates and identifiers
    /// reserved from HTTP/2 are errors.
    pub fn decode(mut payload: &[u8]) -> Result<PeerSettings, ConnectionError> {
        let mut settings = PeerSettings::default();
        let mut seen: SmallVec<[u64; 8]> = SmallVec::new();
        while !payload.is_empty() {
            let malformed = ConnectionError::new(Code::FRAME_ERROR, "malformed SETTINGS frame");
            let (id, a) = varint::decode(payload).ok_or(malformed.clone())?;
            let (value, b) = varint::decode(&payload[a..]).ok_or(malformed)?;
            payload = &payload[a + b..];
            if is_reserved_h2_setting(id) {
                return Err(ConnectionError::new(
                    Code::SETTINGS_ERROR,
                    "setting identifier reserved from HTTP/2",
                ));
            }
            if seen.contains(&id) {
                return Err(ConnectionError::new(
                    Code::SETTINGS_ERROR,
                    "setting sent twice",
                ));
            }
            seen.push(id);
            match id {
                id::QPACK_MAX_TABLE_CAPACITY => settings.qpack_max_table_capacity = value,
                id::MAX_FIELD_SECTION_SIZE => settings.max_field_section_size = Some(value),
                id::QPACK_BLOCKED_STREAMS => settings.qpack_blocked_streams = value,
                id::ENABLE_CONNECT_PROTOCOL | id::H3_DATAGRAM if value > 1 => {
                    return Err(ConnectionError::new(
                        Code::SETTINGS_ERROR,
                        "boolean setting with a value other than 0 or 1",
                    ));
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// Appends Spooky's SETTINGS frame: no dynamic table, no blocked streams, a header size limit,
/// and one reserved identifier so peers exercise their handling of unknown settings
/// (RFC 9114 §7.2.4.1).
pub fn write_local_settings(max_field_section_size: u64, grease: u64, out: &mut Vec<u8>) {
    let grease_id = 0x1f * (grease % 1000) + 0x21;
    let mut payload = Vec::with_capacity(24);
    for (id, value) in [
        (id::QPACK_MAX_TABLE_CAPACITY, 0),
        (id::QPACK_BLOCKED_STREAMS, 0),
        (id::MAX_FIELD_SECTION_SIZE, max_field_section_size),
        (grease_id, grease & 0xff),
    ] {
        varint::encode(id, &mut payload);
        varint::encode(value, &mut payload);
    }
    frame::write_frame(frame::ty::SETTINGS, &payload, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::frame::{Frame, FrameReader};

    #[test]
    fn local_settings_decode_back() {
        let mut wire = Vec::new();
        write_local_settings(65_536, 7, &mut wire);
        let mut reader = FrameReader::new(1024);
        let Some(Frame::Settings(payload)) = reader.read(&mut bytes::Bytes::from(wire)).unwrap()
        else {
            panic!("expected SETTINGS");
        };
        let s = PeerSettings::decode(&payload).unwrap();
        assert_eq!(s.qpack_max_table_capacity, 0);
        assert_eq!(s.max_field_section_size, Some(65_536));
    }

    #[test]
    fn duplicate_and_reserved_settings_are_errors() {
        let dup = [0x06, 0x10, 0x06, 0x10];
        assert_eq!(
            PeerSettings::decode(&dup).unwrap_err().code,
            Code::SETTINGS_ERROR
        );
        let h2 = [0x03, 0x10];
        assert_eq!(
            PeerSettings::decode(&h2).unwrap_err().code,
            Code::SETTINGS_ERROR
        );
        let truncated = [0x06];
        assert_eq!(
            PeerSettings::decode(&truncated).unwrap_err().code,
            Code::FRAME_ERROR
        );
        let unknown = [0x21, 0x05];
        assert!(PeerSettings::decode(&unknown).is_ok());
    }
}
