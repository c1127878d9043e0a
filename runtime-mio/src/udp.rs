//! A shard's UDP sockets: socket2 to create them, quinn-udp for `recvmmsg`/GRO, GSO, ECN and
//! packet info, mio for readiness.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use spooky_core::{EcnCodepoint, Transmit};

/// Kernel buffer size we ask for; failures are harmless.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Largest datagram we expect from a peer when GRO coalesces several into one buffer.
const GRO_DATAGRAM_SIZE: usize = 1500;

/// Datagrams per GSO batch, at most. The kernel refuses batches over 64 KiB (and quinn-udp
/// reports up to 64 segments), so with QUIC's usual 1200-1452 byte datagrams 32 is about as
/// far as one `sendmsg` can go.
pub(crate) const MAX_GSO_SEGMENTS: usize = 32;

/// Room one receive needs: a whole 64 KiB datagram, or a full GRO batch.
pub(crate) fn max_message_size(gro_segments: usize) -> usize {
    (64 * 1024).max(GRO_DATAGRAM_SIZE * gro_segments.max(1))
}

/// One UDP socket driven through quinn-udp.
#[derive(Debug)]
pub(crate) struct UdpIo {
    pub(crate) io: mio::net::UdpSocket,
    state: UdpSocketState,
    /// Bound to an IPv6 address: IPv4 peers appear as IPv4-mapped IPv6 addresses.
    v6: bool,
    local_addr: SocketAddr,
}

impl UdpIo {
    /// Binds a shard's listener: `SO_REUSEADDR` and `SO_REUSEPORT`, so that every shard binds
    /// the same address and the kernel spreads clients over them by 4-tuple hash.
    pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<UdpIo> {
        UdpIo::bind(addr, true)
    }

    /// Binds a shard's socket for backend connections: dual-stack `[::]:0`, or `0.0.0.0:0`
    /// where IPv6 is unavailable. Not shared: replies from backends must reach this shard.
    pub(crate) fn bind_upstream() -> io::Result<UdpIo> {
        match UdpIo::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0), false) {
            Ok(socket) => Ok(socket),
            Err(e) => {
                tracing::debug!(error = %e, "no dual-stack upstream socket; using IPv4 only");
                UdpIo::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0), false)
            }
        }
    }

    fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpIo> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let IpAddr::V6(ip) = addr.ip()
            && ip.is_unspecified()
        {
            socket.set_only_v6(false)?;
        }
        if reuse_port {
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
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
        let io = mio::net::UdpSocket::from_std(socket);
        let local_addr = io.local_addr()?;
        Ok(UdpIo {
            io,
            state,
            v6: local_addr.is_ipv6(),
            local_addr,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Datagrams to send in one GSO call (1 without GSO), capped at [`MAX_GSO_SEGMENTS`].
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS)
    }

    /// Datagrams the kernel may coalesce into one receive (GRO).
    pub(crate) fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// One `recvmmsg` into `arena`: returns how many of its slots were filled (described by
    /// `metas`), or `WouldBlock` once the socket is empty.
    pub(crate) fn recv(
        &self,
        arena: &mut RecvArena,
        metas: &mut [RecvMeta; BATCH_SIZE],
    ) -> io::Result<usize> {
        arena.prepare();
        let mut iovs = arena.iovecs();
        loop {
            match self.state.recv((&self.io).into(), &mut iovs, metas) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Converts what `recv` put in slot `index` into what the core takes, mapping
    /// IPv4-mapped addresses back to plain IPv4. The payload is split off the slot's buffer
    /// without copying.
    pub(crate) fn received(
        &self,
        arena: &mut RecvArena,
        index: usize,
        meta: &RecvMeta,
    ) -> Received {
        let data = arena.take(index, meta.len);
        let segment_size = (meta.stride > 0 && data.len() > meta.stride).then_some(meta.stride);
        Received {
            from: unmap_addr(meta.addr),
            local_ip: meta.dst_ip.map(unmap_ip),
            ecn: meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8)),
            data,
            segment_size,
        }
    }

    /// Sends (the rest of) `contents` as `t` asks. `progress` says how far an earlier
    /// attempt got. Returns `false` when the socket buffer is full: call again with the same
    /// `progress` once the socket is writable. Any other error drops the datagram with a
    /// debug log, as UDP may lose it anyway.
    pub(crate) fn send(&self, t: &Transmit, contents: &[u8], progress: &mut SendProgress) -> bool {
        let transmit = quinn_udp::Transmit {
            destination: self.map_addr(t.destination),
            ecn: t
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size: t.segment_size.filter(|&s| s > 0 && s < contents.len()),
            src_ip: t.src_ip.map(|ip| self.map_ip(ip)),
        };
        // quinn-udp turns GSO off when the kernel or NIC rejects it, but the core keeps
        // producing batches: send those one datagram at a time.
        if transmit.segment_size.is_some() && self.state.max_gso_segments() <= 1 {
            progress.one_by_one = true;
        }
        if !progress.one_by_one {
            match self.try_send(&transmit) {
                Ok(()) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    if transmit.segment_size.is_none() {
                        log_send_error(&e, &transmit);
                        return true;
                    }
                    // A batch the kernel refused (GSO unsupported, or larger than it takes)
                    // is not lost: its datagrams go one by one.
                    tracing::debug!(error = %e, "GSO send failed; sending datagrams one by one");
                    progress.one_by_one = true;
                }
            }
        }
        let size = transmit.segment_size.unwrap_or(contents.len()).max(1);
        while progress.offset < contents.len() {
            let end = (progress.offset + size).min(contents.len());
            let single = quinn_udp::Transmit {
                contents: &contents[progress.offset..end],
                segment_size: None,
                ..transmit
            };
            match self.try_send(&single) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => log_send_error(&e, &single),
            }
            progress.offset = end;
        }
        true
    }

    fn try_send(&self, transmit: &quinn_udp::Transmit<'_>) -> io::Result<()> {
        loop {
            match self.state.try_send((&self.io).into(), transmit) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// A dual-stack IPv6 socket reaches IPv4 peers through IPv4-mapped addresses.
    fn map_addr(&self, addr: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.map_ip(addr.ip()), addr.port())
    }

    fn map_ip(&self, ip: IpAddr) -> IpAddr {
        map_ip(self.v6, ip)
    }
}

