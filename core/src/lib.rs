//! Spooky's core: an HTTP/3 load balancer as a deterministic state machine.
//!
//! The core performs no I/O, reads no clock and owns its randomness. Everything that happens
//! reaches it as an [`Input`] carrying an explicit `now`; everything it wants done leaves it as
//! an [`Output`] the caller drains. The same inputs always produce the same outputs, which is
//! what makes fuzzing, simulation and replay of captured traffic possible.
//!
//! # The loop
//!
//! A runtime owns sockets and a clock and runs one loop per [`Core`]:
//!
//! ```text
//! loop {
//!     core.handle_input(input);                        // a datagram, a TCP event, a timeout, a command
//!     while let Some(out) = core.poll_output(&mut buf) { // drain *every* output before waiting
//!         perform(out);                                // send a datagram, connect/write/close a TCP socket
//!     }
//!     wait_until(core.poll_timeout());                 // then sleep until the next input or deadline
//! }
//! ```
//!
//! After every `handle_input`, drain `poll_output` until it returns `None`, then ask
//! `poll_timeout` for the next deadline and feed [`Input::Timeout`] when it passes.
//!
//! # Map
//!
//! - [`quic`]: quinn-proto endpoints, shard-aware connection IDs, TLS.
//! - [`h3`]: HTTP/3 frames, QPACK, message validation, control streams.
//! - [`http1`]: the HTTP/1.1 client codec for TCP backends.
//! - [`balance`]: how a backend is picked.
//! - [`proxy`]: the state machine that joins client requests to backend exchanges.
//! - [`config`]: typed configuration parsed from YAML.
//! - [`sim`]: an in-memory network to run clients, the core and backends deterministically.

#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod balance;
pub mod capture;
pub mod config;
pub mod fields;
pub mod h3;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod quic;
pub mod rng;
pub mod sim;
mod timer;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub use config::{Config, ConfigError};
pub use proxy::{BackendStatus, Core, CoreError, CoreParams};
pub use quic::crypto::{CryptoMode, TlsMaterials};
pub use quinn_proto::EcnCodepoint;

/// Something that happened, for [`Core::handle_input`].
#[derive(Debug)]
pub enum Input {
    /// UDP payload arrived (possibly several GRO-coalesced datagrams of `segment_size` bytes).
    Datagram(Datagram),
    /// A deadline from [`Core::poll_timeout`] passed.
    Timeout {
        /// The current time.
        now: Instant,
    },
    /// Something happened on an upstream TCP connection.
    Tcp {
        /// The current time.
        now: Instant,
        /// Which connection.
        id: TcpId,
        /// What happened.
        event: TcpEvent,
    },
    /// An operator command.
    Control {
        /// The current time.
        now: Instant,
        /// The command.
        command: Control,
    },
}

impl Input {
    /// The time the input carries.
    pub fn now(&self) -> Instant {
        match self {
            Input::Datagram(d) => d.now,
            Input::Timeout { now } | Input::Tcp { now, .. } | Input::Control { now, .. } => *now,
        }
    }
}

/// Received UDP payload.
#[derive(Debug)]
pub struct Datagram {
    /// The current time.
    pub now: Instant,
    /// Which of the core's sockets received it.
    pub socket: SocketKind,
    /// Sender.
    pub from: SocketAddr,
    /// Local address it was sent to, if the runtime knows it.
    pub local_ip: Option<IpAddr>,
    /// ECN marking.
    pub ecn: Option<EcnCodepoint>,
    /// The payload: one datagram, or several back to back if `segment_size` is set.
    pub data: BytesMut,
    /// Size of each coalesced datagram (GRO); the last may be shorter.
    pub segment_size: Option<usize>,
}

/// The core's two UDP sockets: one clients connect to, one for connections to HTTP/3 backends.
///
/// Backend traffic has its own socket so that its replies never land on another shard's
/// listener under SO_REUSEPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The client-facing listener.
    Listener,
    /// The socket for outgoing QUIC connections to backends.
    Upstream,
}

/// Names an upstream TCP connection. Never reused within one core, so a late event for a
/// closed connection cannot be mistaken for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpId(pub u64);

/// What happened on an upstream TCP connection.
#[derive(Debug)]
pub enum TcpEvent {
    /// The connect finished.
    Connected,
    /// The connect failed; the runtime has dropped the socket.
    ConnectFailed(String),
    /// Bytes arrived.
    Data(Bytes),
    /// This many more bytes from [`TcpCommand::Send`] reached the kernel.
    Sent(usize),
    /// The peer closed or the connection failed; the runtime has dropped the socket.
    Closed(Option<String>),
}

/// Operator commands.
#[derive(Debug, Clone)]
pub enum Control {
    /// Stop accepting connections, finish in-flight requests (GOAWAY), then close.
    Drain,
    /// Apply a new configuration without dropping connections.
    Reload(Box<Reload>),
}

/// A new configuration, validated and with its files read.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration.
    pub config: std::sync::Arc<Config>,
    /// Its certificates and keys.
    pub tls: TlsMaterials,
}

/// Something the core wants done, from [`Core::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send the bytes the core wrote into the caller's buffer.
    Transmit(Transmit),
    /// Act on an upstream TCP connection.
    Tcp(TcpId, TcpCommand),
}

/// A UDP send: the payload is the buffer passed to [`Core::poll_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Which socket sends it.
    pub socket: SocketKind,
    /// Where to.
    pub destination: SocketAddr,
    /// ECN marking to apply.
    pub ecn: Option<EcnCodepoint>,
    /// Payload length in the buffer.
    pub size: usize,
    /// If set, the payload is several datagrams of this size (GSO); the last may be shorter.
    pub segment_size: Option<usize>,
    /// Source IP to send from, when the listener is bound to a wildcard address.
    pub src_ip: Option<IpAddr>,
}

/// A command for an upstream TCP connection.
#[derive(Debug)]
pub enum TcpCommand {
    /// Open a connection; answer with [`TcpEvent::Connected`] or [`TcpEvent::ConnectFailed`].
    Connect(SocketAddr),
    /// Queue bytes for sending, in order; report progress with [`TcpEvent::Sent`].
    Send(Bytes),
    /// Close the connection (after queued bytes); no events follow.
    Close,
    /// Stop reading: the client side is not keeping up.
    PauseRead,
    /// Resume reading.
    ResumeRead,
}
