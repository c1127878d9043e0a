//! The core's UDP sockets: socket2 to create them, quinn-udp for GRO/GSO, ECN and
//! packet info, tokio for readiness.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use spooky_core::{EcnCodepoint, Transmit};
use tokio::io::Interest;

/// Largest datagram we expect from a peer when GRO coalesces several into one buffer.
const GRO_DATAGRAM_SIZE: usize = 1500;

/// Space for one receive slot: a whole 64 KiB datagram, or a full GRO batch.
fn slot_size(gro_segments: usize) -> usize {
    (64 * 1024).max(GRO_DATAGRAM_SIZE * gro_segments.max(1))
}

/// How often a send that finds the socket buffer full waits for room before the datagram is
/// dropped (QUIC retransmits what is lost).
const SEND_ATTEMPTS: usize = 8;
/// How long each of those waits may take.
const SEND_WAIT: Duration = Duration::from_millis(50);

/// Kernel buffer size we ask for; failures are harmless.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// One UDP socket driven through quinn-udp.
#[derive(Debug)]
pub(crate) struct UdpIo {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Bound to an IPv6 address: IPv4 peers appear as IPv4-mapped IPv6 addresses.
    v6: bool,
    local_addr: SocketAddr,
}

/// One datagram (or GRO batch) taken off a socket.
pub(crate) struct Received {
    pub(crate) from: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) ecn: Option<EcnCodepoint>,
    pub(crate) data: BytesMut,
    pub(crate) segment_size: Option<usize>,
}

/// What became of a send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Sent,
    Dropped,
}

