//! Maps wire and server errors to the runtime's two classes, with the operator's fix.

use cdc_core::PipelineError;

use crate::wire::WireError;

/// Classifies an error met while talking to the source. `user` names the role, for hints.
pub fn classify(error: WireError, doing: &str, user: &str) -> PipelineError {
    let text = format!("{doing}: {error}");
    match &error {
        WireError::Io(_) | WireError::Timeout => PipelineError::transient("connection", text),
        WireError::Tls(message) => {
            match cdc_tls::refusal(message, &cdc_tls::postgres::VOCABULARY, "source.url") {
                Some(refusal) => {
                    PipelineError::definite("connection", format!("{}: {text}", refusal.what))
                        .with_hint(refusal.hint)
                }
                None => PipelineError::definite("connection", text).with_hint(
                    "check sslmode and sslrootcert in source.url (sslmode=verify-full needs the server's CA)",
                ),
            }
        }
        WireError::Auth(_) => PipelineError::definite("auth", text).with_hint(
            "put the password in source.url, e.g. postgres://user:${PGPASSWORD}@host/db",
        ),
        WireError::Config(_) => PipelineError::definite("config", text).with_hint(
            "source.url must look like postgres://user:password@host:port/dbname?sslmode=prefer",
        ),
        WireError::Protocol(_) => PipelineError::transient("connection", text),
        WireError::Server(_) => classify_sqlstate(error.sqlstate().unwrap_or(""), text, user),
    }
}

fn classify_sqlstate(code: &str, text: String, user: &str) -> PipelineError {
    match code {
        "28P01" => PipelineError::definite("auth", text)
            .with_hint(format!("check the password of role `{user}` in source.url")),
        "28000" if text.contains("replication") => PipelineError::definite("auth", text)
            .with_hint(format!("ALTER ROLE {user} WITH REPLICATION; (or connect as a role that has it)")),
        "28000" => PipelineError::definite("auth", text)
            .with_hint("pg_hba.conf must allow this user, database and host (and `replication` for the stream)"),
        "3D000" => PipelineError::definite("config", text)
            .with_hint("fix the database name in source.url"),
        "42501" if text.contains("replication role") => PipelineError::definite("auth", text)
            .with_hint(format!("ALTER ROLE {user} WITH REPLICATION; (or connect as a role that has it)")),
        "42501" => PipelineError::definite("auth", text)
            .with_hint(format!("grant role `{user}` the privilege named above (publications need table ownership or superuser)")),
        "55006" => PipelineError::definite("slot", text).with_hint(
            "another connection is consuming this slot: stop it, or give this pipeline its own source.slot",
        ),
        "42704" => PipelineError::definite("slot", text).with_hint(
            "the replication slot is gone, and the changes it held with it: run `cdc-agent reset --yes` and start over with a new snapshot",
        ),
        "58P01" => PipelineError::definite("slot", text).with_hint(
            "the WAL the checkpoint needs was removed: run `cdc-agent reset --yes` and start over with a new snapshot",
        ),
        // Server shutting down, crashed, starting up, out of connections: it will be back.
        "57P01" | "57P02" | "57P03" | "53300" | "08006" | "08001" | "08000" | "40001" => {
            PipelineError::transient("connection", text)
        }
        _ => PipelineError::definite("source", text),
    }
}
