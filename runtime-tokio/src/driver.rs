//! The task that owns the core: waits for sockets, timers, TCP events and commands, feeds them
//! to the core and carries out what it asks.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn_udp::{BATCH_SIZE, RecvMeta};
use spooky_core::metrics::Metrics;
use spooky_core::{
    Control, Core, Datagram, Input, Output, SocketKind, TcpCommand, TcpEvent, TcpId, Transmit,
};
use tokio::sync::{mpsc, oneshot};

use crate::tcp;
use crate::udp::{RecvBuffers, UdpIo};

/// `recvmmsg` calls per readiness wake-up before other events get a turn.
const RECV_CALLS_PER_WAKE: usize = 8;

/// Pause after an unexpected receive error, so a persistent one cannot spin the loop.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(1);

/// Commands from [`Handle`](crate::Handle) to the task.
#[derive(Debug)]
pub(crate) enum ControlMsg {
    Drain,
    Metrics(oneshot::Sender<Metrics>),
    Backends(oneshot::Sender<Vec<spooky_core::BackendStatus>>),
    Reload(Box<spooky_core::Reload>),
}

/// Metrics the task leaves behind when it ends, for `Handle::metrics` calls that come later.
pub(crate) type FinalMetrics = Arc<Mutex<Option<Metrics>>>;

/// What woke the task.
enum Wake {
    Readable(SocketKind, io::Result<()>),
    Timer(Instant),
    DrainDeadline,
    Tcp(TcpId, TcpEvent),
    Control(Option<ControlMsg>),
}

/// Everything the core task owns.
pub(crate) struct Driver {
    core: Core,
    listener: UdpIo,
    upstream: UdpIo,
    recv_bufs: RecvBuffers,
    metas: [RecvMeta; BATCH_SIZE],
    /// Datagram payloads from `poll_output`.
    out_buf: Vec<u8>,
    tcp_events_tx: tcp::EventSender,
    tcp_events_rx: mpsc::UnboundedReceiver<(TcpId, TcpEvent)>,
    /// Command channels of the open upstream TCP connections.
    tcp_conns: HashMap<TcpId, mpsc::UnboundedSender<tcp::Command>>,
    control: mpsc::UnboundedReceiver<ControlMsg>,
    /// False once every `Handle` is gone.
    control_open: bool,
    /// A drain was requested.
    draining: bool,
    /// When draining, the moment the task gives up waiting for the drain to finish.
    drain_deadline: Option<Instant>,
    final_metrics: FinalMetrics,
}

impl Driver {
    pub(crate) fn new(
        core: Core,
        listener: UdpIo,
        upstream: UdpIo,
        control: mpsc::UnboundedReceiver<ControlMsg>,
        final_metrics: FinalMetrics,
    ) -> Driver {
        let gro = listener.gro_segments().max(upstream.gro_segments());
        let (tcp_events_tx, tcp_events_rx) = mpsc::unbounded_channel();
        Driver {
            core,
            listener,
            upstream,
            recv_bufs: RecvBuffers::new(gro),
            metas: [RecvMeta::default(); BATCH_SIZE],
            out_buf: Vec::with_capacity(64 * 1024),
            tcp_events_tx,
            tcp_events_rx,
            tcp_conns: HashMap::new(),
            control,
            control_open: true,
            draining: false,
            drain_deadline: None,
            final_metrics,
        }
    }

    /// Runs until a drain completes or times out.
    pub(crate) async fn run(mut self) -> io::Result<()> {
        let result = self.event_loop().await;
        // Whatever ended the loop, send what the core still has (CONNECTION_CLOSE frames).
        self.flush().await;
        let metrics = self.core.metrics();
        if let Ok(mut slot) = self.final_metrics.lock() {
            *slot = Some(metrics);
        }
        // Dropping the command channels ends the connection tasks.
        self.tcp_conns.clear();
        result
    }

    async fn event_loop(&mut self) -> io::Result<()> {
        self.flush().await;
        loop {
            if self.core.is_drained() {
                tracing::info!("drain complete");
                return Ok(());
            }
            if let Some(deadline) = self.drain_deadline
                && Instant::now() >= deadline
            {
                let open = self.core.metrics().connections_open;
                tracing::warn!(
                    connections_open = open,
                    "drain timeout passed; stopping with connections still open"
                );
                return Ok(());
            }
            match self.wait().await {
                Wake::Readable(kind, Ok(())) => self.on_readable(kind).await,
                Wake::Readable(kind, Err(e)) => {
                    tracing::error!(socket = ?kind, error = %e, "UDP socket failed");
                    return Err(e);
                }
                Wake::Timer(deadline) => {
                    // Never feed a time before the deadline, or the timer would fire again at
                    // once.
                    let now = Instant::now().max(deadline);
                    self.input(Input::Timeout { now }).await;
                }
                // Checked at the top of the loop.
                Wake::DrainDeadline => {}
                Wake::Tcp(id, event) => self.on_tcp_event(id, event).await,
                Wake::Control(Some(ControlMsg::Drain)) => self.start_drain().await,
                Wake::Control(Some(ControlMsg::Metrics(reply))) => {
                    let _ = reply.send(self.core.metrics());
                }
                Wake::Control(Some(ControlMsg::Backends(reply))) => {
                    let _ = reply.send(self.core.backends());
                }
                Wake::Control(Some(ControlMsg::Reload(reload))) => {
                    let now = Instant::now();
                    self.input(Input::Control {
                        now,
                        command: spooky_core::Control::Reload(reload),
                    })
                    .await;
                }
                Wake::Control(None) => self.control_open = false,
            }
        }
    }

