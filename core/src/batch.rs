//! Collapsing a batch of changes to their net effect per key, for warehouse sinks.
//!
//! ```text
//!  insert k ─ update k ─ update k     ─▶ upsert k (last row)
//!  insert k ─ delete k                ─▶ nothing (the target never had k)
//!  snapshot insert k ─ delete k       ─▶ delete k (a re-copy: the target may have k)
//!  delete k ─ insert k                ─▶ upsert k
//!  update k→j (key change)            ─▶ delete k, upsert j
//! ```
//!
//! A hot row costs one write per batch. Columns an update did not send (`unchanged`) stay
//! unchanged in the net effect, unless an earlier change of the batch supplied them.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{ChangeEvent, Op, Row};
use crate::schema::TableSchema;

/// What a key ends up as after the batch.
#[derive(Clone, Debug, PartialEq)]
pub enum NetChange {
    Upsert {
        row: Row,
        /// Columns to leave as they are in the target.
        unchanged: Vec<crate::name::Name>,
        /// The change that produced this state (for metadata columns).
        source: crate::event::SourceMeta,
        /// The batch's first change to this key was an insert: the source had no such row before
        /// the batch, so a target in step with it has none either and a plain insert (a bulk
        /// load) is enough. A sink that finds the key anyway falls back to an upsert.
        new_row: bool,
    },
    Delete {
        key: Row,
        source: crate::event::SourceMeta,
    },
}

/// What the batch's first change to a key says about the row the target had before the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstChange {
    /// An update or delete: the target has (or had) the row.
    Existing,
    /// A streamed insert: the source had no such row, so a target in step with it has none
    /// either. A later delete in the batch leaves nothing to do.
    Inserted,
    /// A snapshot row: most likely new to the target (a plain insert is worth trying), but a
    /// re-copy (`cdc-agent snapshot`, a chunk copied again after a crash) finds it there, so a
    /// later delete in the batch must still reach the target.
    Copied,
}

impl FirstChange {
    fn of(op: Op, snapshot: bool) -> FirstChange {
        match (op, snapshot) {
            (Op::Insert, true) => FirstChange::Copied,
            (Op::Insert, false) => FirstChange::Inserted,
            _ => FirstChange::Existing,
        }
    }
}

/// The net changes of one table, in first-seen key order.
#[derive(Debug)]
pub struct TableBatch {
    pub schema: Arc<TableSchema>,
    /// Net change by key (its JSON text), with the order the key was first seen in, and what the
    /// batch's first change to it tells about the target's row before the batch.
    changes: HashMap<String, (usize, NetChange, FirstChange)>,
    next: usize,
}

