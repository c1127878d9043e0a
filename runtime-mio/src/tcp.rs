//! Upstream TCP connections (to HTTP/1.1 backends) as non-blocking mio sockets, owned by the
//! shard that opened them.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;
use spooky_core::TcpId;

use crate::udp::uninit_as_mut_bytes;

/// Tokens below this belong to the shard's sockets and waker; TCP connection `key` uses
/// `Token(TCP_TOKEN_BASE + key)`.
pub(crate) const TCP_TOKEN_BASE: usize = 16;

/// Bytes read from a backend per `Data` event, at most.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Size of the shared read buffer `Data` chunks are split from.
const READ_ALLOC: usize = 4 * READ_CHUNK;

/// Buffers handed to one `writev`, at most.
const MAX_IOV: usize = 64;

/// How long a `Close` may spend writing bytes still queued before the socket is dropped.
pub(crate) const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpState {
    /// `connect` is in progress.
    Connecting,
    /// Connected; the core is told about everything that happens.
    Open,
    /// The core closed it; the queued bytes are being written out, then it is dropped. The
    /// core hears nothing more about it.
    Closing { deadline: Instant },
}

/// One upstream TCP connection.
#[derive(Debug)]
pub(crate) struct TcpConn {
    pub(crate) id: TcpId,
    pub(crate) stream: TcpStream,
    pub(crate) state: TcpState,
    /// Bytes accepted by `Send` and not yet written, in order.
    pub(crate) queue: VecDeque<Bytes>,
    /// The core asked us to stop reading.
    pub(crate) paused: bool,
    /// Readiness seen but not yet acted on (mio is edge-triggered).
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// In the shard's list of connections to service.
    pub(crate) scheduled: bool,
}

/// What reading a connection produced.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    Data(Bytes),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed (`None`) or the connection failed.
    Closed(Option<String>),
}

impl TcpConn {
    /// Writes as much of the queue as the socket takes. Returns the bytes written, or the
    /// error that ended the connection.
    pub(crate) fn write_queue(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while !self.queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (slot, bytes) in iov.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(bytes);
                count += 1;
            }
            match self.stream.write_vectored(&iov[..count]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection accepts no more bytes",
                    ));
                }
                Ok(n) => {
                    total += n;
                    advance_queue(&mut self.queue, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// One `read` of at most [`READ_CHUNK`] bytes, split off `buf` without copying.
    pub(crate) fn read_chunk(&mut self, buf: &mut BytesMut) -> ReadOutcome {
        if buf.capacity() < READ_CHUNK && !buf.try_reclaim(READ_ALLOC) {
            *buf = BytesMut::with_capacity(READ_ALLOC);
        }
        loop {
            let spare = buf.spare_capacity_mut();
            let len = READ_CHUNK.min(spare.len());
            let spare = &mut spare[..len];
            match self.stream.read(uninit_as_mut_bytes(spare)) {
                Ok(0) => return ReadOutcome::Closed(None),
                Ok(n) => {
                    // SAFETY: `read` wrote `n` bytes at the start of the spare capacity.
                    unsafe { buf.set_len(n) };
                    if n < len {
                        // A short read emptied the socket: more data brings a new edge, so
                        // there is no need to spend a syscall on the WouldBlock.
                        self.readable = false;
                    }
                    return ReadOutcome::Data(buf.split_to(n).freeze());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return ReadOutcome::WouldBlock;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ReadOutcome::Closed(Some(e.to_string())),
            }
        }
    }

    /// After a readiness event while connecting: `Some(Ok)` once connected, `Some(Err)` if
    /// the attempt failed, `None` while it is still in progress.
    pub(crate) fn check_connect(&mut self) -> Option<Result<(), String>> {
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e.to_string())),
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
}

/// Drops `n` written bytes from the front of the queue.
fn advance_queue(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if n < front.len() {
            front.advance(n);
            return;
        }
        n -= front.len();
        queue.pop_front();
    }
}

/// A shard's upstream TCP connections.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    pub(crate) conns: Slab<TcpConn>,
    /// The core's ids of the connections it still knows about (not those closing).
    pub(crate) ids: HashMap<TcpId, usize>,
    /// Keys of closing connections, for their flush deadlines.
    pub(crate) closing: Vec<usize>,
}

