//! Change records for tests (this crate's, and the sinks' through the `testing` feature).

use crate::event::{ChangeEvent, Op, SourceKind, SourceMeta};
use crate::position::{Lsn, Position};

/// A Postgres change to `app.public.<table>` at commit LSN `lsn`, of transaction `tx`, the
/// `seq`-th of it, committed 2026-11-26T11:02:36.123456Z; no key or rows (set what a test needs).
pub fn pg_change(op: Op, table: &str, lsn: u64, tx: u64, seq: u64) -> ChangeEvent {
    ChangeEvent {
        op,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: "app".into(),
            schema: "public".into(),
            table: table.into(),
            position: Position::Postgres { lsn: Lsn(lsn) },
            tx_id: Some(tx),
            commit_ts: Some("2026-11-26T11:02:36.123456Z".into()),
            seq,
            snapshot: false,
        },
        key: None,
        before: None,
        after: None,
        unchanged: vec![],
        table_schema: None,
    }
}
