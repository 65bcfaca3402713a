//! A minimal async Postgres frontend connection, enough to run the streaming replication
//! protocol.
//!
//! The pgoutput source needs a walsender connection (`replication=database`) and the COPY BOTH
//! sub-protocol that `START_REPLICATION` switches to; tokio-postgres has no CopyBoth, so this
//! module speaks the wire protocol itself. It sits at the bottom of the Postgres connector: the
//! replication stream and the catalog/snapshot queries above it use [`Connection`] and never
//! see sockets, TLS or authentication.
//!
//! Scope, deliberately small:
//! - transport: TCP (TLS via rustls with libpq's `sslmode` semantics) or a Unix socket;
//! - authentication: trust, cleartext password, MD5 and SCRAM-SHA-256 (no channel binding);
//! - the simple query protocol with text results, and COPY BOTH.
//!
//! Frontend messages are built with `postgres-protocol`; backend messages are framed and parsed
//! here because `postgres_protocol::message::backend::Message::parse` does not know
//! CopyBothResponse (`'W'`).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Spare room kept in the read buffer before each socket read: large enough that a busy
/// replication stream is read in few syscalls, small enough not to matter per connection.
const READ_RESERVE: usize = 64 * 1024;
/// Below this much spare capacity the read buffer is grown by [`READ_RESERVE`] again.
const MIN_READ_SPACE: usize = 8 * 1024;
/// Used when the URL has no `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Used when the URL has no `application_name`.
pub const DEFAULT_APPLICATION_NAME: &str = "cdc-agent";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The fields of a server ErrorResponse (or NoticeResponse) that callers classify and show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Non-localized severity when the server sends it (`ERROR`, `FATAL`, `PANIC`, `WARNING`…).
    pub severity: String,
    /// SQLSTATE, e.g. `28P01` (wrong password) or `55006` (replication slot is active).
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, so that it stays readable in structured logs.
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "; DETAIL: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; HINT: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The transport failed: connect, read or write, or the server closed the connection.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// TLS could not be set up: handshake, certificate verification, unusable root certs, or
    /// the server refused TLS that `sslmode` requires.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The server answered with an ErrorResponse.
    #[error("{0}")]
    Server(ServerError),
    /// The server sent something this client does not understand or did not expect here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Authentication cannot proceed on the client side (method not supported, no password…).
    #[error("authentication error: {0}")]
    Auth(String),
    /// The connection URL or parameters are invalid.
    #[error("invalid Postgres connection settings: {0}")]
    Config(String),
    /// `connect_timeout` elapsed before the connection was ready.
    #[error("timed out connecting to Postgres")]
    Timeout,
}

impl WireError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WireError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// True when the connection is lost or unusable, or could not be made for a reason that may
    /// go away (server down, restarting, out of connection slots): reconnecting later may help.
    ///
    /// False for errors that reconnecting will not fix as such: SQL errors, bad configuration,
    /// and authentication failures (a wrong password is a FATAL server error, but retrying it
    /// in a loop only fills the server log).
    pub fn is_connection_error(&self) -> bool {
        match self {
            WireError::Io(_) | WireError::Tls(_) | WireError::Protocol(_) | WireError::Timeout => {
                true
            }
            WireError::Server(e) => {
                e.code.starts_with("08") // connection_exception
                    || matches!(
                        e.code.as_str(),
                        "57P01" // admin_shutdown
                        | "57P02" // crash_shutdown
                        | "57P03" // cannot_connect_now (starting up, shutting down)
                        | "53300" // too_many_connections
                    )
            }
            WireError::Auth(_) | WireError::Config(_) => false,
        }
    }
}

fn protocol(msg: impl Into<String>) -> WireError {
    WireError::Protocol(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Connection parameters
// ---------------------------------------------------------------------------------------------

/// libpq's `sslmode`, without `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// TLS or fail, without verifying the certificate.
    Require,
    /// TLS, certificate must chain to a trusted root; the host name is not checked.
    VerifyCa,
    /// TLS, certificate must chain to a trusted root and match the host name.
    VerifyFull,
}

impl SslMode {
    fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, WireError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(WireError::Config(
                "sslmode=allow is not supported; use disable or prefer".into(),
            )),
            other => Err(WireError::Config(format!(
                "unknown sslmode {other:?} (expected disable, prefer, require, verify-ca or verify-full)"
            ))),
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how to connect. Build it with [`ConnectParams::from_url`] or by hand.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectParams {
    /// Host name or IP address; a value starting with `/` is a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Ignored for Unix sockets (as in libpq).
    pub sslmode: SslMode,
    /// PEM file of trusted roots for verify-ca/verify-full; `system` means the OS store.
    /// Default: `~/.postgresql/root.crt` if it exists, else the OS store.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    /// For the whole connect (TCP, TLS, authentication); zero means no limit.
    pub connect_timeout: Duration,
}

// Hand-written so that the password never reaches a log line.
impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectParams {
    /// Parses a libpq-style URL: `postgres[ql]://[user[:password]@][host][:port][/dbname][?k=v&…]`.
    ///
    /// Query parameters: `host` (a leading `/` makes it a Unix socket directory), `port`, `user`,
    /// `password`, `dbname`, `sslmode`, `sslrootcert`, `application_name`, `connect_timeout`
    /// (seconds). They win over the same setting in the URL's authority/path. Defaults: host
    /// `localhost`, port 5432, dbname = user, sslmode `prefer`. Unknown parameters are rejected
    /// rather than ignored, so that a typo or an unsupported option (client certificates) does
    /// not silently change what is connected to.
    ///
    /// Error messages never include the URL itself: it may carry a password.
    pub fn from_url(url: &str) -> Result<Self, WireError> {
        let config = |msg: String| WireError::Config(msg);
        let url = with_placeholder_host(url);
        let parsed = url::Url::parse(&url).map_err(|e| config(format!("not a valid URL ({e})")))?;
        match parsed.scheme() {
            "postgres" | "postgresql" => {}
            other => {
                return Err(config(format!(
                    "URL scheme must be postgres:// or postgresql://, not {other}://"
                )))
            }
        }

        let mut host = match parsed.host() {
            Some(url::Host::Domain(d)) => percent_decode(d, "host")?,
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => String::new(),
        };
        let mut port = parsed.port();
        let mut user = percent_decode(parsed.username(), "user name")?;
        let mut password = parsed
            .password()
            .map(|p| percent_decode(p, "password"))
            .transpose()?;
        let mut dbname = percent_decode(parsed.path().trim_start_matches('/'), "database name")?;
        let mut sslmode = SslMode::default();
        let mut sslrootcert = None;
        let mut application_name = DEFAULT_APPLICATION_NAME.to_string();
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;

        // Split the query ourselves: form-urlencoding would turn '+' into a space, which libpq
        // does not do (and paths such as sslrootcert may contain '+').
        for pair in parsed
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key, "query parameter name")?;
            let value = percent_decode(value, &key)?;
            match key.as_str() {
                "host" => host = value,
                "port" => {
                    port = Some(value.parse().map_err(|_| {
                        config(format!(
                            "port must be a number from 1 to 65535, not {value:?}"
                        ))
                    })?)
                }
                "user" => user = value,
                "password" => password = Some(value),
                "dbname" => dbname = value,
                "sslmode" => sslmode = value.parse()?,
                "sslrootcert" => sslrootcert = Some(PathBuf::from(value)),
                "application_name" => application_name = value,
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        config(format!(
                            "connect_timeout must be a whole number of seconds, not {value:?}"
                        ))
                    })?;
                    connect_timeout = Duration::from_secs(secs);
                }
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(config(format!(
                        "{key}: TLS client certificates are not supported"
                    )))
                }
                other => {
                    return Err(config(format!(
                        "unsupported URL parameter {other:?} (supported: host, port, user, \
                         password, dbname, sslmode, sslrootcert, application_name, connect_timeout)"
                    )))
                }
            }
        }

        if user.is_empty() {
            return Err(config(
                "no user name: write postgres://USER@HOST/DB or add ?user=USER".into(),
            ));
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        let port = port.unwrap_or(5432);
        if port == 0 {
            return Err(config(
                "port must be a number from 1 to 65535, not 0".into(),
            ));
        }
        if dbname.is_empty() {
            dbname = user.clone();
        }
        Ok(ConnectParams {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
        })
    }

    fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// libpq accepts a user with an empty host (`postgres://user@/db?host=/run/pg`), the url crate
