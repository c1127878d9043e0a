//! One shard: a thread owning a [`Core`], its sockets and a hand-rolled mio event loop.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{BATCH_SIZE, RecvMeta};
use spooky_core::quic::cid::shard_of_packet;
use spooky_core::{
    Control, Core, Datagram, Input, Output, SocketKind, TcpCommand, TcpEvent, TcpId, Transmit,
};

use crate::mailbox::{ControlMsg, Inbox, Mailbox, StatsCells, Steered};
use crate::tcp::{ReadOutcome, TCP_TOKEN_BASE, TcpState, TcpTable};
use crate::udp::{Received, RecvArena, SendProgress, UdpIo};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const UPSTREAM: Token = Token(1);
pub(crate) const WAKER: Token = Token(2);

/// `recvmmsg` calls per socket per turn of the loop before other work gets its turn.
const RECV_BATCHES_PER_TURN: usize = 8;

/// Datagrams from other shards handled per turn.
const STEERED_PER_TURN: usize = 256;

/// `read`s per TCP connection per turn.
const TCP_READS_PER_TURN: usize = 8;

/// A send blocked on a full socket buffer is retried when the socket reports writable, or
/// after this long in case that report never comes.
const BLOCKED_RETRY: Duration = Duration::from_millis(50);

/// How long an exiting shard keeps trying to send what its core still has (CONNECTION_CLOSE
/// frames) when the socket buffer is full.
const FINAL_FLUSH_LIMIT: Duration = Duration::from_millis(500);

/// Initial capacity of the buffer `poll_output` writes datagrams into.
const OUT_BUF: usize = 64 * 1024;

/// mio events taken per `poll`.
const EVENTS: usize = 1024;

/// Everything a shard is built from.
pub(crate) struct ShardParts {
    /// Where this shard records its inputs, if it does.
    pub(crate) recorder: Option<crate::record::Recorder>,
    pub(crate) index: usize,
    pub(crate) core: Core,
    pub(crate) poll: Poll,
    pub(crate) listener: UdpIo,
    pub(crate) upstream: UdpIo,
    pub(crate) inbox: Inbox,
    /// Every shard's mailbox, this one's included (at `index`).
    pub(crate) peers: Arc<[Arc<Mailbox>]>,
    pub(crate) stats: Arc<StatsCells>,
}

/// A datagram the socket had no room for, kept until it has.
struct Pending {
    transmit: Transmit,
    /// The buffer `poll_output` wrote it into (swapped out, not copied).
    data: Vec<u8>,
    progress: SendProgress,
    /// The socket reported writable since the last attempt.
    writable: bool,
    /// Retry at the latest then.
    retry_at: Instant,
}

/// Counters kept locally and published to [`StatsCells`] once per turn.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    steered_datagrams: u64,
    steered_in: u64,
    steer_dropped: u64,
    send_blocked: u64,
}

/// One shard's state; [`Shard::run`] is its thread.
pub(crate) struct Shard {
    recorder: Option<crate::record::Recorder>,
    index: usize,
    core: Core,
    poll: Poll,
    events: Events,
    listener: UdpIo,
    upstream: UdpIo,
    arena: RecvArena,
    metas: [RecvMeta; BATCH_SIZE],
    /// Where `poll_output` writes datagrams.
    out_buf: Vec<u8>,
    /// The buffer of the last blocked send, for reuse.
    spare_buf: Option<Vec<u8>>,
    /// A send waiting for room in a socket buffer; nothing more is taken from the core (and
    /// no input fed) until it is out.
    pending: Option<Pending>,
    tcp: TcpTable,
    /// `Data` chunks are split off this.
    tcp_read: BytesMut,
    /// TCP events waiting to be fed to the core, in order.
    tcp_events: VecDeque<(TcpId, TcpEvent)>,
    /// TCP connections with readiness (or a resume) to act on.
    tcp_ready: VecDeque<usize>,
    inbox: Inbox,
    peers: Arc<[Arc<Mailbox>]>,
    /// Shards sent steered datagrams since they were last woken.
    wake_peers: Vec<bool>,
    /// Readiness not yet consumed (edge-triggered: set by events, cleared by `WouldBlock`).
    listener_ready: bool,
    upstream_ready: bool,
    /// The steering queue may hold datagrams.
    steer_backlog: bool,
    /// The waker fired.
    woken: bool,
    /// The clock, read once per wake-up.
    now: Instant,
    draining: bool,
    drain_deadline: Option<Instant>,
    /// The next flush deadline of a closing TCP connection.
    closing_deadline: Option<Instant>,
    stop: bool,
    counters: Counters,
    published: Counters,
    stats: Arc<StatsCells>,
}