impl UdpIo {
    /// Binds `addr`. A wildcard IPv6 address also accepts IPv4 (dual stack).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpIo> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let IpAddr::V6(ip) = addr.ip()
            && ip.is_unspecified()
        {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(%addr, error = %e, "could not enlarge the UDP receive buffer");
        }
        if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(%addr, error = %e, "could not enlarge the UDP send buffer");
        }
        socket.set_nonblocking(true)?;
        let socket = std::net::UdpSocket::from(socket);
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let local_addr = io.local_addr()?;
        Ok(UdpIo {
            io,
            state,
            v6: local_addr.is_ipv6(),
            local_addr,
        })
    }

    /// Binds the socket for backend connections: dual-stack `[::]:0`, or `0.0.0.0:0` where
    /// IPv6 is unavailable.
    pub(crate) fn bind_upstream() -> io::Result<UdpIo> {
        match UdpIo::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)) {
            Ok(socket) => Ok(socket),
            Err(e) => {
                tracing::debug!(error = %e, "no dual-stack upstream socket; using IPv4 only");
                UdpIo::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))
            }
        }
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams quinn-udp can send in one GSO call.
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Datagrams the kernel may coalesce into one receive (GRO).
    pub(crate) fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Waits until the socket may be readable.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.io.readable().await
    }

    /// One `recvmmsg`: returns how many slots of `bufs` were filled (described by `metas`), or
    /// `WouldBlock` once the socket is empty (which clears tokio's readiness).
    pub(crate) fn try_recv(
        &self,
        bufs: &mut RecvBuffers,
        metas: &mut [RecvMeta; BATCH_SIZE],
    ) -> io::Result<usize> {
        let slot = bufs.slot;
        let mut chunks = bufs.memory.chunks_mut(slot).map(IoSliceMut::new);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] = std::array::from_fn(|_| {
            chunks
                .next()
                .expect("receive buffer holds BATCH_SIZE slots")
        });
        self.io.try_io(Interest::READABLE, || {
            self.state.recv((&self.io).into(), &mut iovs, metas)
        })
    }

    /// Converts one filled slot into what the core takes, mapping IPv4-mapped addresses back to
    /// plain IPv4.
    pub(crate) fn received(&self, bufs: &RecvBuffers, index: usize, meta: &RecvMeta) -> Received {
        let start = index * bufs.slot;
        let len = meta.len.min(bufs.slot);
        let data = BytesMut::from(&bufs.memory[start..start + len]);
        let segment_size = (meta.stride > 0 && len > meta.stride).then_some(meta.stride);
        Received {
            from: unmap_addr(meta.addr),
            local_ip: meta.dst_ip.map(unmap_ip),
            ecn: meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8)),
            data,
            segment_size,
        }
    }

    /// Sends `contents` as the core asked. Waits (bounded) for room when the socket buffer is
    /// full; any other error drops the datagram with a debug log, as UDP may lose it anyway.
    pub(crate) async fn send(&self, t: &Transmit, contents: &[u8]) -> SendOutcome {
        let transmit = quinn_udp::Transmit {
            destination: self.map_addr(t.destination),
            ecn: t
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size: t.segment_size.filter(|&s| s < contents.len()),
            src_ip: t.src_ip.map(|ip| self.map_ip(ip)),
        };
        match self.send_one(&transmit).await {
            Ok(()) => SendOutcome::Sent,
            Err(e) => {
                // quinn-udp turns GSO off when the NIC rejects it; resend one by one then.
                if let Some(size) = transmit.segment_size
                    && self.state.max_gso_segments() <= 1
                    && e.kind() != io::ErrorKind::WouldBlock
                {
                    tracing::debug!(error = %e, "GSO send failed; sending segments one by one");
                    let mut outcome = SendOutcome::Sent;
                    for chunk in contents.chunks(size) {
                        let single = quinn_udp::Transmit {
                            contents: chunk,
                            segment_size: None,
                            ..transmit.clone()
                        };
                        if let Err(e) = self.send_one(&single).await {
                            log_send_error(&e, &single);
                            outcome = SendOutcome::Dropped;
                        }
                    }
                    return outcome;
                }
                log_send_error(&e, &transmit);
                SendOutcome::Dropped
            }
        }
    }

    /// One `sendmsg`, retried a bounded number of times while the socket buffer is full.
    async fn send_one(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        let mut last = None;
        for _ in 0..SEND_ATTEMPTS {
            let result = self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), transmit)
            });
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    last = Some(e);
                    match tokio::time::timeout(SEND_WAIT, self.io.writable()).await {
                        Ok(Ok(())) | Err(_) => {}
                        Ok(Err(e)) => return Err(e),
                    }
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::WouldBlock)))
    }

    /// A dual-stack IPv6 socket reaches IPv4 peers through IPv4-mapped addresses.
    fn map_addr(&self, addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.map_ip(addr.ip()), addr.port())
    }

    fn map_ip(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) if self.v6 => IpAddr::V6(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) if !self.v6 => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        }
    }
}

/// UDP is lossy anyway, so a failed send is only worth a debug line (oversized path MTU
/// probes fail this way routinely).
fn log_send_error(e: &io::Error, t: &quinn_udp::Transmit<'_>) {
    tracing::debug!(
        error = %e,
        destination = %t.destination,
        len = t.contents.len(),
        segment_size = ?t.segment_size,
        "UDP send failed; datagram dropped"
    );
}

/// Peers reached over IPv4 through a dual-stack socket are shown to the core as plain IPv4.
fn unmap_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap_ip(addr.ip()), addr.port())
}

fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Receive memory shared by both sockets: `BATCH_SIZE` slots, each large enough for a GRO
/// batch.
pub(crate) struct RecvBuffers {
    memory: Box<[u8]>,
    slot: usize,
}

impl RecvBuffers {
    /// Slots big enough for the larger GRO batch of any of `sockets`.
    pub(crate) fn new(gro_segments: usize) -> RecvBuffers {
        let slot = slot_size(gro_segments);
        RecvBuffers {
            memory: vec![0; slot * BATCH_SIZE].into_boxed_slice(),
            slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:443".parse().unwrap();
        assert_eq!(unmap_addr(mapped), v4);
        assert_eq!(unmap_addr(v4), v4);
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(unmap_addr(v6), v6);
    }

    #[test]
    fn slots_hold_a_full_gro_batch() {
        assert_eq!(slot_size(1), 64 * 1024);
        assert!(slot_size(64) >= 64 * GRO_DATAGRAM_SIZE);
    }
}