impl TcpTable {
    /// Starts a non-blocking connect and registers the socket. Returns the slab key.
    pub(crate) fn connect(
        &mut self,
        registry: &Registry,
        id: TcpId,
        addr: SocketAddr,
    ) -> io::Result<usize> {
        let mut stream = TcpStream::connect(addr)?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(?id, %addr, error = %e, "could not set TCP_NODELAY");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut stream,
            Token(TCP_TOKEN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(TcpConn {
            id,
            stream,
            state: TcpState::Connecting,
            queue: VecDeque::new(),
            paused: false,
            readable: false,
            writable: false,
            scheduled: false,
        });
        if let Some(old) = self.ids.insert(id, key) {
            tracing::warn!(?id, "core reused a TCP id; the old connection is dropped");
            self.remove(registry, old);
        }
        Ok(key)
    }

    /// The open connection at `key`, if it is still the one called `id`.
    pub(crate) fn open(&mut self, key: usize, id: TcpId) -> Option<&mut TcpConn> {
        self.conns
            .get_mut(key)
            .filter(|conn| conn.id == id && conn.state == TcpState::Open)
    }

    /// The slab key of the connection the core calls `id`.
    pub(crate) fn key(&self, id: TcpId) -> Option<usize> {
        self.ids.get(&id).copied()
    }

    /// Drops a connection (closing its socket).
    pub(crate) fn remove(&mut self, registry: &Registry, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if self.ids.get(&conn.id) == Some(&key) {
                self.ids.remove(&conn.id);
            }
            if let Err(e) = registry.deregister(&mut conn.stream) {
                tracing::trace!(id = ?conn.id, error = %e, "deregistering a TCP socket failed");
            }
            if matches!(conn.state, TcpState::Closing { .. }) {
                self.closing.retain(|&k| k != key);
            }
        }
    }

    /// The core closed `id`: write what is queued (bounded by [`CLOSE_FLUSH_LIMIT`]), then
    /// drop it. No events are reported for it any more.
    pub(crate) fn close(&mut self, registry: &Registry, id: TcpId, now: Instant) {
        let Some(key) = self.ids.remove(&id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == TcpState::Open && !conn.queue.is_empty() {
            match conn.write_queue() {
                Ok(_) if !conn.queue.is_empty() => {
                    conn.state = TcpState::Closing {
                        deadline: now + CLOSE_FLUSH_LIMIT,
                    };
                    self.closing.push(key);
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(?id, error = %e, "error flushing a closed upstream TCP"),
            }
        }
        if conn.state == TcpState::Open {
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        self.remove(registry, key);
    }

    /// Continues flushing a closing connection after a writable event.
    pub(crate) fn continue_closing(&mut self, registry: &Registry, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.write_queue() {
            Ok(_) if !conn.queue.is_empty() => return,
            Ok(_) => {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            Err(e) => {
                tracing::debug!(id = ?conn.id, error = %e, "error flushing a closed upstream TCP")
            }
        }
        self.remove(registry, key);
    }

    /// Drops closing connections whose flush took too long. Returns the next deadline.
    pub(crate) fn expire_closing(&mut self, registry: &Registry, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for &key in &self.closing {
            if let Some(TcpConn {
                state: TcpState::Closing { deadline },
                id,
                ..
            }) = self.conns.get(key)
            {
                if *deadline <= now {
                    tracing::debug!(?id, "upstream TCP close timed out flushing");
                    expired.push(key);
                } else {
                    next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
                }
            }
        }
        for key in expired {
            self.remove(registry, key);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_the_queue_drops_whole_and_partial_buffers() {
        let mut queue: VecDeque<Bytes> = [&b"abc"[..], b"de", b"fgh"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        advance_queue(&mut queue, 4);
        assert_eq!(
            queue,
            [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]
        );
        advance_queue(&mut queue, 1);
        assert_eq!(queue, [Bytes::from_static(b"fgh")]);
        advance_queue(&mut queue, 3);
        assert!(queue.is_empty());
        advance_queue(&mut queue, 3);
        assert!(queue.is_empty());
    }
}
