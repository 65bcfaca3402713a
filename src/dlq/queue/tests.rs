use std::sync::Arc;

use cdc_core::dead_letter::{DeadLetter, DeadLetters, HELD};
use cdc_core::{
    ChangeEvent, ColumnSchema, ColumnType, Lsn, Name, Op, Position, Row, SourceKind, SourceMeta,
    TableSchema, Value,
};

use super::DeadLetterQueue;
use crate::store::StateStore;

fn schema() -> TableSchema {
    TableSchema {
        schema: Name::new("public"),
        table: Name::new("t"),
        columns: vec![ColumnSchema {
            name: Name::new("id"),
            column_type: ColumnType::Int64,
            source_type: "bigint".into(),
        }],
        key: vec![0],
    }
}

fn letter(id: i64, lsn: u64, class: &str) -> DeadLetter {
    let row = Row(vec![(Name::new("id"), Value::Int(id))]);
    let event = ChangeEvent {
        op: Op::Insert,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: Name::new("d"),
            schema: Name::new("public"),
            table: Name::new("t"),
            position: Position::Postgres { lsn: Lsn(lsn) },
            tx_id: None,
            commit_ts: None,
            seq: 0,
            snapshot: false,
        },
        key: Some(row.clone()),
        before: None,
        after: Some(row),
        unchanged: vec![],
        table_schema: None,
    };
    DeadLetter::of_event(&event, &schema(), class, "refused")
}

fn open(dir: &std::path::Path, max: u64) -> (Arc<StateStore>, DeadLetterQueue) {
    let store = Arc::new(StateStore::open_after_drop(dir));
    let queue = DeadLetterQueue::open(Arc::clone(&store), "p", true, max, None).unwrap();
    (store, queue)
}

#[test]
fn keys_are_held_until_their_records_are_gone_and_redeliveries_only_count() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path(), 100);
    assert!(!queue.holds_table("public.t"));
    queue.set_aside(vec![letter(1, 10, "data")]).unwrap();
    queue.set_aside(vec![letter(1, 20, HELD)]).unwrap();
    assert!(queue.holds_key("public.t", r#"{"id":1}"#));
    assert!(!queue.holds_key("public.t", r#"{"id":2}"#));
    // The same change again (a restart before the target committed): one more attempt.
    queue.set_aside(vec![letter(1, 10, "data")]).unwrap();
    queue.set_aside(vec![letter(1, 20, HELD)]).unwrap();
    let records = queue.records().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].1.attempts, 2);
    assert!(
        records[0].0 < records[1].0,
        "ids follow the order set aside"
    );
    assert_eq!(queue.set_aside_counts().values().sum::<u64>(), 2);

    queue.remove(&[records[0].0]).unwrap();
    assert!(
        queue.holds_key("public.t", r#"{"id":1}"#),
        "the held change remains"
    );
    queue.remove(&[records[1].0]).unwrap();
    assert!(!queue.holds_table("public.t"));
    assert_eq!(queue.len(), 0);
}

#[test]
fn the_index_is_rebuilt_on_open_and_the_limit_stops() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, queue) = open(dir.path(), 2);
        queue
            .set_aside(vec![letter(1, 10, "data"), letter(2, 10, "constraint")])
            .unwrap();
        let full = queue.set_aside(vec![letter(3, 11, "data")]).unwrap_err();
        assert!(!full.is_transient() && !full.is_poison(), "{full}");
        assert!(full.to_string().contains("sink.dlq_max_records"), "{full}");
    }
    let (_store, queue) = open(dir.path(), 2);
    assert_eq!(queue.len(), 2);
    assert!(queue.holds_key("public.t", r#"{"id":2}"#));
}
