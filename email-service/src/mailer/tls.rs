//! Implicit TLS (`smtps://`) over a socket this crate opened itself, so `TCP_NODELAY` is set
//! underneath (see [`super::smtp`]): `tokio-rustls` with the ring provider and the webpki roots,
//! wrapped as lettre's `AsyncTokioStream`.

use std::{net::SocketAddr, sync::Arc};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::net::TcpStream;

pub(super) fn connector() -> tokio_rustls::TlsConnector {
    let roots = tokio_rustls::rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    // The ring provider supports the default protocol versions; this cannot fail.
    match config {
        Ok(config) => tokio_rustls::TlsConnector::from(Arc::new(config)),
        Err(error) => unreachable!("ring supports the default TLS versions: {error}"),
    }
}

/// A TLS stream as lettre's `AsyncTokioStream`.
#[derive(Debug)]
pub(super) struct TlsStream {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl TlsStream {
    pub(super) fn new(inner: tokio_rustls::client::TlsStream<TcpStream>, peer: SocketAddr) -> Self {
        Self { inner, peer }
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
