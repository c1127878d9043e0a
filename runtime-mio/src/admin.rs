//! The admin endpoint on its own thread: plain HTTP/1.1, one request per connection. It is
//! off the packet path, so it uses blocking std sockets and asks the shards through their
//! mailboxes like [`Handle::metrics`](crate::Handle::metrics) does.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use spooky_core::admin::{self, AdminRoute};
use spooky_core::metrics::Metrics;

use crate::Shards;

/// How often the idle admin thread checks whether the shards are still running.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Binds `address` and serves it until every shard has exited.
pub(crate) fn spawn(address: SocketAddr, shards: Arc<Shards>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name("spooky-admin".into())
        .spawn(move || {
            while shards.alive() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve(stream, &shards) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(IDLE_CHECK),
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        thread::sleep(IDLE_CHECK);
                    }
                }
            }
        })?;
    Ok(bound)
}

fn serve(mut stream: TcpStream, shards: &Shards) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !admin::head_complete(&head) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let route = AdminRoute::of_head(&head);
    let (metrics, backends) = if route.needs_state() {
        (shards.metrics(), shards.backends())
    } else {
        (Metrics::default(), Vec::new())
    };
    stream.write_all(&admin::respond(route, &metrics, &backends))
}