impl Shard {
    /// Registers the sockets with the shard's poll.
    pub(crate) fn new(parts: ShardParts) -> io::Result<Shard> {
        let ShardParts {
            recorder,
            index,
            core,
            poll,
            mut listener,
            mut upstream,
            inbox,
            peers,
            stats,
        } = parts;
        poll.registry()
            .register(&mut listener.io, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut upstream.io, UPSTREAM, Interest::READABLE)?;
        let gro = listener.gro_segments().max(upstream.gro_segments());
        let shards = peers.len();
        Ok(Shard {
            recorder,
            index,
            core,
            poll,
            events: Events::with_capacity(EVENTS),
            listener,
            upstream,
            arena: RecvArena::new(gro),
            metas: [RecvMeta::default(); BATCH_SIZE],
            out_buf: Vec::with_capacity(OUT_BUF),
            spare_buf: None,
            pending: None,
            tcp: TcpTable::default(),
            tcp_read: BytesMut::new(),
            tcp_events: VecDeque::new(),
            tcp_ready: VecDeque::new(),
            inbox,
            peers,
            wake_peers: vec![false; shards],
            // Datagrams may have arrived before the first poll; edges for them are not lost
            // (registration reports current readiness), but reading first costs nothing.
            listener_ready: true,
            upstream_ready: true,
            steer_backlog: true,
            woken: false,
            now: Instant::now(),
            draining: false,
            drain_deadline: None,
            closing_deadline: None,
            stop: false,
            counters: Counters::default(),
            published: Counters::default(),
            stats,
        })
    }

