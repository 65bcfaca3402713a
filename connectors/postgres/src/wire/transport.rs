//! The transport under a connection: a TCP socket (plain, or TLS once [`super::tls`] has
//! negotiated it) or a Unix socket, behind one [`Stream`] type, and the TCP connect.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::WireError;

pub(super) enum Stream {
    Tcp(TcpStream),
    // Boxed: the rustls connection state is large and would bloat every variant.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Adds what was being done to an I/O error, keeping its kind.
pub(super) fn io_context(e: io::Error, what: impl fmt::Display) -> WireError {
    WireError::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}

pub(super) async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, WireError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| io_context(e, format_args!("could not resolve host {host:?}")))?;
    // Like libpq, try every address: "localhost" often resolves to ::1 first while the
    // server only listens on 127.0.0.1.
    let mut last_err = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Standby status updates are tiny and latency-sensitive: no Nagle delay.
                stream
                    .set_nodelay(true)
                    .map_err(|e| io_context(e, "could not set TCP_NODELAY"))?;
                return Ok(stream);
            }
            Err(e) => {
                last_err = Some(io_context(
                    e,
                    format_args!("could not connect to {addr} (host {host:?})"),
                ))
            }
        }
    }
    Err(last_err.unwrap_or_else(|| {
        WireError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("host {host:?} resolved to no address"),
        ))
    }))
}
