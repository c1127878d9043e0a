//! The admin endpoint as a tokio task: plain HTTP/1.1, one request per connection. It asks
//! the core task for counters and backend states through the control channel.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use spooky_core::admin::{self, AdminRoute};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::driver::ControlMsg;

/// Binds `address` and serves it until the core task ends (its control channel closes).
pub(crate) async fn spawn(
    address: SocketAddr,
    control: mpsc::UnboundedSender<ControlMsg>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = control.closed() => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let control = control.clone();
                    tokio::spawn(async move {
                        let served = tokio::time::timeout(Duration::from_secs(5), serve(stream, control)).await;
                        if let Ok(Err(e)) = served {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    });
                }
            }
        }
    });
    Ok(bound)
}

async fn serve(
    mut stream: TcpStream,
    control: mpsc::UnboundedSender<ControlMsg>,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !admin::head_complete(&head) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let route = AdminRoute::of_head(&head);
    let (mut metrics, mut backends) = Default::default();
    if route.needs_state() {
        let (reply, answer) = oneshot::channel();
        if control.send(ControlMsg::Metrics(reply)).is_ok() {
            metrics = answer.await.unwrap_or_default();
        }
        let (reply, answer) = oneshot::channel();
        if control.send(ControlMsg::Backends(reply)).is_ok() {
            backends = answer.await.unwrap_or_default();
        }
    }
    stream
        .write_all(&admin::respond(route, &metrics, &backends))
        .await?;
    stream.shutdown().await
}