    /// The thread: runs until stopped, drained, or the drain timeout passes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let span = tracing::info_span!("shard", index = self.index);
        let _entered = span.enter();
        let result = self.event_loop();
        if !self.stop {
            // Whatever ended the loop, send what the core still has (CONNECTION_CLOSE).
            self.final_flush();
        }
        self.publish_stats();
        if let Some(recorder) = self.recorder.take() {
            recorder.finish();
        }
        let metrics = self.core.metrics();
        if let Ok(mut slot) = self.stats.final_metrics.lock() {
            *slot = Some(metrics);
        }
        result
    }

    fn event_loop(&mut self) -> io::Result<()> {
        self.now = Instant::now();
        self.settle();
        loop {
            if self.stop {
                tracing::info!("stopped");
                return Ok(());
            }
            if self.core.is_drained() {
                tracing::info!("drain complete");
                return Ok(());
            }
            if let Some(deadline) = self.drain_deadline
                && self.now >= deadline
            {
                tracing::warn!(
                    connections_open = self.core.metrics().connections_open,
                    "drain timeout passed; stopping with connections still open"
                );
                return Ok(());
            }
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "polling failed; the shard stops");
                return Err(e);
            }
            self.now = Instant::now();
            self.take_events();
            self.turn();
            self.publish_stats();
            if let Some(recorder) = &mut self.recorder {
                recorder.write_pending();
            }
        }
    }

    /// How long `poll` may sleep.
    fn next_timeout(&self) -> Option<Duration> {
        let deadline = if let Some(pending) = &self.pending {
            Some(pending.retry_at)
        } else if self.listener_ready
            || self.upstream_ready
            || self.steer_backlog
            || !self.tcp_ready.is_empty()
            || !self.tcp_events.is_empty()
        {
            return Some(Duration::ZERO);
        } else {
            earliest(self.core.poll_timeout(), self.closing_deadline)
        };
        let deadline = earliest(deadline, self.drain_deadline)?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Records what `poll` reported.
    fn take_events(&mut self) {
        for event in self.events.iter() {
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_write_closed() || event.is_error();
            match event.token() {
                LISTENER | UPSTREAM => {
                    let kind = if event.token() == LISTENER {
                        SocketKind::Listener
                    } else {
                        SocketKind::Upstream
                    };
                    if readable {
                        match kind {
                            SocketKind::Listener => self.listener_ready = true,
                            SocketKind::Upstream => self.upstream_ready = true,
                        }
                    }
                    if writable
                        && let Some(pending) = &mut self.pending
                        && pending.transmit.socket == kind
                    {
                        pending.writable = true;
                    }
                }
                WAKER => self.woken = true,
                Token(token) if token >= TCP_TOKEN_BASE => {
                    let key = token - TCP_TOKEN_BASE;
                    if let Some(conn) = self.tcp.conns.get_mut(key) {
                        conn.readable |= readable;
                        conn.writable |= writable;
                        if !conn.scheduled {
                            conn.scheduled = true;
                            self.tcp_ready.push_back(key);
                        }
                    }
                }
                Token(_) => {}
            }
        }
    }

    /// One turn: commands, then (unless a send is blocked) timers, TCP, steered datagrams and
    /// the UDP sockets, each bounded so none starves the others.
    fn turn(&mut self) {
        if self.woken {
            self.woken = false;
            self.on_wake();
        }
        if self.stop {
            return;
        }
        if self.pending.is_some() {
            self.retry_pending();
            if self.pending.is_some() {
                return;
            }
            // Out again: finish draining the core (and the TCP events that waited).
            self.settle();
            if self.pending.is_some() {
                return;
            }
        }
        if self
            .core
            .poll_timeout()
            .is_some_and(|deadline| deadline <= self.now)
        {
            self.input(Input::Timeout { now: self.now });
        }
        // Everything that arrived is fed before the core's output is drained, once: a
        // client connection's ACKs then ride in the packets that carry its responses, and
        // answers to several datagrams share packets (fewer, fuller sends).
        self.service_tcp();
        self.receive_steered();
        self.receive(SocketKind::Listener);
        self.receive(SocketKind::Upstream);
        self.settle();
        self.closing_deadline = self.tcp.expire_closing(self.poll.registry(), self.now);
    }

    fn on_wake(&mut self) {
        self.peers[self.index].clear_notified();
        while let Ok(message) = self.inbox.control.try_recv() {
            match message {
                ControlMsg::Drain => self.start_drain(),
                ControlMsg::Metrics(reply) => {
                    let _ = reply.send((self.index, self.core.metrics()));
                }
                ControlMsg::Backends(reply) => {
                    let _ = reply.send((self.index, self.core.backends()));
                }
                ControlMsg::Stop => self.stop = true,
                ControlMsg::Reload(reload) => self.input(Input::Control {
                    now: self.now,
                    command: Control::Reload(reload),
                }),
            }
        }
        self.steer_backlog = true;
    }

    fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        let limit = self.core.config().timeouts.drain;
        // An absurdly long limit means waiting for the drain to finish, however long.
        self.drain_deadline = self.now.checked_add(limit);
        tracing::info!(timeout = ?limit, "draining");
        self.input(Input::Control {
            now: self.now,
            command: Control::Drain,
        });
    }

    /// Feeds one input, then carries out everything the core wants done.
    fn input(&mut self, input: Input) {
        self.feed_core(input);
        self.settle();
    }

    /// Hands an input to the core (and to the recording, if there is one).
    fn feed_core(&mut self, input: Input) {
        if let Some(recorder) = &mut self.recorder {
            recorder.input(&input);
        }
        self.core.handle_input(input);
    }

    /// Drains the core's output and feeds the TCP events that produces, until there is
    /// nothing left or a send is blocked.
    fn settle(&mut self) {
        loop {
            self.flush();
            if self.pending.is_some() {
                return;
            }
            let Some((id, event)) = self.tcp_events.pop_front() else {
                return;
            };
            self.feed_core(Input::Tcp {
                now: self.now,
                id,
                event,
            });
        }
    }

    /// Drains `poll_output` until the core has nothing more or a send blocks.
    fn flush(&mut self) {
        while self.pending.is_none() {
            let Some(output) = self.core.poll_output(&mut self.out_buf) else {
                if let Some(recorder) = &mut self.recorder {
                    recorder.flushed(true);
                }
                return;
            };
            if let Some(recorder) = &mut self.recorder {
                recorder.output(&output, &self.out_buf);
            }
            match output {
                Output::Transmit(t) => self.transmit(t),
                Output::Tcp(id, command) => self.tcp_command(id, command),
            }
        }
        // A send blocked: the rest of the output waits for the socket.
        if let Some(recorder) = &mut self.recorder {
            recorder.flushed(false);
        }
    }

    fn transmit(&mut self, transmit: Transmit) {
        let Some(contents) = self.out_buf.get(..transmit.size) else {
            tracing::error!(
                size = transmit.size,
                buffer = self.out_buf.len(),
                "transmit larger than its buffer; dropped"
            );
            return;
        };
        let socket = match transmit.socket {
            SocketKind::Listener => &self.listener,
            SocketKind::Upstream => &self.upstream,
        };
        let mut progress = SendProgress::default();
        if socket.send(&transmit, contents, &mut progress) {
            return;
        }
        // The socket buffer is full: keep the datagram (swapping buffers rather than
        // copying), wait for the socket to become writable, and take nothing more from the
        // core until it is out.
        let fresh = self
            .spare_buf
            .take()
            .unwrap_or_else(|| Vec::with_capacity(OUT_BUF));
        let data = std::mem::replace(&mut self.out_buf, fresh);
        self.counters.send_blocked += 1;
        tracing::trace!(socket = ?transmit.socket, "socket buffer full; waiting for room");
        self.set_writable_interest(transmit.socket, true);
        self.pending = Some(Pending {
            transmit,
            data,
            progress,
            writable: false,
            retry_at: self.now + BLOCKED_RETRY,
        });
    }

    /// Tries the blocked send again if the socket reported room (or the retry time came).
    fn retry_pending(&mut self) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if !pending.writable && self.now < pending.retry_at {
            return;
        }
        let socket = match pending.transmit.socket {
            SocketKind::Listener => &self.listener,
            SocketKind::Upstream => &self.upstream,
        };
        let contents = &pending.data[..pending.transmit.size];
        if !socket.send(&pending.transmit, contents, &mut pending.progress) {
            pending.writable = false;
            pending.retry_at = self.now + BLOCKED_RETRY;
            return;
        }
        if let Some(pending) = self.pending.take() {
            self.set_writable_interest(pending.transmit.socket, false);
            let mut data = pending.data;
            data.clear();
            self.spare_buf = Some(data);
        }
    }

    /// Adds or removes WRITABLE interest: only wanted while a send waits, since every freed
    /// send buffer slot would otherwise wake the loop.
    fn set_writable_interest(&mut self, kind: SocketKind, writable: bool) {
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let (socket, token) = match kind {
            SocketKind::Listener => (&mut self.listener, LISTENER),
            SocketKind::Upstream => (&mut self.upstream, UPSTREAM),
        };
        if let Err(e) = self
            .poll
            .registry()
            .reregister(&mut socket.io, token, interest)
        {
            tracing::warn!(socket = ?kind, error = %e, "cannot change UDP socket interest");
        }
    }

    /// Before exiting: send what the core still has, waiting (bounded) for room.
    fn final_flush(&mut self) {
        let limit = Instant::now() + FINAL_FLUSH_LIMIT;
        loop {
            self.settle();
            if self.pending.is_none() {
                return;
            }
            let now = Instant::now();
            if now >= limit {
                tracing::warn!("socket buffer still full at exit; remaining datagrams dropped");
                return;
            }
            if let Err(e) = self
                .poll
                .poll(&mut self.events, Some((limit - now).min(BLOCKED_RETRY)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::warn!(error = %e, "polling failed while flushing at exit");
                return;
            }
            self.now = Instant::now();
            if let Some(pending) = &mut self.pending {
                pending.writable = true;
            }
            self.retry_pending();
        }
    }

    // ---- UDP receive and connection-ID steering ----

    /// Reads what a socket has, up to [`RECV_BATCHES_PER_TURN`] `recvmmsg` calls.
    fn receive(&mut self, kind: SocketKind) {
        for _ in 0..RECV_BATCHES_PER_TURN {
            let ready = match kind {
                SocketKind::Listener => self.listener_ready,
                SocketKind::Upstream => self.upstream_ready,
            };
            if !ready || self.pending.is_some() || self.stop {
                return;
            }
            let socket = match kind {
                SocketKind::Listener => &self.listener,
                SocketKind::Upstream => &self.upstream,
            };
            let count = match socket.recv(&mut self.arena, &mut self.metas) {
                Ok(count) => count,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        // The next datagram brings a new edge; until then, nothing to do.
                        tracing::debug!(socket = ?kind, error = %e, "UDP receive failed");
                    }
                    match kind {
                        SocketKind::Listener => self.listener_ready = false,
                        SocketKind::Upstream => self.upstream_ready = false,
                    }
                    return;
                }
            };
            for index in 0..count {
                let socket = match kind {
                    SocketKind::Listener => &self.listener,
                    SocketKind::Upstream => &self.upstream,
                };
                let received = socket.received(&mut self.arena, index, &self.metas[index]);
                match kind {
                    SocketKind::Listener if self.peers.len() > 1 => self.steer_or_feed(received),
                    _ => self.feed(kind, received),
                }
            }
            self.wake_steered_peers();
        }
    }

    /// Feeds a datagram without draining the core's output: the caller settles once the
    /// whole receive batch is in.
    fn feed(&mut self, socket: SocketKind, received: Received) {
        let Received {
            from,
            local_ip,
            ecn,
            data,
            segment_size,
        } = received;
        self.feed_core(Input::Datagram(Datagram {
            now: self.now,
            socket,
            from,
            local_ip,
            ecn,
            data,
            segment_size,
        }));
    }

    /// Splits a client datagram batch into runs of segments by the shard their connection ID
    /// names; feeds this shard's runs to the core and hands the others to their shards.
    fn steer_or_feed(&mut self, received: Received) {
        let Received {
            from,
            local_ip,
            ecn,
            mut data,
            segment_size,
        } = received;
        let stride = segment_size.unwrap_or(data.len()).max(1);
        while !data.is_empty() {
            let (target, len) = next_run(&data, stride, self.index, self.peers.len());
            let run = if len == data.len() {
                std::mem::take(&mut data)
            } else {
                data.split_to(len)
            };
            let count = len.div_ceil(stride);
            let segment_size = (count > 1).then_some(stride);
            match target {
                None => self.feed(
                    SocketKind::Listener,
                    Received {
                        from,
                        local_ip,
                        ecn,
                        data: run,
                        segment_size,
                    },
                ),
                Some(shard) => {
                    let steered = Steered {
                        from,
                        local_ip,
                        ecn,
                        data: run,
                        segment_size,
                        count: count as u64,
                    };
                    match self.peers[shard].steer(steered) {
                        Ok(()) => {
                            self.counters.steered_datagrams += count as u64;
                            self.wake_peers[shard] = true;
                        }
                        Err(TrySendError::Full(d)) => {
                            self.counters.steer_dropped += d.count;
                            tracing::trace!(shard, "steering queue full; datagram dropped");
                        }
                        Err(TrySendError::Disconnected(d)) => {
                            self.counters.steer_dropped += d.count;
                            tracing::trace!(shard, "datagram for an exited shard dropped");
                        }
                    }
                }
            }
        }
    }

    /// Wakes each shard this one handed datagrams to since the last call (once).
    fn wake_steered_peers(&mut self) {
        for (shard, wake) in self.wake_peers.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.peers[shard].notify();
            }
        }
    }

    /// Feeds datagrams other shards handed over, at most [`STEERED_PER_TURN`].
    fn receive_steered(&mut self) {
        for _ in 0..STEERED_PER_TURN {
            if !self.steer_backlog || self.pending.is_some() || self.stop {
                return;
            }
            let Ok(steered) = self.inbox.steer.try_recv() else {
                self.steer_backlog = false;
                return;
            };
            self.counters.steered_in += steered.count;
            self.feed_core(Input::Datagram(Datagram {
                now: self.now,
                socket: SocketKind::Listener,
                from: steered.from,
                local_ip: steered.local_ip,
                ecn: steered.ecn,
                data: steered.data,
                segment_size: steered.segment_size,
            }));
        }
    }

    // ---- TCP ----

    /// Queues an event for the core; it is fed at the next settle.
    fn tcp_event(&mut self, id: TcpId, event: TcpEvent) {
        self.tcp_events.push_back((id, event));
    }

    /// Carries out a command from `poll_output`. Events it causes are queued, to be fed once
    /// the output is drained.
    fn tcp_command(&mut self, id: TcpId, command: TcpCommand) {
        let registry = self.poll.registry();
        if let TcpCommand::Connect(addr) = command {
            if let Err(e) = self.tcp.connect(registry, id, addr) {
                tracing::debug!(?id, %addr, error = %e, "upstream TCP connect failed");
                self.tcp_events
                    .push_back((id, TcpEvent::ConnectFailed(e.to_string())));
            }
            return;
        }
        if let TcpCommand::Close = command {
            self.tcp.close(registry, id, self.now);
            return;
        }
        let Some(key) = self.tcp.key(id) else {
            // Gone already; its Closed event is on the way to the core.
            tracing::trace!(
                ?id,
                ?command,
                "command for an unknown TCP connection ignored"
            );
            return;
        };
        let Some(conn) = self.tcp.conns.get_mut(key) else {
            return;
        };
        match command {
            TcpCommand::Send(bytes) => {
                if !bytes.is_empty() {
                    conn.queue.push_back(bytes);
                }
                if conn.state == TcpState::Open && conn.writable {
                    match conn.write_queue() {
                        Ok(0) => {}
                        Ok(n) => self.tcp_events.push_back((id, TcpEvent::Sent(n))),
                        Err(e) => {
                            self.tcp.remove(registry, key);
                            self.tcp_events
                                .push_back((id, TcpEvent::Closed(Some(e.to_string()))));
                        }
                    }
                }
            }
            TcpCommand::PauseRead => conn.paused = true,
            TcpCommand::ResumeRead => {
                conn.paused = false;
                // Whatever arrived while paused raised no new edge: read until WouldBlock.
                conn.readable = true;
                if !conn.scheduled {
                    conn.scheduled = true;
                    self.tcp_ready.push_back(key);
                }
            }
            TcpCommand::Connect(_) | TcpCommand::Close => {}
        }
    }

    /// Acts on the readiness of the connections that reported some, each once per turn.
    fn service_tcp(&mut self) {
        for _ in 0..self.tcp_ready.len() {
            if self.pending.is_some() || self.stop {
                break;
            }
            let Some(key) = self.tcp_ready.pop_front() else {
                break;
            };
            let Some(conn) = self.tcp.conns.get_mut(key) else {
                continue;
            };
            conn.scheduled = false;
            self.service_conn(key);
        }
    }

    fn service_conn(&mut self, key: usize) {
        let Some(conn) = self.tcp.conns.get_mut(key) else {
            return;
        };
        let id = conn.id;
        match conn.state {
            TcpState::Closing { .. } => {
                if conn.writable {
                    self.tcp.continue_closing(self.poll.registry(), key);
                }
                return;
            }
            TcpState::Connecting => match conn.check_connect() {
                None => return,
                Some(Err(reason)) => {
                    tracing::debug!(?id, error = %reason, "upstream TCP connect failed");
                    self.tcp.remove(self.poll.registry(), key);
                    self.tcp_event(id, TcpEvent::ConnectFailed(reason));
                    return;
                }
                Some(Ok(())) => {
                    tracing::trace!(?id, "upstream TCP connected");
                    conn.state = TcpState::Open;
                    conn.writable = true;
                    self.tcp_event(id, TcpEvent::Connected);
                }
            },
            TcpState::Open => {}
        }

        // Write what is queued (the core may have closed the connection meanwhile).
        if let Some(conn) = self.tcp.open(key, id)
            && conn.writable
            && !conn.queue.is_empty()
        {
            match conn.write_queue() {
                Ok(0) => {}
                Ok(n) => self.tcp_event(id, TcpEvent::Sent(n)),
                Err(e) => {
                    self.tcp.remove(self.poll.registry(), key);
                    self.tcp_event(id, TcpEvent::Closed(Some(e.to_string())));
                    return;
                }
            }
        }

        // Read, one chunk at a time, feeding each to the core before reading the next so
        // that a PauseRead takes effect at once.
        for _ in 0..TCP_READS_PER_TURN {
            if self.pending.is_some() {
                // Not done; come back once the send went out.
                self.schedule(key, id);
                return;
            }
            let Some(conn) = self.tcp.open(key, id) else {
                return;
            };
            if conn.paused || !conn.readable {
                return;
            }
            match conn.read_chunk(&mut self.tcp_read) {
                ReadOutcome::Data(bytes) => {
                    let full = bytes.len() == crate::tcp::READ_CHUNK;
                    self.tcp_event(id, TcpEvent::Data(bytes));
                    if full {
                        // More is waiting: let the core see this chunk first, so that a
                        // PauseRead takes effect before the next read.
                        self.settle();
                    }
                }
                ReadOutcome::WouldBlock => return,
                ReadOutcome::Closed(reason) => {
                    self.tcp.remove(self.poll.registry(), key);
                    self.tcp_event(id, TcpEvent::Closed(reason));
                    return;
                }
            }
        }
        // More may be waiting: another turn.
        self.schedule(key, id);
    }

    fn schedule(&mut self, key: usize, id: TcpId) {
        if let Some(conn) = self.tcp.conns.get_mut(key)
            && conn.id == id
            && !conn.scheduled
        {
            conn.scheduled = true;
            self.tcp_ready.push_back(key);
        }
    }

    fn publish_stats(&mut self) {
        if self.counters == self.published {
            return;
        }
        let c = self.counters;
        self.stats
            .steered_datagrams
            .store(c.steered_datagrams, Ordering::Relaxed);
        self.stats.steered_in.store(c.steered_in, Ordering::Relaxed);
        self.stats
            .steer_dropped
            .store(c.steer_dropped, Ordering::Relaxed);
        self.stats
            .send_blocked
            .store(c.send_blocked, Ordering::Relaxed);
        self.published = c;
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The shard that must handle a client datagram: the one its connection ID names, if that is
/// another existing shard (`None`: this one).
fn target_shard(segment: &[u8], me: usize, shards: usize) -> Option<usize> {
    shard_of_packet(segment)
        .map(usize::from)
        .filter(|&shard| shard != me && shard < shards)
}

/// The first run of `stride`-sized segments of `data` that go to the same shard: that shard
/// (`None`: this one) and the run's length in bytes.
fn next_run(data: &[u8], stride: usize, me: usize, shards: usize) -> (Option<usize>, usize) {
    let mut end = stride.min(data.len());
    let target = target_shard(&data[..end], me, shards);
    while end < data.len() {
        let next = (end + stride).min(data.len());
        if target_shard(&data[end..next], me, shards) != target {
            break;
        }
        end = next;
    }
    (target, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short-header packet whose connection ID names `shard`.
    fn packet(shard: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0x40, 0xaa];
        p.extend_from_slice(&shard.to_be_bytes());
        p.resize(len, 0x55);
        p
    }

    #[test]
    fn datagrams_go_to_the_shard_their_connection_id_names() {
        assert_eq!(target_shard(&packet(1, 40), 0, 2), Some(1));
        assert_eq!(target_shard(&packet(0, 40), 0, 2), None);
        // A shard that does not exist (or garbage): handled here.
        assert_eq!(target_shard(&packet(7, 40), 0, 2), None);
        assert_eq!(target_shard(&[0x40, 1], 0, 2), None);
        assert_eq!(target_shard(&[], 0, 2), None);
    }

    #[test]
    fn gro_batches_split_into_runs_per_shard() {
        let mut batch = Vec::new();
        for shard in [1, 1, 0, 1] {
            batch.extend(packet(shard, 50));
        }
        batch.extend(packet(1, 20)); // the last segment may be shorter
        assert_eq!(next_run(&batch, 50, 0, 2), (Some(1), 100));
        assert_eq!(next_run(&batch[100..], 50, 0, 2), (None, 50));
        assert_eq!(next_run(&batch[150..], 50, 0, 2), (Some(1), 70));
        // A single datagram is one run.
        assert_eq!(next_run(&batch[..50], 50, 1, 2), (None, 50));
    }

    #[test]
    fn earliest_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(now), Some(later)), Some(now));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(now), None), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}
