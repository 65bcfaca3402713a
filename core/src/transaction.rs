//! Transaction metadata for message sinks (`sink.transaction_metadata`), as Debezium's
//! `provide.transaction.metadata`: a BEGIN message before a source transaction's first change and
//! an END message after its last, on a topic/subject of their own, so consumers can regroup the
//! changes of one transaction; and, in Debezium's envelope, each change's place in it.
//!
//! ```json
//! {"status":"BEGIN","id":"755:23803720","ts_ms":1764230556123,"event_count":null,"data_collections":null}
//! {"status":"END","id":"755:23803720","ts_ms":1764230556123,"event_count":2,
//!  "data_collections":[{"data_collection":"public.orders","event_count":2}]}
//! ```
//!
//! The id is Debezium's: `txId:lsn` (the commit LSN as a number) for Postgres; the GTID, else
//! `file:pos`, for MySQL. Snapshot rows belong to no transaction.

use crate::event::{ChangeEvent, SourceKind};
use crate::json::write_str;
use crate::position::Position;
use crate::time::parse_utc_micros;

/// A change's place in its transaction (Debezium's `transaction` block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionPlace {
    pub id: String,
    /// 1-based, over the whole transaction.
    pub total_order: u64,
    /// 1-based, among the transaction's changes to the same table.
    pub data_collection_order: u64,
}

/// The open transaction of a stream of changes.
#[derive(Default)]
pub struct TransactionTracker {
    open: Option<Open>,
}

struct Open {
    id: String,
    ts_ms: i64,
    total: u64,
    /// (data collection, changes), in first-seen order.
    collections: Vec<(String, u64)>,
}

impl TransactionTracker {
    /// Accounts for one change. Returns the BEGIN message to send first when the change opens a
    /// transaction (written into `begin`), and the change's place; `None` for snapshot rows.
    pub fn on_change(
        &mut self,
        event: &ChangeEvent,
        begin: &mut Vec<u8>,
    ) -> Option<TransactionPlace> {
        if event.source.snapshot {
            return None;
        }
        let id = transaction_id(event);
        if self.open.as_ref().is_none_or(|open| open.id != id) {
            let ts_ms = event
                .source
                .commit_ts
                .as_deref()
                .and_then(parse_utc_micros)
                .map_or(0, |micros| micros.div_euclid(1000));
            write_marker(b"BEGIN", &id, ts_ms, None, begin);
            self.open = Some(Open {
                id,
                ts_ms,
                total: 0,
                collections: Vec::new(),
            });
        }
        let open = self.open.as_mut()?;
        open.total += 1;
        let collection = data_collection(event);
        let order = match open.collections.iter_mut().find(|(c, _)| *c == collection) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                open.collections.push((collection, 1));
                1
            }
        };
        Some(TransactionPlace {
            id: open.id.clone(),
            total_order: open.total,
            data_collection_order: order,
        })
    }

    /// At a source commit: the END message of the open transaction, written into `end`, and its
    /// id; `None` when no change of it was seen.
    pub fn on_commit(&mut self, end: &mut Vec<u8>) -> Option<String> {
        let open = self.open.take()?;
        write_marker(b"END", &open.id, open.ts_ms, Some(&open), end);
        Some(open.id)
    }

    /// Forgets the open transaction (the sink was reopened: the source replays from a boundary).
    pub fn reset(&mut self) {
        self.open = None;
    }
}

/// The key of a BEGIN/END message: `{"id":"..."}`.
pub fn write_marker_key(id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    write_str(id, out);
    out.push(b'}');
}

/// Debezium's transaction id of the change's transaction.
pub fn transaction_id(event: &ChangeEvent) -> String {
    match &event.source.position {
        Position::Postgres { lsn } => match event.source.tx_id {
            Some(tx) => format!("{tx}:{}", lsn.0),
            None => format!(":{}", lsn.0),
        },
        Position::Mysql {
            gtid: Some(gtid), ..
        } => gtid.to_string(),
        Position::Mysql { file, pos, .. } => format!("{file}:{pos}"),
    }
}

/// Debezium's data collection: `schema.table` (Postgres), `database.table` (MySQL).
fn data_collection(event: &ChangeEvent) -> String {
    match event.source.kind {
        SourceKind::Postgres | SourceKind::Mysql => {
            format!("{}.{}", event.source.schema, event.source.table)
        }
    }
}

fn write_marker(status: &[u8], id: &str, ts_ms: i64, end: Option<&Open>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"status\":\"");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\",\"id\":");
    write_str(id, out);
    out.extend_from_slice(b",\"ts_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
    match end {
        None => out.extend_from_slice(b",\"event_count\":null,\"data_collections\":null}"),
        Some(open) => {
            out.extend_from_slice(b",\"event_count\":");
            out.extend_from_slice(itoa::Buffer::new().format(open.total).as_bytes());
            out.extend_from_slice(b",\"data_collections\":[");
            for (i, (collection, n)) in open.collections.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"data_collection\":");
                write_str(collection, out);
                out.extend_from_slice(b",\"event_count\":");
                out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
    }
}

#[cfg(test)]
mod tests;