/// How far a send got, for resuming it after `WouldBlock`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendProgress {
    /// Sending datagram by datagram instead of as one GSO batch.
    pub(crate) one_by_one: bool,
    /// Bytes already sent (only when `one_by_one`).
    pub(crate) offset: usize,
}

/// One datagram (or GRO batch) taken off a socket.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) from: SocketAddr,
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) ecn: Option<EcnCodepoint>,
    pub(crate) data: BytesMut,
    pub(crate) segment_size: Option<usize>,
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

fn map_ip(v6_socket: bool, ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v6_socket => IpAddr::V6(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) if !v6_socket => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    }
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

/// Receive memory: one growing `BytesMut` per `recvmmsg` slot.
///
/// The kernel writes each message at the start of its slot's free space; `take` splits exactly
/// the received bytes off the front, so the core gets an owned `BytesMut` without a copy, and
/// the next message of that slot lands right behind it (small datagrams pack tightly). When a
/// slot has less room left than one message may need, its buffer is reclaimed in place if
/// nothing still refers to it (the common case: the core handles datagrams synchronously) or
/// replaced by a fresh allocation otherwise.
pub(crate) struct RecvArena {
    slots: Vec<BytesMut>,
    /// Room one message may need.
    message: usize,
    /// Size of each slot's allocation.
    chunk: usize,
}

impl RecvArena {
    /// Slots for messages of up to `max_message_size(gro_segments)` bytes.
    pub(crate) fn new(gro_segments: usize) -> RecvArena {
        let message = max_message_size(gro_segments);
        let chunk = 2 * message;
        RecvArena {
            slots: (0..BATCH_SIZE)
                .map(|_| BytesMut::with_capacity(chunk))
                .collect(),
            message,
            chunk,
        }
    }

    /// Makes sure every slot has room for a whole message.
    fn prepare(&mut self) {
        for slot in &mut self.slots {
            debug_assert!(slot.is_empty());
            if slot.capacity() < self.message && !slot.try_reclaim(self.chunk) {
                *slot = BytesMut::with_capacity(self.chunk);
            }
        }
    }

    /// The free space of every slot, for the kernel to write into.
    fn iovecs(&mut self) -> [IoSliceMut<'_>; BATCH_SIZE] {
        let mut slots = self.slots.iter_mut();
        std::array::from_fn(|_| {
            let slot = slots.next().expect("BATCH_SIZE slots");
            IoSliceMut::new(uninit_as_mut_bytes(slot.spare_capacity_mut()))
        })
    }

    /// Splits the `len` bytes the kernel wrote into slot `index` off its buffer.
    fn take(&mut self, index: usize, len: usize) -> BytesMut {
        let slot = &mut self.slots[index];
        let len = len.min(slot.capacity());
        // SAFETY: `recv` handed the kernel this slot's free space and it reported writing
        // `len` bytes at its start, so `0..len` is initialised (and within capacity).
        unsafe { slot.set_len(len) };
        slot.split_to(len)
    }
}