impl TableBatch {
    pub fn new(schema: Arc<TableSchema>) -> Self {
        TableBatch {
            schema,
            changes: HashMap::new(),
            next: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Adds a row change (not a truncate: that is a barrier the sink handles).
    pub fn add(&mut self, event: &ChangeEvent) {
        self.add_owned(event.clone());
    }

    /// [`TableBatch::add`] without copying the rows.
    pub fn add_owned(&mut self, event: ChangeEvent) {
        let schema = Arc::clone(&self.schema);
        let key_of = |row: &Row| {
            Row(schema
                .key
                .iter()
                .filter_map(|&i| {
                    let name = schema.columns.get(i)?.name;
                    row.get(&name).map(|v| (name, v.clone()))
                })
                .collect())
        };
        let ChangeEvent {
            op,
            source,
            key,
            before,
            after,
            unchanged,
            ..
        } = event;
        let from_snapshot = source.snapshot;
        match op {
            Op::Insert | Op::Update => {
                let Some(after) = after else { return };
                let new_key = key.unwrap_or_else(|| key_of(&after));
                // A key change: the old key goes away.
                if let Some(before) = &before {
                    let old_key = key_of(before);
                    if !old_key.0.is_empty() && old_key != new_key {
                        self.delete(old_key, source.clone());
                    }
                }
                let merged = match self.changes.get(&key_string(&new_key)) {
                    Some((
                        _,
                        NetChange::Upsert {
                            row,
                            unchanged: earlier_unchanged,
                            ..
                        },
                        _,
                    )) if !unchanged.is_empty() => {
                        // Fill what this update did not send from the batch's earlier state.
                        let mut row_out = after;
                        let mut still_unchanged = Vec::new();
                        for col in &unchanged {
                            match row.get(col) {
                                Some(v) if !earlier_unchanged.contains(col) => {
                                    row_out.0.push((*col, v.clone()))
                                }
                                _ => still_unchanged.push(*col),
                            }
                        }
                        NetChange::Upsert {
                            row: row_out,
                            unchanged: still_unchanged,
                            source,
                            new_row: false,
                        }
                    }
                    _ => NetChange::Upsert {
                        row: after,
                        unchanged,
                        source,
                        new_row: false,
                    },
                };
                let first = FirstChange::of(op, from_snapshot);
                self.put(new_key, merged, first);
            }
            Op::Delete => {
                let key = match (key, &before) {
                    (Some(k), _) => k,
                    (None, Some(b)) => key_of(b),
                    (None, None) => return,
                };
                self.delete(key, source);
            }
            Op::Truncate => {}
        }
    }

    fn put(&mut self, key: Row, change: NetChange, first: FirstChange) {
        match self.changes.entry(key_string(&key)) {
            Entry::Occupied(mut slot) => slot.get_mut().1 = change,
            Entry::Vacant(slot) => {
                slot.insert((self.next, change, first));
                self.next += 1;
            }
        }
    }

    /// A delete. A row the batch itself inserted from the stream leaves nothing behind: the
    /// target never had it. A copied row may be in the target already: the delete stays.
    fn delete(&mut self, key: Row, source: crate::event::SourceMeta) {
        match self.changes.entry(key_string(&key)) {
            Entry::Occupied(slot) if slot.get().2 == FirstChange::Inserted => {
                slot.remove();
            }
            Entry::Occupied(mut slot) => slot.get_mut().1 = NetChange::Delete { key, source },
            Entry::Vacant(slot) => {
                slot.insert((
                    self.next,
                    NetChange::Delete { key, source },
                    FirstChange::Existing,
                ));
                self.next += 1;
            }
        }
    }

    /// The net changes, deletes first (so a key deleted and re-added by another row's key change
    /// ends up present), then upserts, each in first-seen order.
    pub fn drain(&mut self) -> (Vec<NetChange>, Vec<NetChange>) {
        let mut all: Vec<(usize, NetChange)> = self
            .changes
            .drain()
            .map(|(_, (order, mut change, first))| {
                if let NetChange::Upsert { new_row, .. } = &mut change {
                    *new_row = first != FirstChange::Existing;
                }
                (order, change)
            })
            .collect();
        all.sort_unstable_by_key(|(order, _)| *order);
        self.next = 0;
        let mut deletes = Vec::new();
        let mut upserts = Vec::new();
        for (_, change) in all {
            match change {
                d @ NetChange::Delete { .. } => deletes.push(d),
                u @ NetChange::Upsert { .. } => upserts.push(u),
            }
        }
        (deletes, upserts)
    }
}

fn key_string(key: &Row) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SourceKind, SourceMeta};
    use crate::name::Name;
    use crate::position::{Lsn, Position};
    use crate::schema::{ColumnSchema, ColumnType};
    use crate::value::Value;

    fn schema() -> Arc<TableSchema> {
        let col = |n: &str| ColumnSchema {
            name: Name::new(n),
            column_type: ColumnType::Int64,
            source_type: "bigint".into(),
        };
        Arc::new(TableSchema {
            schema: "public".into(),
            table: "t".into(),
            columns: vec![col("id"), col("v"), col("big")],
            key: vec![0],
        })
    }

    fn row(id: i64, v: Option<i64>) -> Row {
        let mut cols = vec![(crate::name::Name::new("id"), Value::Int(id))];
        if let Some(v) = v {
            cols.push((crate::name::Name::new("v"), Value::Int(v)));
        }
        Row(cols)
    }

