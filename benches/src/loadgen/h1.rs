//! The HTTP/1.1 side: hyper's client connection, keep-alive, one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::Outcome;
use super::h3::RequestTemplate;
use super::stats::ErrorKind;

/// Everything needed to open HTTP/1.1 connections to one target.
pub(crate) struct H1Connector {
    pub(crate) addr: SocketAddr,
    pub(crate) host: HeaderValue,
    pub(crate) request: Arc<RequestTemplate>,
}

/// An established HTTP/1.1 connection; it serves one request loop.
pub(crate) struct H1Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    host: HeaderValue,
    request: Arc<RequestTemplate>,
}

impl H1Connector {
    pub(crate) async fn connect(&self) -> anyhow::Result<H1Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("TCP connect to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(H1Conn {
            send,
            driver,
            host: self.host.clone(),
            request: self.request.clone(),
        })
    }
}

impl H1Conn {
    /// Closes the connection at once (dropping the client half closes the socket).
    pub(crate) fn close(self) {
        drop(self.send);
        self.driver.abort();
    }

    pub(crate) async fn request(&mut self) -> Outcome {
        // A connection the server closed after its last response (keep-alive ended) is not a
        // failed request: the caller reconnects.
        if self.send.ready().await.is_err() {
            return Outcome::Gone;
        }
        let t = &*self.request;
        let mut request = Request::new(Full::new(t.body.clone()));
        *request.method_mut() = t.method.clone();
        *request.uri_mut() = t.path.clone();
        if !t.headers.is_empty() {
            *request.headers_mut() = t.headers.clone();
        }
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.host.clone());
        }
        let response = match self.send.send_request(request).await {
            Ok(r) => r,
            Err(_) => return Outcome::Failed(ErrorKind::Connection),
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut body_bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        body_bytes += data.len() as u64;
                    }
                }
                Err(_) => return Outcome::Failed(ErrorKind::Connection),
            }
        }
        Outcome::Response { status, body_bytes }
    }
}