/// does not: put `localhost` there, which is also what an absent host means here.
fn with_placeholder_host(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return url.into();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) if authority[at + 1..].is_empty() || authority[at + 1..].starts_with(':') => {
            let at = authority_start + at + 1;
            format!("{}localhost{}", &url[..at], &url[at..]).into()
        }
        _ => url.into(),
    }
}

/// Decodes `%XX` escapes (only those: unlike form encoding, `+` stays `+`).
fn percent_decode(s: &str, what: &str) -> Result<String, WireError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| WireError::Config(format!("bad percent-encoding in {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| WireError::Config(format!("{what} is not valid UTF-8 after percent-decoding")))
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

enum Stream {
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
fn io_context(e: io::Error, what: impl fmt::Display) -> WireError {
    WireError::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, WireError> {
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

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// For sslmode prefer/require: any certificate is accepted (libpq does the same), but the
/// handshake signatures are still checked so the session keys belong to the presented cert.
#[derive(Debug)]
struct AcceptAnyCert {
    algs: WebPkiSupportedAlgorithms,
}

/// For sslmode verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct VerifyChainOnly {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ServerCertVerifier for VerifyChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), WireError> {
    let data = std::fs::read(path)
        .map_err(|e| WireError::Tls(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut data.as_slice()) {
        let cert = cert.map_err(|e| {
            WireError::Tls(format!("bad PEM in sslrootcert {}: {e}", path.display()))
        })?;
        roots.add(cert).map_err(|e| {
            WireError::Tls(format!(
                "unusable certificate in sslrootcert {}: {e}",
                path.display()
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(WireError::Tls(format!(
            "sslrootcert {} contains no PEM certificate",
            path.display()
        )));
    }
    Ok(())
}

fn add_native_roots(roots: &mut RootCertStore) {
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("loading OS root certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded OS root certificates");
}

/// Trusted roots for verify-ca/verify-full, in libpq's order of lookup (with the OS store as
/// the last resort instead of an error).
fn load_roots(sslrootcert: Option<&Path>) -> Result<RootCertStore, WireError> {
    let mut roots = RootCertStore::empty();
    let source = match sslrootcert {
        Some(p) if p == Path::new("system") => {
            add_native_roots(&mut roots);
            "the OS certificate store".to_string()
        }
        Some(p) => {
            add_pem_file(&mut roots, p)?;
            p.display().to_string()
        }
        None => {
            let home_root = std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql").join("root.crt"))
                .filter(|p| p.exists());
            match home_root {
                Some(p) => {
                    add_pem_file(&mut roots, &p)?;
                    p.display().to_string()
                }
                None => {
                    add_native_roots(&mut roots);
                    "the OS certificate store".to_string()
                }
            }
        }
    };
    if roots.is_empty() {
        return Err(WireError::Tls(format!(
            "no trusted root certificate found in {source}; set sslrootcert in the URL"
        )));
    }
    Ok(roots)
}

fn tls_config(params: &ConnectParams) -> Result<ClientConfig, WireError> {
    // An explicit provider: the process may have no (or another) default installed.
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::Tls(format!("TLS setup: {e}")))?;
    let mut config = match params.sslmode {
        SslMode::VerifyFull => builder
            .with_root_certificates(load_roots(params.sslrootcert.as_deref())?)
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let roots = Arc::new(load_roots(params.sslrootcert.as_deref())?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyChainOnly { roots, algs }))
                .with_no_client_auth()
        }
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { algs }))
            .with_no_client_auth(),
    };
    // What libpq 17 sends; servers before 17 ignore it, 17+ accept it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// SSLRequest, then the TLS handshake if the server agrees.
async fn negotiate_tls(
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

// ---------------------------------------------------------------------------------------------
// Backend message parsing
// ---------------------------------------------------------------------------------------------

/// Bounds-checked reader over a message body: a malformed message is an error, not a panic.
struct BodyReader<'a> {
    buf: &'a [u8],
}

impl<'a> BodyReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        BodyReader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(protocol("truncated backend message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string, without the NUL.
    fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| protocol("unterminated string in backend message"))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// ErrorResponse and NoticeResponse share this layout: (field type byte, string)*, then 0.
fn parse_error_fields(body: &[u8]) -> Result<ServerError, WireError> {
    let mut r = BodyReader::new(body);
    let mut severity_localized = None;
    let mut err = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        // Lossy: errors raised before client_encoding applies may be in the server encoding,
        // and a garbled character beats losing the error.
        let value = String::from_utf8_lossy(r.cstr()?).into_owned();
        match field {
            b'V' => err.severity = value,
            b'S' => severity_localized = Some(value),
            b'C' => err.code = value,
            b'M' => err.message = value,
            b'D' => err.detail = Some(value),
            b'H' => err.hint = Some(value),
            _ => {}
        }
    }
    if err.severity.is_empty() {
        err.severity = severity_localized.unwrap_or_else(|| "ERROR".into());
    }
    Ok(err)
}

fn parse_row_description(body: &[u8]) -> Result<Vec<String>, WireError> {
    let mut r = BodyReader::new(body);
    let n = r.i16()?;
    let mut columns = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        // table oid, attnum, type oid, typlen, typmod, format: not needed for text results.
        r.take(4 + 2 + 4 + 2 + 4 + 2)?;
        columns.push(name);
    }
    Ok(columns)
}

fn parse_data_row(body: &[u8], columns: &[String]) -> Result<Vec<Option<String>>, WireError> {
    let mut r = BodyReader::new(body);
    let n = r.i16()?;
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for i in 0..n {
        let len = r.i32()?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = r.take(len as usize)?;
        let value = std::str::from_utf8(value).map_err(|_| {
            let column = columns.get(i as usize).map_or("?", String::as_str);
            protocol(format!("value of column {column:?} is not valid UTF-8"))
        })?;
        row.push(Some(value.to_string()));
    }
    Ok(row)
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

/// The result set of [`Connection::simple_query`]: column names and text values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value at `row` in the column named `column`; None if either is absent or the
    /// value is NULL.
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(idx)?.as_deref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready for a query.
    Idle,
    /// In COPY BOTH; `sent_done` once our CopyDone went out.
    CopyBoth { sent_done: bool },
    /// Copy ended (server CopyDone or error); ReadyForQuery still to come.
    AfterCopy,
}

/// One Postgres connection, regular or walsender (`replication=database`).
///
/// Not `Clone` and not shareable: each method takes `&mut self`. [`Connection::read_copy_data`]
/// is cancel-safe, so a replication loop can `select!` between it and a status-update timer.
pub struct Connection {
    stream: Stream,
    /// Bytes received but not yet parsed; CopyData payloads are split off it without copying.
    read_buf: BytesMut,
    /// Messages queued for the server; drained by `flush`.
    write_buf: BytesMut,
    parameters: HashMap<String, String>,
    backend_pid: i32,
    state: State,
    /// An error from `queue_copy_data` (which cannot return one), reported by `flush`.
    deferred_error: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("backend_pid", &self.backend_pid)
            .field("tls", &self.is_tls())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and authenticates; returns once the server is ready for queries.
    ///
    /// `replication`: adds `replication=database` to the startup packet (walsender mode).
    /// `options`: GUCs sent as individual startup parameters, e.g. `[("DateStyle", "ISO"),
    /// ("TimeZone", "UTC")]`. `client_encoding=UTF8` is sent unless `options` sets it, because
    /// results are returned as Rust strings.
    pub async fn connect(
        params: &ConnectParams,
        replication: bool,
        options: &[(&str, &str)],
    ) -> Result<Connection, WireError> {
        let fut = Self::connect_inner(params, replication, options);
        if params.connect_timeout.is_zero() {
            fut.await
        } else {
            tokio::time::timeout(params.connect_timeout, fut)
                .await
                .map_err(|_| WireError::Timeout)?
        }
    }

    async fn connect_inner(
        params: &ConnectParams,
        replication: bool,
        options: &[(&str, &str)],
    ) -> Result<Connection, WireError> {
        let stream = if params.is_unix_socket() {
            let path = Path::new(&params.host).join(format!(".s.PGSQL.{}", params.port));
            let s = UnixStream::connect(&path).await.map_err(|e| {
                io_context(e, format_args!("could not connect to {}", path.display()))
            })?;
            Stream::Unix(s)
        } else {
            // Built before connecting so that a bad sslrootcert fails without a round trip.
            let tls = match params.sslmode {
                SslMode::Disable => None,
                _ => Some(tls_config(params)?),
            };
            let tcp = connect_tcp(&params.host, params.port).await?;
            match tls {
                Some(config) => negotiate_tls(tcp, params, config).await?,
                None => Stream::Tcp(tcp),
            }
        };
        let mut conn = Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_RESERVE),
            write_buf: BytesMut::with_capacity(1024),
            parameters: HashMap::new(),
            backend_pid: 0,
            state: State::Idle,
            deferred_error: None,
        };
        conn.startup(params, replication, options).await?;
        tracing::debug!(
            host = %params.host,
            port = params.port,
            user = %params.user,
            replication,
            tls = conn.is_tls(),
            backend_pid = conn.backend_pid,
            "connected to Postgres"
        );
        Ok(conn)
    }

    async fn startup(
        &mut self,
        params: &ConnectParams,
        replication: bool,
        options: &[(&str, &str)],
    ) -> Result<(), WireError> {
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
        ];
        if !params.application_name.is_empty() {
            startup.push(("application_name", params.application_name.as_str()));
        }
        if !options
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("client_encoding"))
        {
            startup.push(("client_encoding", "UTF8"));
        }
        if replication {
            startup.push(("replication", "database"));
        }
        startup.extend_from_slice(options);
        frontend::startup_message(startup, &mut self.write_buf)
            .map_err(|e| encode_error("startup parameters", e))?;
        self.flush().await?;

        self.authenticate(params).await?;

        // After AuthenticationOk: ParameterStatus (handled in read_message), BackendKeyData,
        // then ReadyForQuery — or an ErrorResponse (e.g. no REPLICATION privilege).
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'K' => {
                    let mut r = BodyReader::new(&body);
                    self.backend_pid = r.i32()?;
                    // The secret key is only needed for CancelRequest, which this client
                    // does not send: replication is stopped with CopyDone instead.
                }
                b'Z' => {
                    self.state = State::Idle;
                    return Ok(());
                }
                b'E' => return Err(WireError::Server(parse_error_fields(&body)?)),
                // NegotiateProtocolVersion: only sent when we ask for a newer minor version
                // or _pq_ options, which we do not; harmless to ignore.
                b'v' => {}
                other => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during connection startup",
                        other as char
                    )))
                }
            }
        }
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), WireError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {}
                b'E' => return Err(WireError::Server(parse_error_fields(&body)?)),
                b'v' => continue,
                other => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during authentication",
                        other as char
                    )))
                }
            }
            let mut r = BodyReader::new(&body);
            match r.i32()? {
                0 => return Ok(()),
                3 => {
                    let password = require_password(params, "cleartext password")?;
                    frontend::password_message(password.as_bytes(), &mut self.write_buf)
                        .map_err(|e| encode_error("password", e))?;
                    self.flush().await?;
                }
                5 => {
                    let password = require_password(params, "MD5 password")?;
                    let s = r.take(4)?;
                    let salt = [s[0], s[1], s[2], s[3]];
                    let hash = md5_hash(params.user.as_bytes(), password.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| encode_error("password", e))?;
                    self.flush().await?;
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = r.cstr()?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(String::from_utf8_lossy(m).into_owned());
                    }
                    // The list may also offer SCRAM-SHA-256-PLUS (channel binding, only over
                    // TLS); plain SCRAM is enough and works on every transport.
                    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(WireError::Auth(format!(
                            "server offers SASL mechanisms {mechanisms:?}, none of which is \
                             supported (only SCRAM-SHA-256)"
                        )));
                    }
                    let password = require_password(params, "SCRAM-SHA-256")?;
                    // unsupported() = "n,,": the client does not do channel binding. (Not
                    // unrequested(): that claims the server offered none, which a server
                    // listing -PLUS treats as a downgrade attack.)
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        s.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| encode_error("SASL message", e))?;
                    self.flush().await?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASLContinue without SASL start"))?;
                    s.update(r.rest())
                        .map_err(|e| WireError::Auth(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)
                        .map_err(|e| encode_error("SASL message", e))?;
                    self.flush().await?;
                }
                12 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASLFinal without SASL start"))?;
                    // Checks the server's signature: proves the server knows the password too.
                    s.finish(r.rest()).map_err(|e| {
                        WireError::Auth(format!("server failed SCRAM verification: {e}"))
                    })?;
                }
                2 => return Err(WireError::Auth("Kerberos V5 is not supported".into())),
                7 | 8 => return Err(WireError::Auth("GSSAPI is not supported".into())),
                9 => return Err(WireError::Auth("SSPI is not supported".into())),
                other => {
                    return Err(WireError::Auth(format!(
                        "unsupported authentication request {other}"
                    )))
                }
            }
        }
    }

    /// Runs `sql` with the simple query protocol and returns the last result set (text values).
    ///
    /// Several statements may be sent at once; an error in any of them is returned after the
    /// server is ready again, so the connection stays usable. Commands that answer with COPY
    /// are not supported here (COPY FROM STDIN is refused with CopyFail, COPY TO STDOUT data is
    /// discarded); use [`Connection::start_copy_both`] for START_REPLICATION.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, WireError> {
        self.ensure_idle().await?;
        frontend::query(sql, &mut self.write_buf).map_err(|e| encode_error("query", e))?;
        self.send_command().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message_after(&mut error).await?;
            match tag {
                b'T' => {
                    result = QueryResult {
                        columns: parse_row_description(&body)?,
                        rows: Vec::new(),
                    }
                }
                b'D' => {
                    let row = parse_data_row(&body, &result.columns)?;
                    result.rows.push(row);
                }
                b'C' | b'I' => {}
                b'E' => error = Some(parse_error_fields(&body)?),
                b'Z' => {
                    self.state = State::Idle;
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(result),
                    };
                }
                b'G' => {
                    frontend::copy_fail(
                        "COPY FROM STDIN is not supported by this client",
                        &mut self.write_buf,
                    )
                    .map_err(|e| encode_error("CopyFail", e))?;
                    self.flush().await?;
                }
                // CopyOutResponse, its data and CopyDone: drained until CommandComplete.
                b'H' | b'd' | b'c' => {}
                b'W' => {
                    self.state = State::CopyBoth { sent_done: false };
                    return Err(protocol(
                        "the command started COPY BOTH mode: use start_copy_both for it \
                         (end_copy leaves the mode)",
                    ));
                }
                other => return Err(unexpected(other, "a simple query")),
            }
        }
    }

    /// Sends a command that answers with CopyBothResponse (`START_REPLICATION …`) and returns
    /// once the connection is in COPY BOTH mode.
    ///
    /// If the server answers with an error (slot in use: SQLSTATE 55006, missing slot: 42704…)
    /// that error is returned once the server is ready again, so the connection stays usable.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), WireError> {
        self.ensure_idle().await?;
        frontend::query(sql, &mut self.write_buf).map_err(|e| encode_error("query", e))?;
        self.send_command().await?;
        let mut error = None;
        loop {
            let (tag, body) = self.read_message_after(&mut error).await?;
            match tag {
                b'W' => {
                    self.state = State::CopyBoth { sent_done: false };
                    return Ok(());
                }
                b'E' => error = Some(parse_error_fields(&body)?),
                b'Z' => {
                    self.state = State::Idle;
                    return Err(match error {
                        Some(e) => WireError::Server(e),
                        None => protocol(format!("{sql:?} did not start COPY BOTH mode")),
                    });
                }
                // E.g. START_REPLICATION on a timeline that already ended returns a result set.
                b'T' | b'D' | b'C' | b'I' => {}
                b'G' => {
                    frontend::copy_fail("expected COPY BOTH, got COPY FROM", &mut self.write_buf)
                        .map_err(|e| encode_error("CopyFail", e))?;
                    self.flush().await?;
                }
                b'H' | b'd' | b'c' => {}
                other => return Err(unexpected(other, "starting COPY BOTH")),
            }
        }
    }

    /// The next CopyData payload in COPY BOTH mode; `Ok(None)` once the copy has ended
    /// (server CopyDone, or called outside COPY BOTH).
    ///
    /// Cancel-safe: the only await point is a socket read into the internal buffer, and a
    /// message is taken off that buffer only when complete, so dropping the future (e.g. a
    /// losing `tokio::select!` branch) loses nothing. The payload is split off the read buffer
    /// without copying.
    ///
    /// The returned `Bytes` shares the read buffer's allocation (a block of about 64 KiB, or the
    /// message's size if larger): keeping a payload alive keeps that block alive.
    ///
    /// An ErrorResponse ends the copy and is returned as [`WireError::Server`]; after a FATAL
    /// one the server closes the connection.
    pub async fn read_copy_data(&mut self) -> Result<Option<Bytes>, WireError> {
        if !matches!(self.state, State::CopyBoth { .. }) {
            return Ok(None);
        }
        let (tag, body) = self.read_message().await?;
        match tag {
            b'd' => Ok(Some(body)),
            b'c' | b'C' => {
                // The server ended the copy (shutdown, or its answer to our CopyDone).
                self.state = State::AfterCopy;
                Ok(None)
            }
            b'Z' => {
                self.state = State::Idle;
                Ok(None)
            }
            b'E' => {
                self.state = State::AfterCopy;
                Err(WireError::Server(parse_error_fields(&body)?))
            }
            other => Err(unexpected(other, "COPY BOTH")),
        }
    }

    /// Leaves COPY BOTH mode: sends CopyDone (if not sent yet), discards the CopyData still in
    /// flight and waits for ReadyForQuery, so the connection can run commands again (e.g.
    /// DROP_REPLICATION_SLOT). A no-op when not in copy mode.
    pub async fn end_copy(&mut self) -> Result<(), WireError> {
        match self.state {
            State::Idle => return Ok(()),
            State::CopyBoth { sent_done: false } => {
                frontend::copy_done(&mut self.write_buf);
                self.state = State::CopyBoth { sent_done: true };
                self.flush().await?;
            }
            State::CopyBoth { sent_done: true } | State::AfterCopy => {}
        }
        self.drain_until_ready().await
    }

    /// Queues a CopyData message; nothing is sent until [`Connection::flush`].
    pub fn queue_copy_data(&mut self, payload: &[u8]) {
        match frontend::CopyData::new(payload) {
            Ok(msg) => msg.write(&mut self.write_buf),
            // Only a payload over 2 GiB can fail; flush reports it.
            Err(e) => self.deferred_error = Some(format!("cannot send CopyData: {e}")),
        }
    }

    /// Writes out everything queued. Progress survives cancellation: an interrupted flush
    /// resumes where it stopped when called again.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if let Some(e) = self.deferred_error.take() {
            return Err(protocol(e));
        }
        while self.write_buf.has_remaining() {
            let n = self.stream.write_buf(&mut self.write_buf).await?;
            if n == 0 {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "server connection closed while writing",
                )));
            }
        }
        // Needed for TLS, which buffers records.
        self.stream.flush().await?;
        Ok(())
    }

    /// A server setting reported by ParameterStatus (`server_version`, `TimeZone`,
    /// `integer_datetimes`, …), as last reported.
    pub fn server_parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Process id of the server backend (walsender) serving this connection.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Sends Terminate and closes the connection.
    pub async fn close(mut self) -> Result<(), WireError> {
        frontend::terminate(&mut self.write_buf);
        self.flush().await?;
        // The server closes right after Terminate, so a failing TLS close_notify or shutdown
        // says nothing about the session: ignore it.
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Before a new command: finish a copy that ended but whose ReadyForQuery is pending.
    async fn ensure_idle(&mut self) -> Result<(), WireError> {
        match self.state {
            State::Idle => Ok(()),
            State::AfterCopy => self.drain_until_ready().await,
            State::CopyBoth { .. } => Err(protocol(
                "connection is in COPY BOTH mode: call end_copy before running a command",
            )),
        }
    }

    /// Reads until ReadyForQuery, discarding copy data; returns the first server error seen.
    async fn drain_until_ready(&mut self) -> Result<(), WireError> {
        let mut error = None;
        loop {
            let (tag, body) = self.read_message_after(&mut error).await?;
            match tag {
                b'Z' => {
                    self.state = State::Idle;
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(()),
                    };
                }
                b'E' => {
                    let e = parse_error_fields(&body)?;
                    error.get_or_insert(e);
                }
                b'c' => {
                    if self.state == (State::CopyBoth { sent_done: true }) {
                        self.state = State::AfterCopy;
                    }
                }
                b'd' | b'C' | b'T' | b'D' | b'I' => {}
                other => return Err(unexpected(other, "leaving COPY mode")),
            }
        }
    }

    /// Flushes a command. If the write fails because the server has already closed the
    /// connection (e.g. it terminated an idle session), the ErrorResponse it sent before
    /// closing is still readable and says why: return that, as libpq does.
    async fn send_command(&mut self) -> Result<(), WireError> {
        match self.flush().await {
            Err(WireError::Io(e)) => {
                // Bounded: the peer is gone, so this ends at once with data or EOF/reset.
                let pending = tokio::time::timeout(Duration::from_secs(1), self.pending_error())
                    .await
                    .ok()
                    .flatten();
                Err(pending.map_or(WireError::Io(e), WireError::Server))
            }
            other => other,
        }
    }

    async fn pending_error(&mut self) -> Option<ServerError> {
        loop {
            match self.read_message().await {
                Ok((b'E', body)) => return parse_error_fields(&body).ok(),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// `read_message` for loops that collect an ErrorResponse until ReadyForQuery: when the
    /// connection drops after the error (a FATAL one, e.g. 57P01 admin_shutdown), the server's
    /// error says more than the end of file that follows it.
    async fn read_message_after(
        &mut self,
        error: &mut Option<ServerError>,
    ) -> Result<(u8, Bytes), WireError> {
        match self.read_message().await {
            Ok(m) => Ok(m),
            Err(e) => Err(error.take().map_or(e, WireError::Server)),
        }
    }

    /// The next backend message other than NoticeResponse, ParameterStatus and
    /// NotificationResponse, which can arrive at any time and are handled here.
    ///
    /// Cancel-safe (see `read_copy_data`).
    async fn read_message(&mut self) -> Result<(u8, Bytes), WireError> {
        loop {
            while let Some((tag, body)) = self.take_message()? {
                match tag {
                    b'N' => match parse_error_fields(&body) {
                        Ok(notice) => tracing::debug!(%notice, "server notice"),
                        Err(e) => tracing::debug!("unparsable server notice: {e}"),
                    },
                    b'S' => {
                        let mut r = BodyReader::new(&body);
                        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
                        let value = String::from_utf8_lossy(r.cstr()?).into_owned();
                        self.parameters.insert(name, value);
                    }
                    b'A' => tracing::debug!("ignoring a LISTEN/NOTIFY notification"),
                    _ => return Ok((tag, body)),
                }
            }
            self.fill_read_buf().await?;
        }
    }

    /// Takes one complete message (tag, body) off the read buffer, if there is one.
    fn take_message(&mut self) -> Result<Option<(u8, Bytes)>, WireError> {
        if self.read_buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.read_buf[0];
        let len = i32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]);
        if len < 4 {
            return Err(protocol(format!(
                "invalid length {len} for backend message {:?}",
                tag as char
            )));
        }
        let total = 1 + len as usize;
        if self.read_buf.len() < total {
            // Make room for the whole message at once rather than growing per read.
            self.read_buf.reserve(total - self.read_buf.len());
            return Ok(None);
        }
        self.read_buf.advance(5);
        // The only copy of the payload is the socket read into read_buf; split_to + freeze
        // hand out that same memory.
        let body = self.read_buf.split_to(total - 5).freeze();
        Ok(Some((tag, body)))
    }

    async fn fill_read_buf(&mut self) -> Result<(), WireError> {
        if self.read_buf.capacity() - self.read_buf.len() < MIN_READ_SPACE {
            self.read_buf.reserve(READ_RESERVE);
        }
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        Ok(())
    }
}

