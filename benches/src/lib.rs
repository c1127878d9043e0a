//! Spooky's benchmarks.
//!
//! - [`loadgen`]: the closed-loop HTTP/3 / HTTP/1.1 load generator behind the `loadgen`
//!   binary, usable as a library by tests and other tools.
//! - `benches/`: criterion micro benchmarks of the core (QPACK, frames, balancing, the core on
//!   the in-memory network); run them with `cargo bench -p spooky-benches`.

#![warn(missing_docs, unreachable_pub)]

pub mod loadgen;
