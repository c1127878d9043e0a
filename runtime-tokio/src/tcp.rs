//! Upstream TCP connections: one task per connection, talking to the core task through
//! channels.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use spooky_core::{TcpEvent, TcpId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// Bytes read from a backend per `Data` event, at most.
const READ_CHUNK: usize = 64 * 1024;

/// How long a `Close` may spend writing bytes still queued before the socket is dropped.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// A command for a connection task (the subset of `TcpCommand` that follows `Connect`).
#[derive(Debug)]
pub(crate) enum Command {
    Send(Bytes),
    Close,
    PauseRead,
    ResumeRead,
}

/// Where connection tasks report to the core task.
pub(crate) type EventSender = mpsc::UnboundedSender<(TcpId, TcpEvent)>;

/// Spawns the task for connection `id` and returns its command channel.
pub(crate) fn spawn(
    id: TcpId,
    addr: SocketAddr,
    events: EventSender,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(id, addr, rx, events));
    tx
}

/// What one turn of a connection's select produced.
enum Step {
    Command(Option<Command>),
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
}

async fn run(
    id: TcpId,
    addr: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: EventSender,
) {
    let report = |event: TcpEvent| events.send((id, event)).is_ok();

    // Commands that arrive while connecting are kept for afterwards; a Close (or the core
    // task going away) abandons the attempt.
    let mut queued: VecDeque<Command> = VecDeque::new();
    let connect = TcpStream::connect(addr);
    tokio::pin!(connect);
    let stream = loop {
        tokio::select! {
            result = &mut connect => break result,
            command = commands.recv() => match command {
                Some(Command::Close) | None => return,
                Some(command) => queued.push_back(command),
            },
        }
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(?id, %addr, error = %e, "upstream TCP connect failed");
            report(TcpEvent::ConnectFailed(e.to_string()));
            return;
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?id, %addr, error = %e, "could not set TCP_NODELAY");
    }
    if !report(TcpEvent::Connected) {
        return;
    }
    tracing::trace!(?id, %addr, "upstream TCP connected");

    let (mut reader, mut writer) = stream.into_split();
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
    let mut reading = true;
    // Bytes accepted by `Send` and not yet written, in order.
    let mut pending: VecDeque<Bytes> = VecDeque::new();

    loop {
        let step = if let Some(command) = queued.pop_front() {
            Step::Command(Some(command))
        } else {
            if read_buf.capacity() - read_buf.len() < READ_CHUNK / 4 {
                read_buf.reserve(READ_CHUNK);
            }
            let front = pending.front().cloned();
            tokio::select! {
                command = commands.recv() => Step::Command(command),
                result = reader.read_buf(&mut read_buf), if reading => Step::Read(result),
                result = write_some(&mut writer, front.as_ref()), if front.is_some() => Step::Wrote(result),
            }
        };
        match step {
            Step::Command(Some(Command::Send(bytes))) => {
                if !bytes.is_empty() {
                    pending.push_back(bytes);
                }
            }
            Step::Command(Some(Command::PauseRead)) => reading = false,
            Step::Command(Some(Command::ResumeRead)) => reading = true,
            Step::Command(Some(Command::Close)) => {
                // The core expects queued bytes to go out first, and no events afterwards.
                let flush = async {
                    for bytes in &pending {
                        writer.write_all(bytes).await?;
                    }
                    writer.shutdown().await
                };
                match tokio::time::timeout(CLOSE_FLUSH_LIMIT, flush).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(?id, error = %e, "error closing upstream TCP"),
                    Err(_) => tracing::debug!(?id, "upstream TCP close timed out flushing"),
                }
                return;
            }
            // The core task is gone: drop the connection.
            Step::Command(None) => return,
            Step::Read(Ok(0)) => {
                report(TcpEvent::Closed(None));
                return;
            }
            Step::Read(Ok(_)) => {
                if !report(TcpEvent::Data(read_buf.split().freeze())) {
                    return;
                }
            }
            Step::Read(Err(e)) => {
                report(TcpEvent::Closed(Some(e.to_string())));
                return;
            }
            Step::Wrote(Ok(0)) => {
                report(TcpEvent::Closed(Some(
                    "the connection accepts no more bytes".into(),
                )));
                return;
            }
            Step::Wrote(Ok(n)) => {
                if let Some(front) = pending.front_mut() {
                    front.advance(n.min(front.len()));
                    if front.is_empty() {
                        pending.pop_front();
                    }
                }
                if !report(TcpEvent::Sent(n)) {
                    return;
                }
            }
            Step::Wrote(Err(e)) => {
                report(TcpEvent::Closed(Some(e.to_string())));
                return;
            }
        }
    }
}

/// One `write` of the front of the queue. Cancel-safe: a cancelled write wrote nothing.
async fn write_some(writer: &mut OwnedWriteHalf, bytes: Option<&Bytes>) -> std::io::Result<usize> {
    match bytes {
        Some(bytes) => writer.write(bytes).await,
        None => std::future::pending().await,
    }
}
