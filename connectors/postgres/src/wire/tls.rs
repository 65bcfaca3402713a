//! TLS: the SSLRequest negotiation that upgrades a TCP connection before the startup packet.
//! The rustls configuration for each `sslmode` (with its certificate verifiers) is cdc-tls's,
//! shared with the Postgres sink.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::protocol;
use super::transport::{io_context, Stream};
use super::{ConnectParams, WireError};

pub(super) fn tls_config(params: &ConnectParams) -> Result<ClientConfig, WireError> {
    let options = params
        .tls()
        .options()
        .map_err(|e| WireError::Config(e.to_string()))?;
    cdc_tls::client_config(&options).map_err(|e| WireError::Tls(e.to_string()))
}

/// SSLRequest, then the TLS handshake if the server agrees.
pub(super) async fn negotiate_tls(
    mut tcp: TcpStream,
    params: &ConnectParams,
    config: ClientConfig,
) -> Result<Stream, WireError> {
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .await
        .map_err(|e| io_context(e, "sending SSLRequest"))?;
    // Exactly one byte, read unbuffered: anything the server (or a man in the middle) sends
    // after 'S' must go through the TLS layer, never be taken as plaintext (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| io_context(e, "reading the answer to SSLRequest"))?;
    match answer[0] {
        b'S' => {
            let server_name = ServerName::try_from(params.host.clone()).map_err(|e| {
                WireError::Tls(format!(
                    "{:?} is not a valid TLS server name: {e}",
                    params.host
                ))
            })?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| {
                    WireError::Tls(format!(
                        "handshake with {}:{} (sslmode={}) failed: {e}",
                        params.host, params.port, params.sslmode
                    ))
                })?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        b'N' if params.sslmode.requires_tls() => Err(WireError::Tls(format!(
            "server {}:{} does not accept TLS connections, but sslmode={}",
            params.host, params.port, params.sslmode
        ))),
        b'N' => Ok(Stream::Tcp(tcp)),
        other => Err(protocol(format!(
            "unexpected answer {other:#04x} to SSLRequest (is this a Postgres server?)"
        ))),
    }
}
