//! Classifying target errors into what the runtime does with them.
//!
//! ```text
//!  mysql_async::Error ─▶ sink_error ─▶ transient (reconnect, retry with backoff, position held)
//!                                  └─▶ definite  (stop; a one-line fix for `status` and the log)
//! ```
//!
//! Transient: the connection is gone or refused (I/O, server gone away 2006, lost 2013, killed
//! 1927, shutting down 1053, too many connections 1040) and contention (lock wait timeout 1205,
//! deadlock 1213, a table changed under a transaction 1412). Poison, for the one change: a value
//! the column does not take (1264, 1265, 1292, 1366, 1367, 1406, 1690, 3140; strict mode) or a row
//! a constraint refuses (1048 NOT NULL, 1062 a unique key, 1451/1452 a foreign key, 3819 and
//! MariaDB's 4025 a CHECK). Everything else (missing privilege, unknown database, a key too long)
//! needs the operator.

use cdc_core::PipelineError;
use cdc_tls::mysql::MysqlTls;
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
/// A source value the target column does not take: poison for its change.
const VALUE_CODES: &[u16] = &[1264, 1265, 1292, 1366, 1367, 1406, 1690, 3140];
/// A row a constraint of the target refuses: poison for its change.
const CONSTRAINT_CODES: &[u16] = &[1048, 1062, 1169, 1451, 1452, 3819, 4025];

/// A TLS setting that cannot work and a refused handshake are definite, named with the fix; an
/// "Access denied" to a plaintext login says the server may require TLS.
pub fn connect_error(
    e: cdc_tls::mysql::ConnectError,
    tls: &MysqlTls,
    doing: &str,
) -> PipelineError {
    const URL_KEY: &str = "sink.url";
    match e {
        cdc_tls::mysql::ConnectError::Tls(e) => {
            PipelineError::definite("config", format!("{URL_KEY}: {e}"))
                .with_hint("fix ssl-ca, ssl-cert or ssl-key in sink.url")
        }
        cdc_tls::mysql::ConnectError::Driver(e) => {
            let text = e.to_string();
            if let Some(refusal) = cdc_tls::refusal(&text, &cdc_tls::mysql::VOCABULARY, URL_KEY) {
                return PipelineError::definite(
                    "connection",
                    format!("{}: {doing} (ssl-mode={}): {text}", refusal.what, tls.mode),
                )
                .with_hint(refusal.hint);
            }
            let mut error = sink_error(e, doing);
            if error.kind == "auth" {
                if let Some(tls_hint) = tls.access_denied_hint(URL_KEY) {
                    error.hint = Some(match error.hint {
                        Some(hint) => format!("{hint}; {tls_hint}"),
                        None => tls_hint,
                    });
                }
            }
            error
        }
    }
}

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
            DriverError::PacketTooLarge => PipelineError::poison("too_large", message)
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
        let column = named_column(&message);
        return PipelineError::poison("data", message).with_column(column).with_hint(
            "a source value does not fit its target column: widen the column by hand (ALTER TABLE .. MODIFY) and restart; nothing is lost",
        );
    }
    if CONSTRAINT_CODES.contains(&code) {
        let column = named_column(&message);
        return PipelineError::poison("constraint", message)
            .with_column(column)
            .with_hint(
                "a constraint of the target refuses the row: change or drop it, and restart",
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

/// The column a server message names: `column 'v'`, `Column 'v'` or ``column `db`.`t`.`v` ``.
fn named_column(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("column ")? + "column ".len();
    let rest = &message[at..];
    if let Some(quoted) = rest.strip_prefix('\'') {
        return quoted.split('\'').next().map(str::to_string);
    }
    if rest.starts_with('`') {
        let name: &str = rest.split_whitespace().next()?;
        let last = name.trim_end_matches(|c| c != '`').trim_end_matches('`');
        return last.rsplit('`').next().map(str::to_string);
    }
    None
}

/// The row a server message names within a multi-row statement (`at row 3`), from 1.
pub fn named_row(message: &str) -> Option<usize> {
    let (_, after) = message.rsplit_once("at row ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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
        assert!(value.is_poison() && value.hint.is_some());
        assert!(server(4025).is_poison() && server(1452).is_poison());
        assert!(!server(1142).is_poison() && !server(1045).is_poison());
        assert!(value.to_string().starts_with("doing: "), "{value}");
        assert!(!server(1064).is_transient());
    }

    #[test]
    fn a_message_names_its_column_and_row() {
        assert_eq!(
            named_column("Data too long for column 'note' at row 3").as_deref(),
            Some("note")
        );
        assert_eq!(
            named_column("Incorrect string value: '\\x00' for column `db`.`t`.`name` at row 1")
                .as_deref(),
            Some("name")
        );
        assert_eq!(
            named_column("Column 'v' cannot be null").as_deref(),
            Some("v")
        );
        assert_eq!(
            named_row("Data too long for column 'note' at row 3"),
            Some(3)
        );
        assert_eq!(named_row("CONSTRAINT `c` failed for `db`.`t`"), None);
    }
}
