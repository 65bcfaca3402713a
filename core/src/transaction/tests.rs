//! BEGIN/END messages and places against Debezium's documented transaction metadata
//! ("Transaction metadata" in the PostgreSQL connector docs).

use serde_json::{json, Value as Json};

use super::*;
use crate::event::Op;

fn change(table: &str, lsn: u64, tx: u64, seq: u64, snapshot: bool) -> ChangeEvent {
    let mut event = crate::testing::pg_change(Op::Insert, table, lsn, tx, seq);
    event.source.snapshot = snapshot;
    event
}

fn json(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).expect("JSON")
}

#[test]
fn a_transaction_is_bracketed_by_begin_and_end_with_counts_per_table() {
    let mut tracker = TransactionTracker::default();
    let mut begin = Vec::new();
    let place = tracker
        .on_change(&change("orders", 100, 7, 0, false), &mut begin)
        .unwrap();
    assert_eq!(
        json(&begin),
        json!({"status": "BEGIN", "id": "7:100", "ts_ms": 1795690956123i64,
               "event_count": null, "data_collections": null})
    );
    assert_eq!(
        place,
        TransactionPlace {
            id: "7:100".into(),
            total_order: 1,
            data_collection_order: 1
        }
    );
    for (table, seq, total, in_table) in [("customers", 1, 2, 1), ("orders", 2, 3, 2)] {
        let mut begin = Vec::new();
        let place = tracker
            .on_change(&change(table, 100, 7, seq, false), &mut begin)
            .unwrap();
        assert!(begin.is_empty(), "one BEGIN per transaction");
        assert_eq!(
            (place.total_order, place.data_collection_order),
            (total, in_table)
        );
    }
    let mut end = Vec::new();
    assert_eq!(tracker.on_commit(&mut end).as_deref(), Some("7:100"));
    assert_eq!(
        json(&end),
        json!({"status": "END", "id": "7:100", "ts_ms": 1795690956123i64, "event_count": 3,
               "data_collections": [
                   {"data_collection": "public.orders", "event_count": 2},
                   {"data_collection": "public.customers", "event_count": 1}]})
    );
    assert_eq!(tracker.on_commit(&mut end), None, "END once");
}

#[test]
fn snapshot_rows_belong_to_no_transaction_and_a_new_id_opens_a_new_one() {
    let mut tracker = TransactionTracker::default();
    let mut begin = Vec::new();
    assert_eq!(
        tracker.on_change(&change("orders", 1, 1, 0, true), &mut begin),
        None
    );
    assert!(begin.is_empty());
    tracker.on_change(&change("orders", 100, 7, 0, false), &mut begin);
    begin.clear();
    // A change of the next transaction without a commit in between (a replay after a reopen).
    tracker.on_change(&change("orders", 200, 8, 0, false), &mut begin);
    assert_eq!(json(&begin)["id"], "8:200");
    let mut key = Vec::new();
    write_marker_key("8:200", &mut key);
    assert_eq!(json(&key), json!({"id": "8:200"}));
}

#[test]
fn mysql_ids_are_the_gtid_or_file_and_position() {
    let mut event = change("orders", 0, 0, 0, false);
    event.source.kind = SourceKind::Mysql;
    event.source.position = Position::Mysql {
        file: "bin.000002".into(),
        pos: 4711,
        gtid: None,
    };
    assert_eq!(transaction_id(&event), "bin.000002:4711");
    event.source.position = Position::Mysql {
        file: "bin.000002".into(),
        pos: 4711,
        gtid: Some("0-1-42".into()),
    };
    assert_eq!(transaction_id(&event), "0-1-42");
}