/// Views uninitialised memory as a byte slice to hand to a system call that only writes it.
///
/// The bytes must not be read before something has written them: callers only read the prefix
/// the kernel reports as filled.
pub(crate) fn uninit_as_mut_bytes(buf: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    // SAFETY: `MaybeUninit<u8>` and `u8` have the same layout. The slice goes only to `read`,
    // `recvmsg` and `recvmmsg`, which write into it and never read it; the caller reads
    // nothing but what they report as written. (tokio hands mio uninitialised buffers the
    // same way.)
    unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) }
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
        assert_eq!(map_ip(true, v4.ip()), mapped.ip());
        assert_eq!(map_ip(false, mapped.ip()), v4.ip());
        assert_eq!(map_ip(true, v6.ip()), v6.ip());
        assert_eq!(map_ip(false, v4.ip()), v4.ip());
    }

    /// Receives until `len` bytes arrived (or a second passed).
    fn receive_all(socket: &UdpIo, len: usize) -> Vec<Received> {
        let mut arena = RecvArena::new(socket.gro_segments());
        let mut metas = [RecvMeta::default(); BATCH_SIZE];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.iter().map(|r: &Received| r.data.len()).sum::<usize>() < len {
            assert!(
                std::time::Instant::now() < deadline,
                "datagrams lost on loopback"
            );
            match socket.recv(&mut arena, &mut metas) {
                Ok(n) => {
                    for (i, meta) in metas.iter().enumerate().take(n) {
                        got.push(socket.received(&mut arena, i, meta));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("receive failed: {e}"),
            }
        }
        got
    }

    #[test]
    fn batches_cross_loopback_between_a_listener_and_a_dual_stack_socket() {
        let listener = UdpIo::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let upstream = UdpIo::bind_upstream().unwrap();
        let upstream_port = upstream.local_addr().port();
        let contents: Vec<u8> = (0..250u8).collect();

        // A three-datagram batch from the dual-stack socket to an IPv4 address.
        let transmit = Transmit {
            socket: spooky_core::SocketKind::Upstream,
            destination: listener.local_addr(),
            ecn: None,
            size: contents.len(),
            segment_size: Some(100),
            src_ip: None,
        };
        assert!(upstream.send(&transmit, &contents, &mut SendProgress::default()));
        let got = receive_all(&listener, contents.len());
        let mut joined = Vec::new();
        for received in &got {
            // Shown as plain IPv4, whichever way the socket saw it.
            assert_eq!(
                received.from,
                SocketAddr::from(([127, 0, 0, 1], upstream_port))
            );
            assert_eq!(received.local_ip, Some(IpAddr::from([127, 0, 0, 1])));
            // Coalesced by GRO (stride 100) or one by one.
            match received.segment_size {
                Some(stride) => assert_eq!(stride, 100),
                None => assert!(received.data.len() <= 100),
            }
            joined.extend_from_slice(&received.data);
        }
        assert_eq!(joined, contents);

        // And back: the dual-stack socket sees the IPv4 peer unmapped.
        let transmit = Transmit {
            socket: spooky_core::SocketKind::Listener,
            destination: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            ecn: None,
            size: 10,
            segment_size: None,
            src_ip: None,
        };
        assert!(listener.send(&transmit, &contents[..10], &mut SendProgress::default()));
        let got = receive_all(&upstream, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, listener.local_addr());
        assert_eq!(&got[0].data[..], &contents[..10]);
        assert_eq!(got[0].segment_size, None);
    }

    #[test]
    fn listeners_share_a_port() {
        let first = UdpIo::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let second = UdpIo::bind_listener(first.local_addr()).unwrap();
        assert_eq!(first.local_addr(), second.local_addr());
        assert!(first.max_gso_segments() >= 1 && first.max_gso_segments() <= MAX_GSO_SEGMENTS);
    }

    #[test]
    fn messages_hold_a_full_gro_batch() {
        assert_eq!(max_message_size(1), 64 * 1024);
        assert!(max_message_size(64) >= 64 * GRO_DATAGRAM_SIZE);
    }

    /// Pretends the kernel wrote `len` bytes of `byte` into slot 0, and takes them.
    fn fake_recv(arena: &mut RecvArena, len: usize, byte: u8) -> BytesMut {
        arena.prepare();
        arena.iovecs()[0][..len].fill(byte);
        arena.take(0, len)
    }

    #[test]
    fn arena_packs_datagrams_and_reclaims_its_memory() {
        let mut arena = RecvArena::new(1);
        arena.prepare();
        let base = arena.slots[0].spare_capacity_mut().as_ptr() as usize;
        let first = fake_recv(&mut arena, 3, 1);
        let second = fake_recv(&mut arena, 3, 2);
        assert_eq!(&first[..], &[1, 1, 1]);
        assert_eq!(&second[..], &[2, 2, 2]);
        // Packed: the second datagram starts right after the first, in the same allocation.
        assert_eq!(first.as_ptr() as usize, base);
        assert_eq!(second.as_ptr() as usize, base + 3);

        // Use up the slot; with nothing else referring to it, it is reclaimed in place.
        drop((first, second));
        let rest = arena.slots[0].capacity() - arena.message + 1;
        drop(fake_recv(&mut arena, rest, 3));
        arena.prepare();
        assert_eq!(arena.slots[0].spare_capacity_mut().as_ptr() as usize, base);

        // While a datagram is still held, the slot moves to a new allocation instead.
        let len = arena.chunk - arena.message + 1;
        let held = fake_recv(&mut arena, len, 4);
        arena.prepare();
        assert!(arena.slots[0].capacity() >= arena.message);
        assert_ne!(arena.slots[0].spare_capacity_mut().as_ptr() as usize, base);
        assert_eq!(held.as_ptr() as usize, base);
    }
}
