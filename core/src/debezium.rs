//! Debezium's JSON envelope for message sinks (`format = "debezium"`), so consumers built for
//! Debezium (Flink CDC, ClickHouse's Kafka engine, Materialize, Kafka Connect sinks) read the
//! agent's messages unchanged.
//!
//! The value message is Debezium's with `value.converter.schemas.enable=false`:
//!
//! ```json
//! {"before":null,"after":{"id":1,"total":"129.90"},
//!  "source":{"version":"cdc-agent 0.1.0","connector":"postgresql","name":"shop","ts_ms":1764230556123,
//!            "snapshot":"false","db":"app","schema":"public","table":"orders","txId":755,"lsn":23803720},
//!  "op":"c","ts_ms":1764230556200,"transaction":null}
//! ```
//!
//! and the key message is the primary key's columns (`{"id":1}`). Column values keep the spec's
//! encoding (README: "Debezium envelope"), which equals Debezium with `decimal.handling.mode=string`
//! and `binary.handling.mode=base64`; temporal values are ISO-8601 text where Debezium's default
//! `time.precision.mode=adaptive` sends epoch numbers, and JSON columns are JSON text in a string,
//! as Debezium's `io.debezium.data.Json`.

use crate::event::{ChangeEvent, Op, Row, SourceKind};
use crate::json::{write_row_with, write_str, write_value};
use crate::json_line::one_line;
use crate::position::Position;
use crate::time::parse_utc_micros;
use crate::transaction::TransactionPlace;
use crate::value::Value;

/// How a message sink encodes each change (`sink.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// The spec's change record, as the jsonl sink writes it.
    #[default]
    Native,
    /// Debezium's envelope (this module).
    Debezium,
}

/// Debezium's `op` letter: `c`reate, `u`pdate, `d`elete, `t`runcate, and `r`ead for snapshot rows.
pub fn op_letter(event: &ChangeEvent) -> &'static str {
    match event.op {
        Op::Insert if event.source.snapshot => "r",
        Op::Insert => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Truncate => "t",
    }
}

/// Appends the value message of `event` to `out`. `name` is the logical server name Debezium
/// puts in `source.name` (the topic prefix); `now_ms` the processing time (`ts_ms`);
/// `transaction` the change's place in its transaction when transaction metadata is on.
pub fn write_value_message(
    event: &ChangeEvent,
    name: &str,
    now_ms: i64,
    transaction: Option<&TransactionPlace>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"before\":");
    write_row(event.before.as_ref(), out);
    out.extend_from_slice(b",\"after\":");
    write_row(event.after.as_ref(), out);
    out.extend_from_slice(b",\"source\":");
    write_source(event, name, out);
    out.extend_from_slice(b",\"op\":\"");
    out.extend_from_slice(op_letter(event).as_bytes());
    out.extend_from_slice(b"\",\"ts_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(now_ms).as_bytes());
    out.extend_from_slice(b",\"transaction\":");
    match transaction {
        None => out.extend_from_slice(b"null"),
        Some(place) => {
            out.extend_from_slice(b"{\"id\":");
            write_str(&place.id, out);
            out.extend_from_slice(b",\"total_order\":");
            out.extend_from_slice(itoa::Buffer::new().format(place.total_order).as_bytes());
            out.extend_from_slice(b",\"data_collection_order\":");
            out.extend_from_slice(
                itoa::Buffer::new()
                    .format(place.data_collection_order)
                    .as_bytes(),
            );
            out.push(b'}');
        }
    }
    out.push(b'}');
}

/// Appends the key message (the key's columns as a JSON object, `null` without a key).
pub fn write_key_message(event: &ChangeEvent, out: &mut Vec<u8>) {
    write_row(event.key.as_ref(), out);
}

fn write_source(event: &ChangeEvent, name: &str, out: &mut Vec<u8>) {
    let source = &event.source;
    out.extend_from_slice(b"{\"version\":");
    write_str(concat!("cdc-agent ", env!("CARGO_PKG_VERSION")), out);
    out.extend_from_slice(b",\"connector\":\"");
    out.extend_from_slice(match source.kind {
        SourceKind::Postgres => b"postgresql".as_slice(),
        SourceKind::Mysql => b"mysql".as_slice(),
    });
    out.extend_from_slice(b"\",\"name\":");
    write_str(name, out);
    out.extend_from_slice(b",\"ts_ms\":");
    match source
        .commit_ts
        .as_deref()
        .and_then(parse_utc_micros)
        .map(|micros| micros.div_euclid(1000))
    {
        Some(ms) => out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes()),
        None => out.extend_from_slice(b"0"),
    }
    out.extend_from_slice(if source.snapshot {
        b",\"snapshot\":\"true\"".as_slice()
    } else {
        b",\"snapshot\":\"false\"".as_slice()
    });
    out.extend_from_slice(b",\"db\":");
    write_str(&source.db, out);
    match source.kind {
        SourceKind::Postgres => {
            out.extend_from_slice(b",\"schema\":");
            write_str(&source.schema, out);
        }
        // MySQL's database is Debezium's `db`; the agent's record names it `schema` too.
        SourceKind::Mysql => {}
    }
    out.extend_from_slice(b",\"table\":");
    write_str(&source.table, out);
    match &source.position {
        Position::Postgres { lsn } => {
            out.extend_from_slice(b",\"txId\":");
            match source.tx_id {
                Some(tx) => out.extend_from_slice(itoa::Buffer::new().format(tx).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"lsn\":");
            out.extend_from_slice(itoa::Buffer::new().format(lsn.0).as_bytes());
        }
        Position::Mysql { file, pos, gtid } => {
            out.extend_from_slice(b",\"server_id\":0,\"gtid\":");
            match gtid {
                Some(gtid) => write_str(gtid, out),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"file\":");
            write_str(file, out);
            out.extend_from_slice(b",\"pos\":");
            out.extend_from_slice(itoa::Buffer::new().format(*pos).as_bytes());
            out.extend_from_slice(b",\"row\":");
            out.extend_from_slice(itoa::Buffer::new().format(source.seq).as_bytes());
        }
    }
    out.push(b'}');
}

/// A row as Debezium writes it: JSON columns as their text in a string, the rest as the spec's.
fn write_row(row: Option<&Row>, out: &mut Vec<u8>) {
    write_row_with(row, out, |value, out| match value {
        // The same one-line text as the record carries (crate::json_line).
        Value::Json(raw) => write_str(&one_line(raw.get()), out),
        other => write_value(other, out),
    });
}

#[cfg(test)]
mod tests;
