use std::io::Write;

use cdc_core::{ChangeEvent, Lsn, Op, Position, Row, SourceKind, SourceMeta, Value};

use super::*;

fn change(lsn: u64, seq: u64) -> SourceMessage {
    SourceMessage::Change(ChangeEvent {
        op: Op::Insert,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: "app".into(),
            schema: "public".into(),
            table: "t".into(),
            position: Position::Postgres { lsn: Lsn(lsn) },
            tx_id: Some(1),
            commit_ts: None,
            seq,
            snapshot: false,
        },
        key: Some(Row(vec![(
            cdc_core::Name::new("id"),
            Value::Int(seq as i64),
        )])),
        before: None,
        after: Some(Row(vec![(
            cdc_core::Name::new("id"),
            Value::Int(seq as i64),
        )])),
        unchanged: vec![],
        table_schema: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_resumes_after_the_last_record_and_cuts_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let path_str = path.to_str().unwrap();

    let mut sink = JsonlSink::new(path_str).unwrap();
    assert_eq!(sink.open().await.unwrap(), None);
    sink.write(&[change(100, 0), change(100, 1)]).await.unwrap();
    sink.flush().await.unwrap();
    drop(sink);

    // A crash mid-write leaves half a line behind.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"op\":\"insert\",\"sou")
        .unwrap();

    let mut sink = JsonlSink::new(path_str).unwrap();
    let resume = sink.open().await.unwrap().unwrap();
    assert_eq!(
        resume,
        ResumePoint {
            position: Position::Postgres { lsn: Lsn(100) },
            seq: Some(1)
        }
    );
    sink.write(&[change(200, 0)]).await.unwrap();
    sink.flush().await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines
        .iter()
        .all(|l| l.starts_with("{\"op\":\"insert\"") && l.ends_with('}')));
    assert!(lines[2].contains("\"lsn\":\"0/C8\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_ours_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.jsonl");
    std::fs::write(&path, "hello\n").unwrap();
    let mut sink = JsonlSink::new(path.to_str().unwrap()).unwrap();
    let err = sink.open().await.unwrap_err();
    assert!(err.to_string().contains("sink.path"), "{err}");
}