    fn ev(op: Op, before: Option<Row>, after: Option<Row>, unchanged: &[&str]) -> ChangeEvent {
        let key = after
            .as_ref()
            .or(before.as_ref())
            .map(|r| Row(vec![r.0[0].clone()]));
        ChangeEvent {
            op,
            source: SourceMeta {
                kind: SourceKind::Postgres,
                db: "d".into(),
                schema: "public".into(),
                table: "t".into(),
                position: Position::Postgres { lsn: Lsn(1) },
                tx_id: None,
                commit_ts: None,
                seq: 0,
                snapshot: false,
            },
            key,
            before,
            after,
            unchanged: unchanged.iter().map(|c| Name::new(c)).collect(),
            table_schema: None,
        }
    }

    #[test]
    fn changes_collapse_to_their_net_effect() {
        let mut b = TableBatch::new(schema());
        b.add(&ev(Op::Insert, None, Some(row(1, Some(1))), &[]));
        b.add(&ev(
            Op::Update,
            Some(row(1, None)),
            Some(row(1, Some(2))),
            &[],
        ));
        b.add(&ev(Op::Insert, None, Some(row(2, Some(1))), &[]));
        b.add(&ev(Op::Delete, Some(row(2, None)), None, &[]));
        b.add(&ev(Op::Delete, Some(row(3, None)), None, &[]));
        b.add(&ev(Op::Insert, None, Some(row(3, Some(9))), &[]));
        let (deletes, upserts) = b.drain();
        assert!(
            deletes.is_empty(),
            "insert+delete leaves nothing, delete+insert an upsert: {deletes:?}"
        );
        let rows: Vec<&Row> = upserts
            .iter()
            .map(|u| match u {
                NetChange::Upsert { row, .. } => row,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(rows, [&row(1, Some(2)), &row(3, Some(9))]);
    }

    #[test]
    fn a_copied_row_deleted_in_the_same_batch_is_deleted_in_the_target() {
        // A re-copy sends the row as a snapshot insert though the target has it: the delete that
        // follows in the batch must reach the target (it used to vanish with the insert).
        let mut b = TableBatch::new(schema());
        let mut copied = ev(Op::Insert, None, Some(row(4, Some(1))), &[]);
        copied.source.snapshot = true;
        b.add(&copied);
        b.add(&ev(Op::Delete, Some(row(4, None)), None, &[]));
        // A copied row that stays is still worth a plain insert first.
        let mut kept = ev(Op::Insert, None, Some(row(5, Some(1))), &[]);
        kept.source.snapshot = true;
        b.add(&kept);
        let (deletes, upserts) = b.drain();
        assert!(
            matches!(&deletes[..], [NetChange::Delete { key, .. }] if key == &Row(vec![(Name::new("id"), Value::Int(4))])),
            "{deletes:?}"
        );
        assert!(
            matches!(&upserts[..], [NetChange::Upsert { new_row: true, .. }]),
            "{upserts:?}"
        );
    }

    #[test]
    fn a_key_change_deletes_the_old_key() {
        let mut b = TableBatch::new(schema());
        b.add(&ev(
            Op::Update,
            Some(row(1, None)),
            Some(row(5, Some(1))),
            &[],
        ));
        let (deletes, upserts) = b.drain();
        assert!(
            matches!(&deletes[0], NetChange::Delete { key, .. } if key == &Row(vec![(crate::name::Name::new("id"), Value::Int(1))]))
        );
        assert_eq!(upserts.len(), 1);
    }

    #[test]
    fn unchanged_columns_are_filled_from_earlier_changes_of_the_batch() {
        let mut b = TableBatch::new(schema());
        let mut first = row(1, Some(1));
        first.0.push((crate::name::Name::new("big"), Value::Int(7)));
        b.add(&ev(Op::Insert, None, Some(first), &[]));
        b.add(&ev(
            Op::Update,
            Some(row(1, None)),
            Some(row(1, Some(2))),
            &["big"],
        ));
        b.add(&ev(
            Op::Update,
            Some(row(2, None)),
            Some(row(2, Some(2))),
            &["big"],
        ));
        let (_, upserts) = b.drain();
        match &upserts[0] {
            NetChange::Upsert { row, unchanged, .. } => {
                assert_eq!(row.get("big"), Some(&Value::Int(7)));
                assert!(unchanged.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&upserts[1], NetChange::Upsert { unchanged, .. } if unchanged.len() == 1));
    }
}
