//! One place that decides which MySQL/MariaDB errors are worth a retry and which need the operator.

use cdc_core::PipelineError;
use mysql_async::Error;

/// The server cannot send from the requested binlog file/offset (purged, or never there).
pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

pub fn query_error(e: Error, doing: &str) -> PipelineError {
    classify(e, doing)
}

pub fn classify(e: Error, doing: &str) -> PipelineError {
    match e {
        Error::Server(server) => {
            let message = format!(
                "{doing}: server error {} ({}): {}",
                server.code, server.state, server.message
            );
            match server.code {
                // Access denied (bad password, unknown user, database not granted).
                1044 | 1045 | 1698 => PipelineError::definite("auth", message)
                    .with_hint("check the user and password in source.url and the user's grants"),
                // Missing privilege (REPLICATION SLAVE / CLIENT, SELECT).
                1227 | 1142 | 1143 => PipelineError::definite("auth", message).with_hint(
                    "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the source.url user",
                ),
                // MariaDB ends the older of two replica connections that share a server_id.
                4052 => PipelineError::definite("config", message).with_hint(
                    "another replica or cdc-agent uses this server_id: give each one its own `server_id` in [source]",
                ),
                ER_MASTER_FATAL_ERROR_READING_BINLOG
                    if server.message.contains("same server_id")
                        || server.message.contains("same server_uuid")
                        || server.message.contains("server_id") =>
                {
                    PipelineError::definite("config", message).with_hint(
                        "another replica or cdc-agent uses this server_id: give each one its own `server_id` in [source]",
                    )
                }
                ER_MASTER_FATAL_ERROR_READING_BINLOG => PipelineError::definite("source", message)
                    .with_hint(
                        "the checkpointed binlog position is gone from the server (purged?): raise binlog \
                         retention, then `cdc-agent reset --yes` and run again to take a new snapshot",
                    ),
                // Too many connections, lock wait, deadlock, query interrupted, shutdown.
                1040 | 1205 | 1213 | 1317 | 1053 | 1927 | 2006 | 2013 => {
                    PipelineError::transient("connection", message)
                }
                1049 => PipelineError::definite("config", message)
                    .with_hint("the database in source.url does not exist"),
                _ => PipelineError::definite("source", message),
            }
        }
        Error::Url(e) => PipelineError::definite("config", format!("{doing}: source.url: {e}"))
            .with_hint("use mysql://user:password@host:3306/database"),
        Error::Io(e) => PipelineError::transient("connection", format!("{doing}: {e}")),
        Error::Driver(e) => PipelineError::transient("connection", format!("{doing}: {e}")),
        Error::Other(e) => PipelineError::transient("source", format!("{doing}: {e}")),
    }
}

/// A binlog event that cannot be read as the server says it is written.
pub(crate) fn decode_error(what: impl std::fmt::Display) -> PipelineError {
    PipelineError::definite("decode", format!("binlog event: {what}"))
}

#[cfg(test)]
mod tests {
    use mysql_async::ServerError;

    use super::*;

    fn server(code: u16, message: &str) -> Error {
        Error::Server(ServerError {
            code,
            message: message.into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn purged_binlog_and_duplicate_server_id_are_definite_with_a_way_out() {
        let purged = classify(
            server(
                1236,
                "Could not find first log file name in binary log index file",
            ),
            "x",
        );
        assert!(!purged.is_transient());
        assert!(purged.hint.unwrap().contains("snapshot"));
        let dup = classify(
            server(1236, "A slave with the same server_uuid/server_id as this slave has connected to the master"),
            "x",
        );
        assert!(dup.hint.unwrap().contains("server_id"));
        assert!(classify(server(1213, "deadlock"), "x").is_transient());
        assert!(!classify(server(1045, "denied"), "x").is_transient());
    }
}
