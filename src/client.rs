//! A small HTTP/3 client on quinn + h3 (an implementation independent of Spooky's core),
//! used by `spooky client`, the demo and the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::{Buf, Bytes, BytesMut};
use h3::client::RequestStream;
use http::{HeaderMap, Method, Request, StatusCode};
use rustls_pki_types::CertificateDer;

/// How the client checks the server's certificate.
#[derive(Clone)]
pub enum Trust {
    /// Trust these certificates as roots.
    Roots(Vec<CertificateDer<'static>>),
    /// Accept any certificate (development only).
    Insecure,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Header fields.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The value of header `name` as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/3 connection; clone it to send requests concurrently.
#[derive(Clone)]
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    authority: String,
}

/// A quinn client config for HTTP/3 with the given trust.
pub fn quinn_client_config(trust: &Trust) -> anyhow::Result<quinn::ClientConfig> {
    let crypto = match trust {
        Trust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert.clone())
                    .context("adding a root certificate")?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(store)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"h3".to_vec()];
            Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?)
        }
        Trust::Insecure => spooky_core::quic::crypto::client_crypto(
            &spooky_core::quic::crypto::UpstreamVerify::InsecureSkipVerify,
            spooky_core::CryptoMode::System,
        )
        .map_err(|e| anyhow!(e))?,
    };
    let mut config = quinn::ClientConfig::new(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

impl H3Client {
    /// Connects to `addr`, verifying the certificate for `server_name`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust: &Trust,
    ) -> anyhow::Result<H3Client> {
        H3Client::connect_with(addr, server_name, quinn_client_config(trust)?).await
    }

    /// Like [`H3Client::connect`], with a quinn client configuration of the caller's (for
    /// other flow-control windows or timeouts; start from [`quinn_client_config`]).
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        config: quinn::ClientConfig,
    ) -> anyhow::Result<H3Client> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(config);
        let connection = endpoint
            .connect(addr, server_name)?
            .await
            .with_context(|| format!("QUIC handshake with {addr}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .context("HTTP/3 setup")?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Client {
            send,
            connection,
            endpoint,
            authority: format!("{server_name}:{}", addr.port()),
        })
    }

    /// Sends a request and reads the whole response.
    ///
    /// The body goes out (in 64 KiB DATA frames) while the response is read, so a body larger
    /// than the flow-control windows along the path does not stall an echo. The response
    /// decides the outcome: once it is complete, a failure to send the rest of the request
    /// (the server stopped reading, as RFC 9114 §4.1 allows after a complete response) is
    /// not an error, and what was not sent yet is abandoned (the stream is reset with
    /// H3_NO_ERROR).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let uri = format!("https://{}{}", self.authority, path);
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(())?;
        let mut send = self.send.clone();
        let stream = send
            .send_request(request)
            .await
            .context("sending the request head")?;
        let (mut tx, mut rx) = stream.split();
        let (response, sent) = {
            let mut sending = std::pin::pin!(send_body(&mut tx, body));
            let mut receiving = std::pin::pin!(read_response(&mut rx));
            let mut sent = None;
            let response = loop {
                tokio::select! {
                    result = &mut sending, if sent.is_none() => sent = Some(result),
                    response = &mut receiving => break response,
                }
            };
            (response, sent)
        };
        match (response, sent) {
            (Ok(response), None) => {
                // Complete before the request was: the rest of it is not needed.
                tx.stop_stream(h3::error::Code::H3_NO_ERROR);
                Ok(response)
            }
            (Ok(response), Some(_)) => Ok(response),
            (Err(e), Some(Err(send_error))) => Err(anyhow!(
                "{e:#} (sending the request had failed first: {send_error:#})"
            )),
            (Err(e), sent) => {
                if sent.is_none() {
                    tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                }
                Err(e)
            }
        }
    }

    /// A GET with no extra headers.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    /// Moves the connection to `socket`, as when the client's address or port changes
    /// (NAT rebinding): the server sees the same connection from a new address.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// Closes the connection and waits briefly for the close to go out.
    pub async fn close(self) {
        self.connection.close(0x100u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Sends `body` in DATA frames of at most 64 KiB, then ends the request.
async fn send_body(
    tx: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    mut body: Bytes,
) -> anyhow::Result<()> {
    while !body.is_empty() {
        let piece = body.split_to(body.len().min(64 * 1024));
        tx.send_data(piece)
            .await
            .context("sending the request body")?;
    }
    tx.finish().await.context("finishing the request")
}

/// Reads the response head and the whole body.
async fn read_response(
    rx: &mut RequestStream<h3_quinn::RecvStream, Bytes>,
) -> anyhow::Result<Response> {
    let head = rx
        .recv_response()
        .await
        .context("reading the response head")?;
    let mut collected = BytesMut::new();
    while let Some(mut chunk) = rx.recv_data().await.context("reading the response body")? {
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            collected.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(Response {
        status: head.status(),
        headers: head.headers().clone(),
        body: collected.freeze(),
    })
}