fn require_password<'a>(params: &'a ConnectParams, method: &str) -> Result<&'a str, WireError> {
    params.password.as_deref().ok_or_else(|| {
        WireError::Auth(format!(
            "server requires {method} authentication for user {:?} but no password is \
             configured; put it in source.url (postgres://USER:PASSWORD@HOST/DB)",
            params.user
        ))
    })
}

/// A frontend message could not be encoded (a NUL byte inside a string, or over 2 GiB): a
/// problem with what was asked, not with the connection, which is still in a clean state.
fn encode_error(what: &str, e: io::Error) -> WireError {
    WireError::Config(format!("cannot encode {what}: {e}"))
}

fn unexpected(tag: u8, during: &str) -> WireError {
    protocol(format!(
        "unexpected backend message {:?} during {during}",
        tag as char
    ))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    //! Unit tests for URL parsing, and integration tests against the private instances of
    //! `scripts/testenv.sh` (never the machine's own Postgres):
    //!
    //! ```sh
    //! scripts/testenv.sh start && eval "$(scripts/testenv.sh env)" && cargo test -p cdc-postgres wire
    //! ```

    use super::*;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PASSWORD: &str = "secret-pw";
    const GUCS: &[(&str, &str)] = &[
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
    ];

    // ---- from_url -----------------------------------------------------------------------

    #[test]
    fn from_url_defaults() {
        let p = ConnectParams::from_url("postgres://alice@db.example").unwrap();
        assert_eq!(p.host, "db.example");
        assert_eq!(p.port, 5432);
        assert_eq!(p.user, "alice");
        assert_eq!(p.password, None);
        assert_eq!(p.dbname, "alice");
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert_eq!(p.sslrootcert, None);
        assert_eq!(p.application_name, DEFAULT_APPLICATION_NAME);
        assert_eq!(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn from_url_full() {
        let p = ConnectParams::from_url(
            "postgresql://bob:pw@127.0.0.1:6543/sales?sslmode=verify-full\
             &sslrootcert=/etc/ca%20dir/root+1.crt&application_name=my%20app&connect_timeout=7",
        )
        .unwrap();
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "bob");
        assert_eq!(p.password.as_deref(), Some("pw"));
        assert_eq!(p.dbname, "sales");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        // '+' is not a space in libpq URLs.
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/etc/ca dir/root+1.crt")));
        assert_eq!(p.application_name, "my app");
        assert_eq!(p.connect_timeout, Duration::from_secs(7));
    }

    #[test]
    fn from_url_percent_encoding() {
        let p =
            ConnectParams::from_url("postgres://us%40er:p%3Aw%2F%40%25x@h/d%C3%A9b%2F1").unwrap();
        assert_eq!(p.user, "us@er");
        assert_eq!(p.password.as_deref(), Some("p:w/@%x"));
        assert_eq!(p.dbname, "déb/1");
    }

    #[test]
    fn from_url_ipv6_and_sslmodes() {
        let p = ConnectParams::from_url("postgres://u@[::1]:5433/d?sslmode=disable").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(p.port, 5433);
        assert_eq!(p.sslmode, SslMode::Disable);
        for (s, m) in [
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let p = ConnectParams::from_url(&format!("postgres://u@h/d?sslmode={s}")).unwrap();
            assert_eq!(p.sslmode, m);
            assert_eq!(m.to_string(), s);
        }
    }

    #[test]
    fn from_url_unix_socket() {
        let p =
            ConnectParams::from_url("postgres://u@/d?host=/var/run/postgresql&port=5433").unwrap();
        assert_eq!(p.host, "/var/run/postgresql");
        assert!(p.is_unix_socket());
        assert_eq!(p.port, 5433);
        let p = ConnectParams::from_url("postgres://u@%2Ftmp%2Fpg/d").unwrap();
        assert_eq!(p.host, "/tmp/pg");
        assert!(p.is_unix_socket());
        let p = ConnectParams::from_url("postgres:///d?user=u&host=%2Fsock").unwrap();
        assert_eq!(
            (p.host.as_str(), p.user.as_str(), p.dbname.as_str()),
            ("/sock", "u", "d")
        );
    }

    #[test]
    fn from_url_no_host_means_localhost() {
        let p = ConnectParams::from_url("postgres://u@/d").unwrap();
        assert_eq!(p.host, "localhost");
    }

    #[test]
    fn from_url_errors() {
        for bad in [
            "not a url",
            "http://u@h/d",
            "mysql://u@h/d",
            "postgres://h/d",         // no user
            "postgres://u@h:99999/d", // port out of range
            "postgres://u@h/d?port=abc",
            "postgres://u@h/d?sslmode=bogus",
            "postgres://u@h/d?sslmode=allow",
            "postgres://u@h/d?connect_timeout=-1",
            "postgres://u@h/d?sslcert=/c.pem",
            "postgres://u@h/d?frobnicate=1",
            "postgres://u:p%zz@h/d", // bad escape
            "postgres://u@h/%FF",    // not UTF-8
        ] {
            match ConnectParams::from_url(bad) {
                Err(WireError::Config(msg)) => {
                    assert!(!msg.contains("p%zz"), "error must not echo the URL: {msg}")
                }
                other => panic!("{bad}: expected a Config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_redacts_password() {
        let p = ConnectParams::from_url("postgres://u:hunter2@h/d").unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }

    #[test]
    fn server_error_display_and_classification() {
        let e = ServerError {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"x\"".into(),
            detail: Some("d".into()),
            hint: Some("h".into()),
        };
        assert_eq!(
            e.to_string(),
            "FATAL 28P01: password authentication failed for user \"x\"; DETAIL: d; HINT: h"
        );
        let w = WireError::Server(e.clone());
        assert_eq!(w.sqlstate(), Some("28P01"));
        assert!(!w.is_connection_error());
        let w = WireError::Server(ServerError {
            code: "57P01".into(),
            ..e
        });
        assert!(w.is_connection_error());
        assert!(WireError::Timeout.is_connection_error());
        assert!(!WireError::Config("x".into()).is_connection_error());
        assert_eq!(WireError::Timeout.sqlstate(), None);
    }

    #[test]
    fn error_fields_parse() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0";
        let e = parse_error_fields(body).unwrap();
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42P01");
        assert_eq!(e.message, "relation \"x\" does not exist");
        assert!(
            parse_error_fields(b"C42P01").is_err(),
            "truncated must be an error"
        );
    }

    /// Compile-time check: the connector spawns these futures onto the multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(params: &ConnectParams, conn: &mut Connection) {
        fn is_send<T: Send>(_: T) {}
        is_send(Connection::connect(params, true, &[]));
        is_send(conn.simple_query(""));
        is_send(conn.start_copy_both(""));
        is_send(conn.read_copy_data());
        is_send(conn.flush());
        is_send(conn.end_copy());
    }

    #[tokio::test]
    async fn nul_in_query_is_not_a_connection_error() {
        let (mut conn, _server) = fake_connection(State::Idle);
        let e = conn.simple_query("SELECT '\0'").await.unwrap_err();
        assert!(
            matches!(e, WireError::Config(_)) && !e.is_connection_error(),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn fatal_then_eof_reports_the_server_error() {
        let (mut conn, mut server) = fake_connection(State::Idle);
        let fatal = backend_msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0");
        server.write_all(&fatal).await.unwrap();
        drop(server);
        let e = conn.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(e.sqlstate(), Some("57P01"), "{e:?}");
        assert!(e.is_connection_error());
    }

    // ---- framing, against a fake server on a socket pair ----------------------------------

    fn fake_connection(state: State) -> (Connection, UnixStream) {
        let (client, server) = UnixStream::pair().unwrap();
        let conn = Connection {
            stream: Stream::Unix(client),
            read_buf: BytesMut::with_capacity(READ_RESERVE),
            write_buf: BytesMut::new(),
            parameters: HashMap::new(),
            backend_pid: 7,
            state,
            deferred_error: None,
        };
        (conn, server)
    }

    fn backend_msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn read_copy_data_survives_cancellation_mid_message() {
        let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = backend_msg(b'S', b"TimeZone\0UTC\0");
        wire.extend(backend_msg(b'd', b"small"));
        wire.extend(backend_msg(b'N', b"SNOTICE\0C00000\0Mhello\0\0"));
        wire.extend(backend_msg(b'd', &big));
        wire.extend(backend_msg(b'd', b""));
        wire.extend(backend_msg(b'c', b""));
        // Odd-sized pieces with pauses, so that reads are cancelled with half a message
        // (even half a header) in the buffer.
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(7919) {
                server.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server
        });
        let (mut got, mut cancelled) = (Vec::new(), 0);
        loop {
            tokio::select! {
                m = conn.read_copy_data() => match m.unwrap() {
                    Some(p) => got.push(p),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(1)) => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "the test must actually cancel reads");
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0][..], b"small");
        assert_eq!(&got[1][..], &big[..]);
        assert!(got[2].is_empty());
        assert_eq!(conn.server_parameter("TimeZone"), Some("UTC"));
        assert_eq!(conn.state, State::AfterCopy);
        // After the copy ended, further reads just say so.
        assert!(conn.read_copy_data().await.unwrap().is_none());
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn queue_flush_and_end_copy() {
        let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
        conn.queue_copy_data(b"r-one");
        conn.queue_copy_data(b"");
        assert!(conn.write_buf.len() > 5, "queued, not yet sent");
        conn.flush().await.unwrap();
        assert!(conn.write_buf.is_empty());
        let mut sent = vec![0u8; 2 * 5 + 5];
        server.read_exact(&mut sent).await.unwrap();
        assert_eq!(
            sent,
            [backend_msg(b'd', b"r-one"), backend_msg(b'd', b"")].concat()
        );

        // end_copy: sends CopyDone, skips in-flight data, waits for ReadyForQuery.
        let mut reply = backend_msg(b'd', b"in flight");
        reply.extend(backend_msg(b'c', b""));
        reply.extend(backend_msg(b'C', b"COPY 0\0"));
        reply.extend(backend_msg(b'Z', b"I"));
        server.write_all(&reply).await.unwrap();
        conn.end_copy().await.unwrap();
        assert_eq!(conn.state, State::Idle);
        let mut done = [0u8; 5];
        server.read_exact(&mut done).await.unwrap();
        assert_eq!(done.to_vec(), backend_msg(b'c', b""));
        conn.end_copy().await.unwrap(); // no-op when idle
    }

    #[tokio::test]
    async fn copy_error_then_ready_keeps_connection_usable() {
        let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
        let mut wire = backend_msg(b'E', b"SERROR\0VERROR\0C55006\0Mslot is active\0\0");
        wire.extend(backend_msg(b'Z', b"I"));
        // The next query's answer.
        wire.extend(backend_msg(
            b'T',
            b"\0\x01x\0\0\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
        ));
        wire.extend(backend_msg(b'D', b"\0\x01\0\0\0\x02ok"));
        wire.extend(backend_msg(b'C', b"SELECT 1\0"));
        wire.extend(backend_msg(b'Z', b"I"));
        server.write_all(&wire).await.unwrap();
        let e = conn.read_copy_data().await.unwrap_err();
        assert_eq!(e.sqlstate(), Some("55006"));
        let r = conn.simple_query("SELECT 'ok' AS x").await.unwrap();
        assert_eq!(r.get(0, "x"), Some("ok"));
    }

    #[tokio::test]
    async fn eof_and_garbage_are_errors() {
        let (mut conn, server) = fake_connection(State::CopyBoth { sent_done: false });
        drop(server);
        let e = conn.read_copy_data().await.unwrap_err();
        assert!(
            matches!(e, WireError::Io(_)) && e.is_connection_error(),
            "{e:?}"
        );

        let (mut conn, mut server) = fake_connection(State::CopyBoth { sent_done: false });
        server.write_all(&[b'd', 0, 0, 0, 2]).await.unwrap();
        let e = conn.read_copy_data().await.unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e:?}");
    }

    // ---- against scripts/testenv.sh ------------------------------------------------------

    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set. These tests need the private test Postgres: run \
                 `scripts/testenv.sh start && eval \"$(scripts/testenv.sh env)\"` first"
            )
        })
    }

    fn ca_path() -> PathBuf {
        PathBuf::from(env("CDC_TEST_PG_CA"))
    }

    /// The testenv's base dir: ca.crt lives there, next to wrong-ca.crt, server.crt and sock/.
    fn testenv_dir() -> PathBuf {
        ca_path()
            .parent()
            .expect("CDC_TEST_PG_CA has a parent directory")
            .to_path_buf()
    }

    fn wrong_ca_path() -> PathBuf {
        std::env::var("CDC_TEST_PG_WRONG_CA")
            .map(PathBuf::from)
            .unwrap_or_else(|_| testenv_dir().join("wrong-ca.crt"))
    }

    /// The logical instance as `user`, plaintext unless changed.
    fn params(user: &str, password: Option<&str>) -> ConnectParams {
        let mut p = ConnectParams::from_url(&env("CDC_TEST_PG_URL")).expect("CDC_TEST_PG_URL");
        p.user = user.into();
        p.password = password.map(String::from);
        p.sslmode = SslMode::Disable;
        p.connect_timeout = Duration::from_secs(20);
        p
    }

    fn unique(prefix: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{prefix}_{}_{nanos}", std::process::id())
    }

    async fn whoami(conn: &mut Connection) -> (String, bool) {
        let r = conn
            .simple_query(
                "SELECT current_user AS u, coalesce((SELECT ssl FROM pg_stat_ssl \
                 WHERE pid = pg_backend_pid()), false)::text AS ssl",
            )
            .await
            .unwrap();
        (
            r.get(0, "u").unwrap().to_string(),
            r.get(0, "ssl") == Some("true"),
        )
    }

    #[tokio::test]
    async fn trust_query_and_startup_options() {
        let mut conn = Connection::connect(&params("postgres", None), false, GUCS)
            .await
            .unwrap();
        assert!(!conn.is_tls());
        assert!(conn.server_parameter("server_version").is_some());
        assert_eq!(conn.server_parameter("TimeZone"), Some("UTC"));
        assert_eq!(conn.server_parameter("client_encoding"), Some("UTF8"));
        assert_eq!(conn.server_parameter("IntervalStyle"), Some("iso_8601"));
        assert!(conn
            .server_parameter("DateStyle")
            .unwrap()
            .starts_with("ISO"));

        let r = conn
            .simple_query(
                "SELECT 1 AS one, NULL::text AS n, 'héllo' AS s, pg_backend_pid()::text AS pid, \
                 current_setting('bytea_output') AS bo, current_setting('extra_float_digits') AS efd",
            )
            .await
            .unwrap();
        assert_eq!(r.columns, ["one", "n", "s", "pid", "bo", "efd"]);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.get(0, "one"), Some("1"));
        assert_eq!(r.get(0, "n"), None);
        assert_eq!(r.rows[0][1], None);
        assert_eq!(r.get(0, "s"), Some("héllo"));
        assert_eq!(
            r.get(0, "pid"),
            Some(conn.backend_pid().to_string().as_str())
        );
        assert_eq!(r.get(0, "bo"), Some("hex"));
        assert_eq!(r.get(0, "efd"), Some("3"));
        assert_eq!(r.get(1, "one"), None);
        assert_eq!(r.get(0, "nope"), None);

        // Last result set of several statements; empty query; many rows (several reads).
        let r = conn
            .simple_query("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
            .await
            .unwrap();
        assert_eq!(r.columns, ["b", "c"]);
        assert_eq!(r.get(0, "c"), Some("3"));
        let r = conn.simple_query("").await.unwrap();
        assert!(r.columns.is_empty() && r.rows.is_empty());
        let r = conn
            .simple_query("SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 5000) g")
            .await
            .unwrap();
        assert_eq!(r.rows.len(), 5000);
        assert_eq!(r.get(4999, "g"), Some("5000"));

        // An SQL error carries the SQLSTATE and leaves the connection usable.
        let e = conn
            .simple_query("SELECT * FROM no_such_table_xyz")
            .await
            .unwrap_err();
        assert_eq!(e.sqlstate(), Some("42P01"), "{e}");
        assert!(!e.is_connection_error());
        assert!(e.to_string().starts_with("ERROR 42P01: relation"), "{e}");
        // A notice does not disturb the result.
        let r = conn
            .simple_query("DO $$ BEGIN RAISE NOTICE 'hi'; END $$; SELECT 'after' AS x")
            .await
            .unwrap();
        assert_eq!(r.get(0, "x"), Some("after"));
        // COPY is refused without breaking the connection.
        assert!(conn.simple_query("COPY (SELECT 1) TO STDOUT").await.is_ok());
        let e = conn
            .simple_query("CREATE TEMP TABLE t(x int); COPY t FROM STDIN")
            .await;
        assert_eq!(e.unwrap_err().sqlstate(), Some("57014"));
        let r = conn.simple_query("SELECT 'still fine' AS x").await.unwrap();
        assert_eq!(r.get(0, "x"), Some("still fine"));
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn terminated_backend_reports_admin_shutdown() {
        for sslmode in [SslMode::Disable, SslMode::Require] {
            let mut p = params("postgres", None);
            p.sslmode = sslmode;
            let mut victim = Connection::connect(&p, false, &[]).await.unwrap();
            let mut admin = Connection::connect(&params("postgres", None), false, &[])
                .await
                .unwrap();
            admin
                .simple_query(&format!(
                    "SELECT pg_terminate_backend({}, 5000)",
                    victim.backend_pid()
                ))
                .await
                .unwrap();
            let e = victim.simple_query("SELECT 1").await.unwrap_err();
            assert_eq!(e.sqlstate(), Some("57P01"), "{sslmode}: {e:?}");
            assert!(e.is_connection_error());
            admin.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn scram_right_and_wrong_password() {
        let mut conn = Connection::connect(&params("cdc_scram", Some(PASSWORD)), false, &[])
            .await
            .unwrap();
        assert_eq!(whoami(&mut conn).await.0, "cdc_scram");
        conn.close().await.unwrap();

        let e = Connection::connect(&params("cdc_scram", Some("wrong")), false, &[])
            .await
            .unwrap_err();
        assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
        assert!(!e.is_connection_error());

        let e = Connection::connect(&params("cdc_scram", None), false, &[])
            .await
            .unwrap_err();
        match &e {
            WireError::Auth(msg) => assert!(msg.contains("source.url"), "{msg}"),
            other => panic!("expected Auth error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn scram_over_tls() {
        // Over TLS the server also offers SCRAM-SHA-256-PLUS; we must pick plain SCRAM.
        let mut p = params("cdc_scram", Some(PASSWORD));
        p.sslmode = SslMode::Require;
        let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
        assert!(conn.is_tls());
        assert_eq!(whoami(&mut conn).await, ("cdc_scram".into(), true));
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn md5_and_cleartext() {
        for user in ["cdc_md5", "cdc_plain"] {
            let mut conn = Connection::connect(&params(user, Some(PASSWORD)), false, &[])
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            assert_eq!(whoami(&mut conn).await.0, user);
            conn.close().await.unwrap();
            let e = Connection::connect(&params(user, Some("wrong")), false, &[])
                .await
                .unwrap_err();
            assert_eq!(e.sqlstate(), Some("28P01"), "{user}: {e}");
        }
    }

    #[tokio::test]
    async fn tls_require_and_prefer() {
        for mode in [SslMode::Require, SslMode::Prefer] {
            let mut p = params("postgres", None);
            p.sslmode = mode;
            let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
            assert!(conn.is_tls(), "{mode}");
            assert_eq!(whoami(&mut conn).await, ("postgres".into(), true));
            conn.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls_verify_full_and_ca() {
        for (mode, host) in [
            (SslMode::VerifyFull, "127.0.0.1"),
            (SslMode::VerifyFull, "localhost"),
            (SslMode::VerifyCa, "127.0.0.1"),
        ] {
            let mut p = params("postgres", None);
            p.host = host.into();
            p.sslmode = mode;
            p.sslrootcert = Some(ca_path());
            let mut conn = Connection::connect(&p, false, &[])
                .await
                .unwrap_or_else(|e| panic!("{mode} {host}: {e}"));
            assert!(conn.is_tls());
            assert!(whoami(&mut conn).await.1);
            conn.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls_wrong_ca_is_rejected() {
        for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
            let mut p = params("postgres", None);
            p.sslmode = mode;
            p.sslrootcert = Some(wrong_ca_path());
            match Connection::connect(&p, false, &[]).await {
                Err(WireError::Tls(msg)) => assert!(msg.contains("certificate"), "{msg}"),
                other => panic!("{mode} with the wrong CA: expected a TLS error, got {other:?}"),
            }
        }
        // A missing sslrootcert file is a clear error too.
        let mut p = params("postgres", None);
        p.sslmode = SslMode::VerifyFull;
        p.sslrootcert = Some(testenv_dir().join("no-such-ca.crt"));
        match Connection::connect(&p, false, &[]).await {
            Err(WireError::Tls(msg)) => assert!(msg.contains("no-such-ca.crt"), "{msg}"),
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    /// verify-ca checks the chain but not the name; verify-full checks both. Tested on the
    /// verifiers directly: the test server is only reachable under names its cert carries.
    #[test]
    fn verify_ca_ignores_host_name_but_not_chain() {
        let pem = std::fs::read(testenv_dir().join("server.crt")).expect("testenv server.crt");
        let cert = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .expect("a cert")
            .expect("valid PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let wrong_name = ServerName::try_from("db.elsewhere.example").unwrap();
        let right_name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();

        let roots = Arc::new(load_roots(Some(&ca_path())).unwrap());
        let ca_only = VerifyChainOnly {
            roots: roots.clone(),
            algs,
        };
        assert!(ca_only
            .verify_server_cert(&cert, &[], &wrong_name, &[], now)
            .is_ok());

        let full = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        assert!(full
            .verify_server_cert(&cert, &[], &right_name, &[], now)
            .is_ok());
        assert!(full
            .verify_server_cert(&cert, &[], &wrong_name, &[], now)
            .is_err());

        let wrong_roots = Arc::new(load_roots(Some(&wrong_ca_path())).unwrap());
        let ca_only = VerifyChainOnly {
            roots: wrong_roots,
            algs,
        };
        assert!(ca_only
            .verify_server_cert(&cert, &[], &right_name, &[], now)
            .is_err());
    }

    #[tokio::test]
    async fn plain_instance_without_tls() {
        let url = env("CDC_TEST_PG_PLAIN_URL");
        let mut p = ConnectParams::from_url(&url).unwrap();
        assert_eq!(p.sslmode, SslMode::Prefer);
        let conn = Connection::connect(&p, false, &[]).await.unwrap();
        assert!(
            !conn.is_tls(),
            "prefer falls back to plaintext when the server has no TLS"
        );
        conn.close().await.unwrap();
        p.sslmode = SslMode::Require;
        match Connection::connect(&p, false, &[]).await {
            Err(WireError::Tls(msg)) => assert!(msg.contains("does not accept TLS"), "{msg}"),
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn wal_level_replica_refuses_logical_slot() {
        let p = ConnectParams::from_url(&env("CDC_TEST_PG_PLAIN_URL")).unwrap();
        let mut conn = Connection::connect(&p, true, &[]).await.unwrap();
        let slot = unique("cdc_wire_test_never");
        let e = conn
            .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput"))
            .await
            .unwrap_err();
        assert_eq!(e.sqlstate(), Some("55000"), "{e}");
        assert!(e.to_string().contains("wal_level"), "{e}");
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn unix_socket() {
        let mut p = params("postgres", None);
        p.host = testenv_dir().join("sock").display().to_string();
        p.sslmode = SslMode::Require; // ignored on Unix sockets, as in libpq
        let mut conn = Connection::connect(&p, false, &[]).await.unwrap();
        assert!(!conn.is_tls());
        let r = conn
            .simple_query("SELECT inet_client_addr() IS NULL AS local")
            .await
            .unwrap();
        assert_eq!(r.get(0, "local"), Some("t"));
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn connection_refused_is_a_connection_error() {
        let mut p = params("postgres", None);
        p.port = 1;
        let e = Connection::connect(&p, false, &[]).await.unwrap_err();
        assert!(matches!(e, WireError::Io(_)), "{e:?}");
        assert!(e.is_connection_error());
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }

    #[tokio::test]
    async fn replication_identify_system() {
        let mut p = params("cdc_scram", Some(PASSWORD));
        p.sslmode = SslMode::VerifyFull;
        p.sslrootcert = Some(ca_path());
        let mut conn = Connection::connect(&p, true, GUCS).await.unwrap();
        let r = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
        assert_eq!(r.columns, ["systemid", "timeline", "xlogpos", "dbname"]);
        assert_eq!(r.get(0, "dbname"), Some("postgres"));
        assert!(r.get(0, "xlogpos").unwrap().contains('/'));
        // A walsender with replication=database also runs SQL.
        let r = conn.simple_query("SELECT 41 + 1 AS x").await.unwrap();
        assert_eq!(r.get(0, "x"), Some("42"));
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn replication_needs_replication_privilege() {
        let e = Connection::connect(&params("cdc_norepl", None), true, &[])
            .await
            .unwrap_err();
        // PG 15 raises "must be superuser or replication role to start walsender" as
        // insufficient_privilege (42501), during startup.
        assert_eq!(e.sqlstate(), Some("42501"), "{e}");
        assert!(e.to_string().contains("replication"), "{e}");
        // The same user may still connect normally.
        let conn = Connection::connect(&params("cdc_norepl", None), false, &[]).await;
        conn.unwrap().close().await.unwrap();
    }

    #[tokio::test]
    async fn start_copy_both_with_a_plain_command_fails_cleanly() {
        let mut conn = Connection::connect(&params("postgres", None), true, &[])
            .await
            .unwrap();
        let e = conn.start_copy_both("IDENTIFY_SYSTEM").await.unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e:?}");
        let e = conn
            .start_copy_both("START_REPLICATION SLOT cdc_wire_no_such_slot LOGICAL 0/0")
            .await
            .unwrap_err();
        assert_eq!(e.sqlstate(), Some("42704"), "{e}");
        assert!(conn.read_copy_data().await.unwrap().is_none());
        let r = conn.simple_query("SELECT 1 AS x").await.unwrap();
        assert_eq!(r.get(0, "x"), Some("1"));
        conn.close().await.unwrap();
    }

    fn be_u64(b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(a)
    }

    /// Standby status update: write = flush = apply = `lsn`.
    fn standby_status(lsn: u64) -> Vec<u8> {
        let mut m = vec![b'r'];
        for _ in 0..3 {
            m.extend_from_slice(&lsn.to_be_bytes());
        }
        m.extend_from_slice(&0i64.to_be_bytes()); // client clock: informational only
        m.push(0);
        m
    }

    #[tokio::test]
    async fn start_replication_pgoutput() {
        let suffix = unique("cdc_wire_test");
        let (table, publication, slot) = (
            format!("{suffix}_t"),
            format!("{suffix}_pub"),
            format!("{suffix}_slot"),
        );
        let mut admin = Connection::connect(&params("postgres", None), false, &[])
            .await
            .unwrap();
        admin
            .simple_query(&format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, v text); \
                 CREATE PUBLICATION {publication} FOR TABLE {table}"
            ))
            .await
            .unwrap();

        let mut repl_params = params("cdc_scram", Some(PASSWORD));
        repl_params.sslmode = SslMode::Require;
        let mut repl = Connection::connect(&repl_params, true, GUCS).await.unwrap();
        let created = repl
            .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput"))
            .await;

        let outcome = match created {
            Ok(r) => {
                assert_eq!(r.get(0, "slot_name"), Some(slot.as_str()));
                assert_eq!(r.get(0, "output_plugin"), Some("pgoutput"));
                stream_some(&mut repl, &mut admin, &slot, &publication, &table).await
            }
            Err(e) => Err(format!("CREATE_REPLICATION_SLOT: {e}")),
        };

        // Clean up whatever happened, so failed runs do not leave slots pinning WAL.
        let dropped = match repl.end_copy().await {
            Ok(()) => repl
                .simple_query(&format!("DROP_REPLICATION_SLOT {slot} WAIT"))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if dropped.is_err() {
            let _ = admin
                .simple_query(&format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = '{slot}'"
                ))
                .await;
        }
        admin
            .simple_query(&format!(
                "DROP PUBLICATION {publication}; DROP TABLE {table}"
            ))
            .await
            .unwrap();
        outcome.unwrap();
        dropped.unwrap();
        let r = admin
            .simple_query(&format!(
                "SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .await
            .unwrap();
        assert_eq!(r.get(0, "n"), Some("0"));
        repl.close().await.unwrap();
        admin.close().await.unwrap();
    }

    /// Streams until both a keepalive and the XLogData of an insert arrived. Reads through
    /// short `select!` timeouts on purpose: read_copy_data must survive being cancelled.
    async fn stream_some(
        repl: &mut Connection,
        admin: &mut Connection,
        slot: &str,
        publication: &str,
        table: &str,
    ) -> Result<(), String> {
        repl.start_copy_both(&format!(
            "START_REPLICATION SLOT {slot} LOGICAL 0/0 \
             (proto_version '1', publication_names '{publication}')"
        ))
        .await
        .map_err(|e| format!("START_REPLICATION: {e}"))?;
        // In copy mode other commands are refused, without breaking the stream.
        if repl.simple_query("SELECT 1").await.is_ok() {
            return Err("simple_query in COPY BOTH mode should fail".into());
        }
        admin
            .simple_query(&format!("INSERT INTO {table} VALUES (1, 'one')"))
            .await
            .map_err(|e| format!("INSERT: {e}"))?;

        // wal_sender_timeout is 10s: a keepalive is due within half of that at the latest.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut keepalive, mut insert, mut cancelled) = (false, false, 0u32);
        while !(keepalive && insert) {
            if Instant::now() > deadline {
                return Err(format!("timed out: keepalive={keepalive} insert={insert}"));
            }
            let msg = tokio::select! {
                m = repl.read_copy_data() => m.map_err(|e| format!("read_copy_data: {e}"))?,
                _ = tokio::time::sleep(Duration::from_millis(20)) => { cancelled += 1; continue; }
            };
            let msg = msg.ok_or("copy ended unexpectedly")?;
            match msg.first() {
                Some(b'k') if msg.len() == 18 => {
                    keepalive = true;
                    let wal_end = be_u64(&msg, 1);
                    if msg[17] == 1 {
                        repl.queue_copy_data(&standby_status(wal_end));
                        repl.flush().await.map_err(|e| format!("flush: {e}"))?;
                    }
                }
                Some(b'w') if msg.len() >= 25 => {
                    let end = be_u64(&msg, 9);
                    // pgoutput: Begin, Relation, Insert, Commit.
                    if msg[25..].first() == Some(&b'I') {
                        insert = true;
                    }
                    if msg[25..].first() == Some(&b'C') {
                        repl.queue_copy_data(&standby_status(end));
                        repl.flush().await.map_err(|e| format!("flush: {e}"))?;
                    }
                }
                _ => return Err(format!("unexpected copy message {msg:?}")),
            }
        }
        tracing::debug!(cancelled, "reads cancelled by the select! timeout");
        repl.end_copy()
            .await
            .map_err(|e| format!("end_copy: {e}"))?;
        // After end_copy the connection accepts commands again.
        repl.simple_query("IDENTIFY_SYSTEM")
            .await
            .map_err(|e| format!("IDENTIFY_SYSTEM after copy: {e}"))?;
        Ok(())
    }
}
