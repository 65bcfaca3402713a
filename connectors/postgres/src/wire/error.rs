//! Errors of the wire layer: [`WireError`] for anything that goes wrong on a connection, and
//! [`ServerError`], the fields of a server ErrorResponse, with the helpers that build them.
//! Callers classify them with [`WireError::sqlstate`] and [`WireError::is_connection_error`].

use std::fmt;
use std::io;

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

pub(super) fn protocol(msg: impl Into<String>) -> WireError {
    WireError::Protocol(msg.into())
}

/// A frontend message could not be encoded (a NUL byte inside a string, or over 2 GiB): a
/// problem with what was asked, not with the connection, which is still in a clean state.
pub(super) fn encode_error(what: &str, e: io::Error) -> WireError {
    WireError::Config(format!("cannot encode {what}: {e}"))
}

pub(super) fn unexpected(tag: u8, during: &str) -> WireError {
    protocol(format!(
        "unexpected backend message {:?} during {during}",
        tag as char
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
