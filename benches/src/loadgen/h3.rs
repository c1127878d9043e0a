//! The HTTP/3 side: one quinn endpoint (one UDP socket) per connection, h3 on top.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Buf, Bytes};
use h3::error::StreamError;
use http::{HeaderMap, Method, Request, Uri};

use super::stats::ErrorKind;
use super::{Outcome, Target};

/// Everything needed to open HTTP/3 connections to one target.
pub(crate) struct H3Connector {
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) request: Arc<RequestTemplate>,
}

/// The request every loop repeats.
pub(crate) struct RequestTemplate {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    /// The path and query alone (HTTP/1.1's origin form).
    pub(crate) path: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl RequestTemplate {
    pub(crate) fn new(target: &Target, method: Method, headers: HeaderMap, body: Bytes) -> Self {
        RequestTemplate {
            method,
            uri: target.uri.clone(),
            path: target.uri.path_and_query().map_or_else(
                || Uri::from_static("/"),
                |p| Uri::try_from(p.as_str()).unwrap_or_else(|_| Uri::from_static("/")),
            ),
            headers,
            body,
        }
    }
}

/// An established HTTP/3 connection.
pub(crate) struct H3Conn {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    request: Arc<RequestTemplate>,
}

impl H3Connector {
    pub(crate) async fn connect(&self) -> anyhow::Result<H3Conn> {
        // A socket of its own per connection: distinct source ports spread connections over
        // SO_REUSEPORT shards the way distinct clients would.
        let bind: SocketAddr = if self.addr.is_ipv6() {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut endpoint = quinn::Endpoint::client(bind).context("binding a UDP socket")?;
        endpoint.set_default_client_config(self.client_config.clone());
        let (connection, send, driver) =
            match handshake(&endpoint, self.addr, &self.server_name).await {
                Ok(parts) => parts,
                Err(e) => {
                    endpoint.close(0u32.into(), b"");
                    return Err(e);
                }
            };
        Ok(H3Conn {
            endpoint,
            connection,
            send,
            driver,
            request: self.request.clone(),
        })
    }
}

/// The parts of an HTTP/3 connection: the QUIC connection, the request sender, and the task
/// driving the HTTP/3 connection (abort it when done).
pub(crate) type H3Parts = (
    quinn::Connection,
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    tokio::task::JoinHandle<()>,
);

/// Opens a QUIC connection on `endpoint` (with its default client configuration) and sets up
/// HTTP/3 on it.
pub(crate) async fn handshake(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
) -> anyhow::Result<H3Parts> {
    let connection = endpoint
        .connect(addr, server_name)?
        .await
        .with_context(|| format!("QUIC handshake with {addr}"))?;
    let (mut driver, send) =
        match h3::client::new(h3_quinn::Connection::new(connection.clone())).await {
            Ok(pair) => pair,
            Err(e) => {
                connection.close(0u32.into(), b"h3 setup");
                return Err(e).context("HTTP/3 setup");
            }
        };
    let driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok((connection, send, driver))
}

impl H3Conn {
    pub(crate) fn requester(&self) -> H3Requester {
        H3Requester {
            send: self.send.clone(),
            connection: self.connection.clone(),
            request: self.request.clone(),
        }
    }

    /// Closes at once (no waiting for the idle timeout); gives the CONNECTION_CLOSE a moment
    /// to leave.
    pub(crate) async fn close(self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            self.endpoint.wait_idle(),
        )
        .await;
        self.driver.abort();
    }
}

/// One request loop's handle on a connection.
pub(crate) struct H3Requester {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    connection: quinn::Connection,
    request: Arc<RequestTemplate>,
}

impl H3Requester {
    /// A requester for `request` on a connection set up by [`handshake`].
    pub(crate) fn new(
        send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        connection: quinn::Connection,
        request: Arc<RequestTemplate>,
    ) -> H3Requester {
        H3Requester {
            send,
            connection,
            request,
        }
    }
}

/// Request bodies go out in pieces of this size, so large bodies meet flow control.
const BODY_PIECE: usize = 64 * 1024;

impl H3Requester {
    pub(crate) async fn request(&mut self) -> Outcome {
        let t = &*self.request;
        let mut request = Request::new(());
        *request.method_mut() = t.method.clone();
        *request.uri_mut() = t.uri.clone();
        if !t.headers.is_empty() {
            *request.headers_mut() = t.headers.clone();
        }
        let mut stream = match self.send.send_request(request).await {
            Ok(s) => s,
            Err(e) => return self.classify(e, true),
        };
        let mut offset = 0;
        while offset < t.body.len() {
            let end = (offset + BODY_PIECE).min(t.body.len());
            if let Err(e) = stream.send_data(t.body.slice(offset..end)).await {
                return self.classify(e, false);
            }
            offset = end;
        }
        if let Err(e) = stream.finish().await {
            return self.classify(e, false);
        }
        let response = match stream.recv_response().await {
            Ok(r) => r,
            Err(e) => return self.classify(e, false),
        };
        let mut body_bytes = 0u64;
        loop {
            match stream.recv_data().await {
                Ok(Some(mut chunk)) => {
                    let n = chunk.remaining();
                    body_bytes += n as u64;
                    chunk.advance(n);
                }
                Ok(None) => break,
                Err(e) => return self.classify(e, false),
            }
        }
        Outcome::Response {
            status: response.status().as_u16(),
            body_bytes,
        }
    }

    /// Sorts a failure: `before_sent` is true when no part of the request left yet.
    fn classify(&self, error: StreamError, before_sent: bool) -> Outcome {
        match &error {
            // GOAWAY, or a graceful close before this request went out: not an error of the
            // request, but this connection is done.
            StreamError::RemoteClosing { .. } if before_sent => Outcome::Gone,
            StreamError::ConnectionError { 0: e, .. } if before_sent && e.is_h3_no_error() => {
                Outcome::Gone
            }
            StreamError::ConnectionError { .. } | StreamError::RemoteClosing { .. } => {
                Outcome::Failed(ErrorKind::Connection)
            }
            _ if self.connection.close_reason().is_some() => Outcome::Failed(ErrorKind::Connection),
            _ => Outcome::Failed(ErrorKind::Stream),
        }
    }
}
