//! QUIC through quinn-proto: endpoint and transport settings, shard-aware connection IDs,
//! TLS, and small helpers over quinn-proto's stream API.

pub mod cid;
pub mod crypto;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn_proto::{
    Connection, ConnectionId, EndpointConfig, ReadError, StreamId, TransportConfig, VarInt,
};

use crate::rng::Rng;

/// Builds an endpoint config whose connection IDs name `shard` and whose every random choice
/// comes from `rng`.
pub(crate) fn endpoint_config(shard: u16, rng: &mut Rng) -> EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rng.seed());
    let mut config = EndpointConfig::new(Arc::new(reset_key));
    let cid_seed = rng.seed();
    config.cid_generator(move || Box::new(cid::ShardCidGenerator::new(shard, cid_seed)));
    config.rng_seed(Some(rng.seed()));
    config
}

/// A key that protects retry and address validation tokens.
pub(crate) fn token_key(rng: &mut Rng) -> Arc<dyn quinn_proto::crypto::HandshakeTokenKey> {
    Arc::new(ring::hkdf::Prk::new_less_safe(
        ring::hkdf::HKDF_SHA256,
        &rng.seed(),
    ))
}

/// A provider of initial destination CIDs for outgoing connections, seeded instead of
/// quinn-proto's default thread RNG.
pub(crate) fn initial_dcid_provider(rng: &mut Rng) -> Arc<dyn Fn() -> ConnectionId + Send + Sync> {
    let rng = Mutex::new(Rng::from_seed(rng.seed()));
    Arc::new(move || {
        let mut bytes = [0u8; 16];
        if let Ok(mut rng) = rng.lock() {
            rng.fill(&mut bytes);
        }
        ConnectionId::new(&bytes)
    })
}

/// Transport settings towards clients.
pub(crate) fn client_facing_transport(
    max_concurrent_streams: u32,
    idle_timeout: Duration,
) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_concurrent_streams));
    // Control, QPACK encoder and decoder, plus room for grease or extension streams.
    t.max_concurrent_uni_streams(VarInt::from_u32(16));
    t.max_idle_timeout(idle_timeout.try_into().ok());
    t
}

/// Transport settings towards HTTP/3 backends.
pub(crate) fn backend_facing_transport(idle_timeout: Duration) -> TransportConfig {
    let mut t = TransportConfig::default();
    // Servers may not open request streams in HTTP/3.
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.max_concurrent_uni_streams(VarInt::from_u32(16));
    t.max_idle_timeout(idle_timeout.try_into().ok());
    // Keep pooled connections alive well inside the idle timeout.
    t.keep_alive_interval(Some(idle_timeout / 3));
    t
}

/// What a read from a stream produced.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// Bytes, in order.
    Data(Bytes),
    /// Nothing available now; a `Readable` event will follow.
    Blocked,
    /// The peer finished the stream and every byte has been read.
    Finished,
    /// The peer reset the stream with this code.
    Reset(VarInt),
    /// The stream is gone (already finished, stopped or never opened).
    Closed,
}

/// Reads up to `max` bytes from a stream, in order.
pub(crate) fn read_stream(conn: &mut Connection, id: StreamId, max: usize) -> ReadOutcome {
    let mut stream = conn.recv_stream(id);
    let mut chunks = match stream.read(true) {
        Ok(chunks) => chunks,
        Err(_) => return ReadOutcome::Closed,
    };
    let outcome = match chunks.next(max) {
        Ok(Some(chunk)) => ReadOutcome::Data(chunk.bytes),
        Ok(None) => ReadOutcome::Finished,
        Err(ReadError::Blocked) => ReadOutcome::Blocked,
        Err(ReadError::Reset(code)) => ReadOutcome::Reset(code),
    };
    // Whether flow-control credit needs sending is picked up by the next poll_transmit.
    let _ = chunks.finalize();
    outcome
}

/// A wall clock stuck at `0` seconds after the Unix epoch plus the given offset, for
/// deterministic runs (quinn-proto uses it to date address-validation tokens).
pub(crate) struct FixedSystemTime(pub(crate) u64);

impl quinn_proto::TimeSource for FixedSystemTime {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(self.0)
    }
}
