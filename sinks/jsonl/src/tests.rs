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

/// Records handed over whole (the runtime's path) and borrowed (encoded on the caller's side)
/// land in the order given, across many 1 MiB writes, and the caller gets an empty vector back.
#[tokio::test(flavor = "multi_thread")]
async fn records_written_by_the_writer_thread_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut sink = JsonlSink::new(path.to_str().unwrap()).unwrap();
    assert_eq!(sink.open().await.unwrap(), None);
    let mut seq = 0;
    let mut batch = Vec::new();
    for round in 0..40 {
        if round % 7 == 3 {
            sink.write(&[change(1, seq)]).await.unwrap();
            seq += 1;
            continue;
        }
        batch.extend((0..2000).map(|i| change(1, seq + i)));
        seq += 2000;
        sink.write_owned(&mut batch).await.unwrap();
        assert!(batch.is_empty(), "the vector comes back empty");
    }
    sink.flush().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["source"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..seq).collect::<Vec<_>>());
    assert!(text.len() > 3 << 20, "several 1 MiB writes: {}", text.len());
}

/// A write that fails on the writer thread (a full disk) is reported by the next flush, naming
/// the file and the failed operation: the checkpoint cannot move past what was not written.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_is_reported_by_the_flush() {
    let mut sink = JsonlSink::new("/dev/full").unwrap();
    assert_eq!(sink.open().await.unwrap(), None);
    let mut batch = vec![change(1, 0), change(1, 1)];
    sink.write_owned(&mut batch).await.unwrap();
    let err = sink.flush().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot write") && err.contains("/dev/full"),
        "{err}"
    );
    // And every flush after it, until the runtime replaces the sink.
    sink.write(&[change(2, 0)]).await.unwrap();
    assert!(sink.flush().await.is_err());
}
