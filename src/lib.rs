//! The `spooky` binary's building blocks: configuration loading, certificates, the demo, and
//! the independent HTTP/3 client and backends the demo and the tests use.

#![warn(missing_docs)]

pub mod backends;
pub mod certs;
pub mod client;
pub mod demo;
pub mod load;
pub mod replay;

/// 32 bytes of OS randomness for the core's seed.
pub fn os_seed() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .expect("the OS random number generator works");
    seed
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