    /// Waits for the next thing to happen.
    async fn wait(&mut self) -> Wake {
        let timer = self.core.poll_timeout();
        // A placeholder for disabled branches (their futures are built but never polled).
        let never = tokio::time::Instant::now();
        let timer_at = timer.map_or(never, tokio::time::Instant::from_std);
        let drain_at = self
            .drain_deadline
            .map_or(never, tokio::time::Instant::from_std);
        tokio::select! {
            result = self.listener.readable() => Wake::Readable(SocketKind::Listener, result),
            result = self.upstream.readable() => Wake::Readable(SocketKind::Upstream, result),
            () = tokio::time::sleep_until(timer_at), if timer.is_some() => {
                Wake::Timer(timer.unwrap_or_else(Instant::now))
            }
            () = tokio::time::sleep_until(drain_at), if self.drain_deadline.is_some() => {
                Wake::DrainDeadline
            }
            Some((id, event)) = self.tcp_events_rx.recv() => Wake::Tcp(id, event),
            message = self.control.recv(), if self.control_open => Wake::Control(message),
        }
    }

    /// Feeds one input, then carries out everything the core wants done.
    async fn input(&mut self, input: Input) {
        self.core.handle_input(input);
        self.flush().await;
    }

    /// Drains `poll_output` until the core has nothing more to do.
    async fn flush(&mut self) {
        while let Some(output) = self.core.poll_output(&mut self.out_buf) {
            match output {
                Output::Transmit(t) => self.transmit(&t).await,
                Output::Tcp(id, command) => self.tcp_command(id, command),
            }
        }
    }

    async fn transmit(&mut self, t: &Transmit) {
        let socket = match t.socket {
            SocketKind::Listener => &self.listener,
            SocketKind::Upstream => &self.upstream,
        };
        let Some(contents) = self.out_buf.get(..t.size) else {
            tracing::error!(
                size = t.size,
                buffer = self.out_buf.len(),
                "transmit larger than its buffer; dropped"
            );
            return;
        };
        socket.send(t, contents).await;
    }

    /// Reads what the socket has (bounded) and feeds each datagram batch to the core.
    async fn on_readable(&mut self, kind: SocketKind) {
        for _ in 0..RECV_CALLS_PER_WAKE {
            let socket = match kind {
                SocketKind::Listener => &self.listener,
                SocketKind::Upstream => &self.upstream,
            };
            let count = match socket.try_recv(&mut self.recv_bufs, &mut self.metas) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(socket = ?kind, error = %e, "UDP receive failed");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    return;
                }
            };
            let now = Instant::now();
            for index in 0..count {
                let socket = match kind {
                    SocketKind::Listener => &self.listener,
                    SocketKind::Upstream => &self.upstream,
                };
                let received = socket.received(&self.recv_bufs, index, &self.metas[index]);
                self.input(Input::Datagram(Datagram {
                    now,
                    socket: kind,
                    from: received.from,
                    local_ip: received.local_ip,
                    ecn: received.ecn,
                    data: received.data,
                    segment_size: received.segment_size,
                }))
                .await;
            }
        }
    }

    fn tcp_command(&mut self, id: TcpId, command: TcpCommand) {
        let command = match command {
            TcpCommand::Connect(addr) => {
                let tx = tcp::spawn(id, addr, self.tcp_events_tx.clone());
                if self.tcp_conns.insert(id, tx).is_some() {
                    tracing::warn!(?id, "core reused a TCP id; the old connection is dropped");
                }
                return;
            }
            TcpCommand::Close => {
                if let Some(tx) = self.tcp_conns.remove(&id) {
                    let _ = tx.send(tcp::Command::Close);
                }
                return;
            }
            TcpCommand::Send(bytes) => tcp::Command::Send(bytes),
            TcpCommand::PauseRead => tcp::Command::PauseRead,
            TcpCommand::ResumeRead => tcp::Command::ResumeRead,
        };
        match self.tcp_conns.get(&id) {
            // A send error means the task ended; its Closed event is on the way.
            Some(tx) => {
                let _ = tx.send(command);
            }
            None => tracing::trace!(?id, "command for an unknown TCP connection ignored"),
        }
    }

    async fn on_tcp_event(&mut self, id: TcpId, event: TcpEvent) {
        if !self.tcp_conns.contains_key(&id) {
            // The core closed this connection already and expects nothing more from it.
            tracing::trace!(?id, ?event, "event for a closed TCP connection ignored");
            return;
        }
        if matches!(event, TcpEvent::ConnectFailed(_) | TcpEvent::Closed(_)) {
            self.tcp_conns.remove(&id);
        }
        let now = Instant::now();
        self.input(Input::Tcp { now, id, event }).await;
    }

    async fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        let now = Instant::now();
        let limit = self.core.config().timeouts.drain;
        // An absurdly long limit means waiting for the drain to finish, however long.
        self.drain_deadline = now.checked_add(limit);
        tracing::info!(timeout = ?limit, "draining");
        self.input(Input::Control {
            now,
            command: Control::Drain,
        })
        .await;
    }
}
