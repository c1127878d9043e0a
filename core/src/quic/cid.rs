//! Connection IDs that name the shard owning the connection.
//!
//! Layout (10 bytes): one random byte, the shard id (big-endian u16), seven random bytes.
//! Every CID a shard issues carries its id at a fixed offset, so a runtime can look at any
//! short-header packet and hand it to the right shard, whatever 4-tuple it arrived on. The
//! length is the same on every shard, which quinn-proto needs to parse short headers.

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

use crate::rng::Rng;

/// Length of every connection ID Spooky issues.
pub const CID_LEN: usize = 10;

/// Which shard issued `cid`, if it has Spooky's length.
pub fn shard_of(cid: &[u8]) -> Option<u16> {
    (cid.len() == CID_LEN).then(|| u16::from_be_bytes([cid[1], cid[2]]))
}

/// Reads the destination connection ID of a QUIC packet and returns the shard it names.
///
/// Short-header packets carry our CID right after the first byte; long-header packets carry
/// a length-prefixed DCID (the client's random choice on its first Initial, ours afterwards).
pub fn shard_of_packet(packet: &[u8]) -> Option<u16> {
    let first = *packet.first()?;
    if first & 0x80 == 0 {
        shard_of(packet.get(1..1 + CID_LEN)?)
    } else {
        let len = usize::from(*packet.get(5)?);
        shard_of(packet.get(6..6 + len)?)
    }
}

/// Issues CIDs for one shard.
pub struct ShardCidGenerator {
    shard: u16,
    rng: Rng,
}

impl ShardCidGenerator {
    /// A generator for `shard` whose random bytes come from `seed`.
    pub fn new(shard: u16, seed: [u8; 32]) -> Self {
        ShardCidGenerator {
            shard,
            rng: Rng::from_seed(seed),
        }
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill(&mut bytes);
        bytes[1..3].copy_from_slice(&self.shard.to_be_bytes());
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if shard_of(cid) == Some(self.shard) {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_name_their_shard() {
        let mut g = ShardCidGenerator::new(513, [3; 32]);
        for _ in 0..100 {
            let cid = g.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert_eq!(shard_of(&cid), Some(513));
            assert!(g.validate(&cid).is_ok());
            let mut short = vec![0x40];
            short.extend_from_slice(&cid);
            short.extend_from_slice(b"payload");
            assert_eq!(shard_of_packet(&short), Some(513));
        }
        assert!(shard_of(&[1, 2, 3]).is_none());
    }

    #[test]
    fn same_seed_same_cids() {
        let mut a = ShardCidGenerator::new(1, [9; 32]);
        let mut b = ShardCidGenerator::new(1, [9; 32]);
        assert_eq!(a.generate_cid(), b.generate_cid());
    }
}
