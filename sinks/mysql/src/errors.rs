//! Classifying target errors into what the runtime does with them.
//!
//! ```text
//!  mysql_async::Error ─▶ sink_error ─▶ transient (reconnect, retry with backoff, position held)
//!                                  └─▶ definite  (stop; a one-line fix for `status` and the log)
//! ```
//!
//! Transient: the connection is gone or refused (I/O, server gone away 2006, lost 2013, killed
//! 1927, shutting down 1053, too many connections 1040) and contention (lock wait timeout 1205,
//! deadlock 1213, a table changed under a transaction 1412). Everything else (bad value,
//! missing privilege, unknown database, a key too long) needs the operator.

use cdc_core::PipelineError;
use mysql_async::{DriverError, Error};

/// Server error codes worth a retry.
const TRANSIENT_CODES: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1152, // aborted connection
    1158, 1159, 1160, 1161, // network read/write errors and timeouts
    1205, // lock wait timeout exceeded
    1213, // deadlock found
    1317, // query execution interrupted
    1412, // table definition changed (a concurrent ALTER)
    1927, // connection was killed
    2002, 2003, 2006, 2013, // cannot connect, server gone away, lost connection
    4031, // disconnected by the server for inactivity (MySQL 8)
];

const AUTH_CODES: &[u16] = &[1044, 1045, 1251, 1698];
const PRIVILEGE_CODES: &[u16] = &[1142, 1143, 1227, 1370];
/// A source value the target column does not take.
const VALUE_CODES: &[u16] = &[1048, 1264, 1265, 1292, 1366, 1406, 3140, 4025];

/// Classifies a target error: connection trouble and contention are transient; everything
/// else (bad value, missing privilege, constraint) needs the operator.
pub fn sink_error(e: Error, doing: &str) -> PipelineError {
    let message = format!("{doing}: {e}");
    match &e {
        Error::Io(_) | Error::Other(_) => PipelineError::transient("sink", message),
        Error::Driver(d) => match d {
            DriverError::ConnectionClosed
            | DriverError::PacketOutOfOrder
            | DriverError::UnexpectedPacket { .. }
            | DriverError::PoolDisconnected => PipelineError::transient("sink", message),
            DriverError::PacketTooLarge => PipelineError::definite("sink", message)
                .with_hint("a row is larger than the target's max_allowed_packet: raise it"),
            _ => PipelineError::definite("sink", message),
        },
        Error::Url(_) => PipelineError::definite("config", message)
            .with_hint("sink.url must look like mysql://user:password@host:port/database"),
        Error::Server(s) => server_error(s.code, message),
    }
}

fn server_error(code: u16, message: String) -> PipelineError {
    if TRANSIENT_CODES.contains(&code) {
        return PipelineError::transient("sink", message);
    }
    if AUTH_CODES.contains(&code) {
        return PipelineError::definite("auth", message).with_hint(
            "check the user and password in sink.url, and that the user may connect from this host",
        );
    }
    if PRIVILEGE_CODES.contains(&code) {
        return PipelineError::definite("sink", message).with_hint(
            "GRANT CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE ON the target database to the sink.url user",
        );
    }
    if VALUE_CODES.contains(&code) {
        return PipelineError::definite("sink", message).with_hint(
            "a source value does not fit its target column: widen the column by hand (ALTER TABLE .. MODIFY) and restart; nothing is lost",
        );
    }
    match code {
        1153 => PipelineError::definite("sink", message)
            .with_hint("a statement is larger than the target's max_allowed_packet: raise it"),
        1071 | 1118 => PipelineError::definite("sink", message).with_hint(
            "the table's key or row is too wide for InnoDB: shorten the key columns in the source or create the target table by hand",
        ),
        1049 => PipelineError::definite("sink", message)
            .with_hint("create the database, or let the sink create it (GRANT CREATE)"),
        1146 | 1054 => PipelineError::definite("sink", message).with_hint(
            "the target table changed under the sink: restart the agent to reconcile it",
        ),
        _ => PipelineError::definite("sink", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;

    fn server(code: u16) -> PipelineError {
        sink_error(
            Error::Server(ServerError {
                code,
                message: "m".into(),
                state: "HY000".into(),
            }),
            "doing",
        )
    }

    #[test]
    fn contention_and_lost_connections_are_transient_the_rest_definite() {
        for code in [1205, 1213, 2006, 2013, 1053, 1927] {
            assert!(server(code).is_transient(), "{code}");
        }
        assert!(sink_error(Error::Driver(DriverError::ConnectionClosed), "x").is_transient());
        let auth = server(1045);
        assert!(!auth.is_transient());
        assert_eq!(auth.kind, "auth");
        let value = server(1406);
        assert!(!value.is_transient() && value.hint.is_some());
        assert!(value.to_string().starts_with("doing: "), "{value}");
        assert!(!server(1064).is_transient());
    }
}
