//! HTTP/3 (RFC 9114) and QPACK (RFC 9204), written for the core.
//!
//! `frame` reads and writes frames, `qpack` encodes and decodes field sections with the static
//! table only, `message` says what a well-formed request or response is, and `session` handles
//! the connection-wide streams (control, QPACK encoder and decoder) for either role.

pub mod error;
pub mod frame;
pub mod message;
pub mod qpack;
pub mod session;
pub mod settings;
pub mod varint;

pub use error::{Code, ConnectionError};
