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
//!
//! Files: `params` (connection settings and URL parsing), `transport` (TCP and Unix sockets),
//! `tls` (rustls configuration and certificate verifiers), `auth` (startup and authentication),
//! `messages` (backend message framing and parsing) and `error` (the error types); the
//! [`Connection`] itself, with the query and COPY BOTH API, is here.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

mod auth;
mod error;
mod messages;
mod params;
mod tls;
mod transport;

#[cfg(test)]
mod fake_server_tests;
#[cfg(test)]
mod tests;

pub use error::{ServerError, WireError};
pub use params::{ConnectParams, SslMode, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT};

use error::{encode_error, protocol, unexpected};
pub use messages::RowFields;
use messages::{parse_error_fields, parse_row_description};
use tls::{negotiate_tls, tls_config};
use transport::{connect_tcp, io_context, Stream};

/// Spare room kept in the read buffer before each socket read: large enough that a busy
/// replication stream is read in few syscalls, small enough not to matter per connection.
const READ_RESERVE: usize = 64 * 1024;
/// Below this much spare capacity the read buffer is grown by [`READ_RESERVE`] again.
const MIN_READ_SPACE: usize = 8 * 1024;

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

/// One part of a simple query's reply, as it arrives.
enum Reply<'a> {
    /// A result set begins: its column names.
    Columns(&'a [String]),
    Row(RowFields<'a>),
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

    /// Runs `sql` with the simple query protocol and returns the last result set (text values).
    ///
    /// Several statements may be sent at once; an error in any of them is returned after the
    /// server is ready again, so the connection stays usable. Commands that answer with COPY
    /// are not supported here (COPY FROM STDIN is refused with CopyFail, COPY TO STDOUT data is
    /// discarded); use [`Connection::start_copy_both`] for START_REPLICATION.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, WireError> {
        let mut result = QueryResult::default();
        self.run_simple_query(sql, |reply| {
            match reply {
                Reply::Columns(columns) => {
                    result = QueryResult {
                        columns: columns.to_vec(),
                        rows: Vec::new(),
                    }
                }
                Reply::Row(fields) => result.rows.push(fields.into_owned()?),
            }
            Ok(())
        })
        .await?;
        Ok(result)
    }

    /// [`Connection::simple_query`] that hands each row to `on_row` as it arrives, fields
    /// borrowed from the message: for large results, nothing is kept and nothing copied.
    pub async fn simple_query_each<F>(&mut self, sql: &str, mut on_row: F) -> Result<(), WireError>
    where
        F: FnMut(RowFields<'_>) -> Result<(), WireError> + Send,
    {
        self.run_simple_query(sql, |reply| match reply {
            Reply::Columns(_) => Ok(()),
            Reply::Row(fields) => on_row(fields),
        })
        .await
    }

    async fn run_simple_query<F>(&mut self, sql: &str, mut on_reply: F) -> Result<(), WireError>
    where
        F: FnMut(Reply<'_>) -> Result<(), WireError> + Send,
    {
        self.ensure_idle().await?;
        frontend::query(sql, &mut self.write_buf).map_err(|e| encode_error("query", e))?;
        self.send_command().await?;
        let mut columns = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message_after(&mut error).await?;
            match tag {
                b'T' => {
                    columns = parse_row_description(&body)?;
                    on_reply(Reply::Columns(&columns))?;
                }
                b'D' => {
                    let row = RowFields::parse(&body, &columns)
                        .and_then(|fields| on_reply(Reply::Row(fields)));
                    if let Err(e) = row {
                        // The rest of the reply is still coming: it is read (and dropped)
                        // before the next command, as after a COPY.
                        self.state = State::AfterCopy;
                        return Err(e);
                    }
                }
                b'C' | b'I' => {}
                b'E' => error = Some(parse_error_fields(&body)?),
                b'Z' => {
                    self.state = State::Idle;
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(()),
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
}
