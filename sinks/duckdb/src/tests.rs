//! The sink against a real DuckDB file: values, net effect, exactly-once resume, schema changes,
//! delete modes. (End to end from Postgres: `tests/warehouse_duckdb.rs` of the binary.)

use std::sync::Arc;

use cdc_core::{
    ChangeEvent, ColumnSchema, ColumnType, Lsn, Op, Position, Row, Sink, SourceKind, SourceMessage,
    SourceMeta, TableSchema, Value,
};

use super::*;

fn config(dir: &tempfile::TempDir) -> DuckdbSinkConfig {
    DuckdbSinkConfig {
        path: dir.path().join("target.duckdb").display().to_string(),
        schema: "replica".into(),
        pipeline: "p".into(),
        delete_mode: DeleteMode::Hard,
        metadata_columns: false,
        truncate: TruncateMode::Propagate,
        max_batch_changes: 1000,
        memory_limit_mb: 64,
    }
}

fn table(name: &str, columns: &[(&str, ColumnType)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        schema: "public".into(),
        table: name.into(),
        columns: columns
            .iter()
            .map(|(n, t)| ColumnSchema {
                name: cdc_core::Name::new(n),
                column_type: t.clone(),
                source_type: String::new(),
            })
            .collect(),
        key: vec![0],
    })
}

fn row(values: &[(&str, Value)]) -> Row {
    Row(values
        .iter()
        .map(|(n, v)| (cdc_core::Name::new(n), v.clone()))
        .collect())
}

fn pos(lsn: u64) -> Position {
    Position::Postgres { lsn: Lsn(lsn) }
}

fn change(
    schema: &Arc<TableSchema>,
    lsn: u64,
    op: Op,
    before: Option<Row>,
    after: Option<Row>,
) -> SourceMessage {
    let key = after
        .as_ref()
        .or(before.as_ref())
        .map(|r| Row(vec![r.0[0].clone()]));
    SourceMessage::Change(ChangeEvent {
        op,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: "d".into(),
            schema: "public".into(),
            table: schema.table,
            position: pos(lsn),
            tx_id: None,
            commit_ts: Some("2026-11-26T11:02:36.123456Z".into()),
            seq: 0,
            snapshot: false,
        },
        key: if op == Op::Truncate { None } else { key },
        before,
        after,
        unchanged: vec![],
        table_schema: Some(Arc::clone(schema)),
    })
}

fn insert(schema: &Arc<TableSchema>, lsn: u64, values: &[(&str, Value)]) -> SourceMessage {
    change(schema, lsn, Op::Insert, None, Some(row(values)))
}

fn commit(lsn: u64) -> SourceMessage {
    SourceMessage::Commit {
        position: pos(lsn),
        resume_from: pos(lsn + 1),
        commit_ts: None,
    }
}

/// Every row of `sql` (one VARCHAR column), NULL as "NULL".
fn query(sink: &DuckdbSink, sql: &str) -> Vec<String> {
    let conn = sink.conn().unwrap();
    let mut statement = conn.prepare(sql).unwrap();
    let rows = statement
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap();
    rows.map(|r| r.unwrap().unwrap_or_else(|| "NULL".into()))
        .collect()
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[tokio::test]
async fn every_type_arrives_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DuckdbSink::new(config(&dir));
    assert_eq!(sink.open().await.unwrap(), None);
    let decimal = |p, s| ColumnType::Decimal {
        precision: p,
        scale: s,
    };
    let t = table(
        "types",
        &[
            ("id", ColumnType::Int32),
            ("b", ColumnType::Bool),
            ("i2", ColumnType::Int16),
            ("u8", ColumnType::UInt64),
            ("f4", ColumnType::Float32),
            ("f8", ColumnType::Float64),
            ("d", decimal(Some(38), Some(2))),
            ("n", decimal(None, None)),
            ("s", ColumnType::Text { max_len: Some(5) }),
            ("j", ColumnType::Json),
            ("bt", ColumnType::Bytes),
            ("u", ColumnType::Uuid),
            ("dt", ColumnType::Date),
            ("tm", ColumnType::Time),
            ("ts", ColumnType::Timestamp),
            ("tz", ColumnType::TimestampTz),
            ("iv", ColumnType::Interval),
            ("arr", ColumnType::Array(Box::new(ColumnType::Int32))),
            (
                "tarr",
                ColumnType::Array(Box::new(ColumnType::Text { max_len: None })),
            ),
            (
                "darr",
                ColumnType::Array(Box::new(decimal(Some(5), Some(1)))),
            ),
            (
                "tsarr",
                ColumnType::Array(Box::new(ColumnType::TimestampTz)),
            ),
            (
                "o",
                ColumnType::Other {
                    name: "inet".into(),
                    builtin: true,
                },
            ),
        ],
    );
    let full = [
        ("id", int(1)),
        ("b", Value::Bool(true)),
        ("i2", int(-7)),
        ("u8", Value::UInt(u64::MAX)),
        ("f4", Value::Float(1.5)),
        ("f8", Value::Float(f64::NAN)),
        (
            "d",
            Value::Decimal("123456789012345678901234567890123456.78".into()),
        ),
        (
            "n",
            Value::Decimal("1234567890123456789012345678901234567890.123456789".into()),
        ),
        ("s", text("a\tb'\"c")),
        ("j", Value::json_from_text("{\"a\": [1, 2]}".into())),
        ("bt", Value::Bytes(vec![0, 1, 255])),
        ("u", text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ("dt", Value::Date("infinity".into())),
        ("tm", Value::Time("24:00:00".into())),
        ("ts", Value::Timestamp("0044-03-15 12:00:00 BC".into())),
        (
            "tz",
            Value::TimestampTz("2026-11-26T12:45:00.123456Z".into()),
        ),
        ("iv", Value::Interval("P1Y2M3DT4H5M6.5S".into())),
        ("arr", Value::Array(vec![int(1), Value::Null, int(3)])),
        ("tarr", Value::Array(vec![text("x, y"), text("NULL")])),
        ("darr", Value::Array(vec![Value::Decimal("1.5".into())])),
        (
            "tsarr",
            Value::Array(vec![Value::TimestampTz("1970-01-01T00:00:00Z".into())]),
        ),
        ("o", text("192.168.0.1/24")),
    ];
    let nulls: Vec<(&str, Value)> = full
        .iter()
        .map(|(n, _)| (*n, if *n == "id" { int(2) } else { Value::Null }))
        .collect();
    let third = [
        ("id", int(3)),
        ("f8", Value::Float(f64::NEG_INFINITY)),
        ("dt", Value::Date("0044-03-15 BC".into())),
        ("ts", Value::Timestamp("-infinity".into())),
        ("tz", Value::TimestampTz("infinity".into())),
        ("iv", Value::Interval("P-1Y-2M3DT-4H-5M-6.5S".into())),
    ];
    sink.write(&[
        insert(&t, 10, &full),
        insert(&t, 10, &nulls),
        insert(&t, 10, &third),
        commit(10),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();

    let columns = query(
        &sink,
        "SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = 'types' ORDER BY column_index",
    );
    assert_eq!(
        columns,
        [
            "id INTEGER",
            "b BOOLEAN",
            "i2 SMALLINT",
            "u8 UBIGINT",
            "f4 FLOAT",
            "f8 DOUBLE",
            "d DECIMAL(38,2)",
            "n VARCHAR",
            "s VARCHAR",
            // Without the json extension (a bundled build may lack it): JSON text in a VARCHAR.
            if sink.features.json {
                "j JSON"
            } else {
                "j VARCHAR"
            },
            "bt BLOB",
            "u UUID",
            "dt DATE",
            "tm TIME",
            "ts TIMESTAMP",
            "tz TIMESTAMP WITH TIME ZONE",
            "iv INTERVAL",
            "arr INTEGER[]",
            "tarr VARCHAR[]",
            "darr DECIMAL(5,1)[]",
            "tsarr TIMESTAMP WITH TIME ZONE[]",
            "o VARCHAR",
        ]
    );
    let all = |id: i64| {
        query(
            &sink,
            &format!(
                "SELECT concat_ws(' | ', b, i2, u8, f4, f8, d, n, s, j, hex(bt), u, dt, tm, ts, \
                 epoch_us(CAST(tz AS TIMESTAMP)), iv, CAST(arr AS VARCHAR), tarr[1], tarr[2], CAST(darr AS VARCHAR), \
                 CAST(list_transform(tsarr, lambda x: epoch_us(CAST(x AS TIMESTAMP))) AS VARCHAR), o) \
                 FROM replica.types WHERE id = {id}"
            ),
        )
    };
    assert_eq!(
        all(1),
        ["true | -7 | 18446744073709551615 | 1.5 | nan | 123456789012345678901234567890123456.78 | \
          1234567890123456789012345678901234567890.123456789 | a\tb'\"c | {\"a\": [1, 2]} | 0001FF | \
          a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 | infinity | 24:00:00 | 0044-03-15 (BC) 12:00:00 | \
          1795697100123456 | 1 year 2 months 3 days 04:05:06.5 | [1, NULL, 3] | x, y | NULL | [1.5] | [0] | \
          192.168.0.1/24"]
    );
    assert_eq!(all(2), [""], "NULLs stay NULL");
    assert_eq!(
        query(
            &sink,
            "SELECT concat_ws(' | ', f8, dt, ts, tz = 'infinity'::TIMESTAMPTZ, iv) FROM replica.types WHERE id = 3"
        ),
        ["-inf | 0044-03-15 (BC) | -infinity | true | -1 year -2 months 3 days -04:05:06.5"]
    );
    assert_eq!(
        crate::apply::APPENDER_FALLBACKS.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the appender took every value"
    );
    // A text array element "NULL" is the string, not a NULL.
    assert_eq!(
        query(
            &sink,
            "SELECT CAST(tarr[2] IS NULL AS VARCHAR) FROM replica.types WHERE id = 1"
        ),
        ["false"]
    );
}

#[tokio::test]
async fn net_effect_unchanged_columns_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    // Apply after every change: the same key is deleted and re-inserted across pieces of one
    // open transaction.
    cfg.max_batch_changes = 1;
    let t = table(
        "t",
        &[
            ("id", ColumnType::Int64),
            ("v", ColumnType::Text { max_len: None }),
            ("big", ColumnType::Text { max_len: None }),
        ],
    );
    let mut sink = DuckdbSink::new(cfg.clone());
    sink.open().await.unwrap();
    let r = |id: i64, v: &str| row(&[("id", int(id)), ("v", text(v)), ("big", text("BIG"))]);
    let mut toast_update = match change(
        &t,
        20,
        Op::Update,
        Some(row(&[("id", int(1))])),
        Some(row(&[("id", int(1)), ("v", text("b"))])),
    ) {
        SourceMessage::Change(e) => e,
        _ => unreachable!(),
    };
    toast_update.unchanged = vec![cdc_core::Name::new("big")];
    sink.write(&[
        change(&t, 10, Op::Insert, None, Some(r(1, "a"))),
        change(&t, 10, Op::Insert, None, Some(r(2, "a"))),
        change(&t, 10, Op::Insert, None, Some(r(3, "a"))),
        commit(10),
        SourceMessage::Change(toast_update),
        change(&t, 20, Op::Delete, Some(row(&[("id", int(2))])), None),
        change(&t, 20, Op::Insert, None, Some(r(2, "again"))),
        // A key change: 3 becomes 4.
        change(
            &t,
            20,
            Op::Update,
            Some(row(&[("id", int(3))])),
            Some(r(4, "moved")),
        ),
        commit(20),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    let rows = |sink: &DuckdbSink| {
        query(
            sink,
            "SELECT concat_ws(',', id, v, big) FROM replica.t ORDER BY id",
        )
    };
    assert_eq!(rows(&sink), ["1,b,BIG", "2,again,BIG", "4,moved,BIG"]);
    // A committed key deleted and inserted again in one transaction, in two pieces.
    sink.write(&[
        change(&t, 25, Op::Delete, Some(row(&[("id", int(4))])), None),
        change(&t, 25, Op::Insert, None, Some(r(4, "back"))),
        commit(25),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(rows(&sink), ["1,b,BIG", "2,again,BIG", "4,back,BIG"]);

    // Written but not flushed: lost with the process, and the position says so.
    sink.write(&[
        change(&t, 30, Op::Delete, Some(row(&[("id", int(1))])), None),
        commit(30),
    ])
    .await
    .unwrap();
    drop(sink);
    let mut sink = DuckdbSink::new(cfg);
    assert_eq!(
        sink.open().await.unwrap(),
        Some(ResumePoint {
            position: pos(25),
            seq: None
        })
    );
    assert_eq!(rows(&sink), ["1,b,BIG", "2,again,BIG", "4,back,BIG"]);
}

#[tokio::test]
async fn schema_changes_are_followed_or_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DuckdbSink::new(config(&dir));
    sink.open().await.unwrap();
    let v1 = table(
        "t",
        &[
            ("id", ColumnType::Int32),
            ("n", ColumnType::Int16),
            ("gone", ColumnType::Int32),
        ],
    );
    sink.write(&[
        insert(&v1, 10, &[("id", int(1)), ("n", int(1)), ("gone", int(1))]),
        commit(10),
    ])
    .await
    .unwrap();
    // Added column, widened type, dropped column, in the same transaction as rows before.
    // The key widens too (a table rebuild in DuckDB).
    let v2 = table(
        "t",
        &[
            ("id", ColumnType::Int64),
            ("n", ColumnType::Int64),
            ("added", ColumnType::Text { max_len: None }),
        ],
    );
    sink.write(&[
        insert(&v1, 20, &[("id", int(2)), ("n", int(2)), ("gone", int(2))]),
        insert(
            &v2,
            20,
            &[
                ("id", int(3)),
                ("n", int(5_000_000_000)),
                ("added", text("x")),
            ],
        ),
        commit(20),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(
        query(
            &sink,
            "SELECT concat_ws(',', id, n, gone, added) FROM replica.t ORDER BY id"
        ),
        ["1,1,1", "2,2,2", "3,5000000000,x"]
    );
    assert_eq!(
        query(
            &sink,
            "SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = 't' ORDER BY column_index"
        ),
        ["id BIGINT", "n BIGINT", "gone INTEGER", "added VARCHAR"]
    );
    // The rebuilt table still has its key: an upsert of an existing id updates it.
    sink.write(&[
        insert(
            &v2,
            25,
            &[("id", int(3)), ("n", int(6)), ("added", text("y"))],
        ),
        commit(25),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(
        query(
            &sink,
            "SELECT concat_ws(',', id, n, added) FROM replica.t WHERE id = 3"
        ),
        ["3,6,y"]
    );
    // text -> integer: refused, with the column, both types and a fix.
    let v3 = table(
        "t",
        &[
            ("id", ColumnType::Int64),
            ("n", ColumnType::Int64),
            ("added", ColumnType::Int32),
        ],
    );
    let err = sink
        .write(&[insert(&v3, 30, &[("id", int(4))]), commit(30)])
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.message.contains("changed from VARCHAR to INTEGER") && err.hint.is_some(),
        "{err}"
    );
}

#[tokio::test]
async fn soft_deletes_metadata_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.delete_mode = DeleteMode::Soft;
    cfg.metadata_columns = true;
    let t = table(
        "t",
        &[
            ("id", ColumnType::Int64),
            ("v", ColumnType::Text { max_len: None }),
        ],
    );
    let mut sink = DuckdbSink::new(cfg);
    sink.open().await.unwrap();
    sink.write(&[
        insert(&t, 10, &[("id", int(1)), ("v", text("a"))]),
        insert(&t, 10, &[("id", int(2)), ("v", text("a"))]),
        commit(10),
    ])
    .await
    .unwrap();
    // (Inserted and deleted within one batch, a row would leave no trace, as in the postgres
    // sink: the batch's net effect is a delete of a row the target never had.)
    sink.flush().await.unwrap();
    sink.write(&[
        change(&t, 20, Op::Delete, Some(row(&[("id", int(1))])), None),
        commit(20),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    let rows = |sink: &DuckdbSink| {
        query(
            sink,
            "SELECT concat_ws(',', id, v, _cdc_deleted, _cdc_position, epoch_us(CAST(_cdc_commit_ts AS TIMESTAMP))) FROM replica.t ORDER BY id",
        )
    };
    assert_eq!(
        rows(&sink),
        [
            "1,a,true,0/14,1795690956123456",
            "2,a,false,0/A,1795690956123456"
        ]
    );
    sink.write(&[
        change(&t, 30, Op::Truncate, None, None),
        insert(&t, 30, &[("id", int(1)), ("v", text("back"))]),
        commit(30),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(
        rows(&sink),
        [
            "1,back,false,0/1E,1795690956123456",
            "2,a,true,0/A,1795690956123456"
        ]
    );
}

#[tokio::test]
async fn a_missing_directory_is_a_definite_error_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.path = dir.path().join("nope/target.duckdb").display().to_string();
    let err = DuckdbSink::new(cfg.clone()).open().await.unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.message.contains("nope") && err.to_string().contains("its directory must exist"),
        "the missing directory and the fix: {err}"
    );
    assert!(!check(&cfg).ok);
    let cfg = config(&dir);
    assert!(check(&cfg).ok, "a file that can be created");
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_memory_is_capped_by_the_configured_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = DuckdbSink::new(config(&dir));
    sink.open().await.unwrap();
    let limit = query(&sink, "SELECT current_setting('memory_limit')");
    // DuckDB reports the limit in its own units (64 MB is about 61 MiB).
    assert!(
        limit.len() == 1 && (limit[0].contains("61.0 MiB") || limit[0].contains("64")),
        "{limit:?}"
    );
}

/// The reader connection sees what the sink committed (not what it has pending), keeps its
/// time zone to itself, and is withdrawn when the sink reopens the file and when it is dropped.
#[tokio::test]
async fn the_open_database_is_lent_to_readers_until_the_sink_reopens_or_drops() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedDatabase::default();
    let mut sink = DuckdbSink::new(config(&dir)).sharing(shared.clone());
    assert!(shared.with_reader(|_| ()).is_none(), "nothing open yet");
    sink.open().await.unwrap();
    let t = table("lent", &[("id", ColumnType::Int64)]);
    sink.write(&[insert(&t, 10, &[("id", int(1))]), commit(10)])
        .await
        .unwrap();
    sink.flush().await.unwrap();
    let count = |shared: &SharedDatabase| {
        shared.with_reader(|c| {
            c.query_row("SELECT count(*) FROM replica.lent", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        })
    };
    assert_eq!(count(&shared), Some(1));
    sink.write(&[insert(&t, 20, &[("id", int(2))]), commit(20)])
        .await
        .unwrap();
    sink.apply_pending().unwrap();
    assert_eq!(count(&shared), Some(1), "uncommitted rows are not read");
    sink.flush().await.unwrap();
    assert_eq!(count(&shared), Some(2));
    // A session setting of the reader stays there.
    let sink_zone = query(&sink, "SELECT current_setting('TimeZone')");
    shared
        .with_reader(|c| c.execute_batch("SET SESSION TimeZone = 'America/Lima'"))
        .unwrap()
        .unwrap();
    assert_eq!(
        query(&sink, "SELECT current_setting('TimeZone')"),
        sink_zone
    );
    sink.open().await.unwrap();
    assert_eq!(count(&shared), Some(2), "published again after a reopen");
    drop(sink);
    assert!(!shared.is_open(), "withdrawn when the sink is dropped");
    // The file is closed for good: it opens again (in a new instance) with the rows.
    let mut again = DuckdbSink::new(config(&dir));
    again.open().await.unwrap();
    assert_eq!(
        query(&again, "SELECT CAST(count(*) AS VARCHAR) FROM replica.lent"),
        ["2"]
    );
}

/// `message` as a snapshot read (a chunk's row).
fn copied(mut message: SourceMessage) -> SourceMessage {
    if let SourceMessage::Change(event) = &mut message {
        event.source.snapshot = true;
    }
    message
}

/// Every `id|v|deleted|has position` of the soft-delete target `replica.t`, by id.
fn soft_rows(sink: &DuckdbSink) -> Vec<String> {
    query(
        sink,
        "SELECT concat_ws('|', id, v, _cdc_deleted, _cdc_position IS NOT NULL, _cdc_commit_ts) FROM replica.t ORDER BY id",
    )
}

#[tokio::test]
async fn new_rows_are_appended_and_rows_the_target_has_are_upserted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.delete_mode = DeleteMode::Soft;
    cfg.metadata_columns = true;
    let mut sink = DuckdbSink::new(cfg);
    sink.open().await.unwrap();
    let t = table(
        "t",
        &[
            ("id", ColumnType::Int64),
            ("v", ColumnType::Text { max_len: None }),
        ],
    );
    let row_of = |i: i64, tag: &str| [("id", int(i)), ("v", text(&format!("{tag}{i}")))];
    let appended_before = apply::DIRECT_APPENDS.load(std::sync::atomic::Ordering::Relaxed);

    // Streamed inserts of 1..=100 and a snapshot chunk of 201..=300: appended to the table.
    let mut batch: Vec<SourceMessage> =
        (1..=100).map(|i| insert(&t, 10, &row_of(i, "a"))).collect();
    batch.extend((201..=300).map(|i| copied(insert(&t, 10, &row_of(i, "a")))));
    batch.push(commit(10));
    sink.write(&batch).await.unwrap();
    sink.flush().await.unwrap();
    assert!(
        apply::DIRECT_APPENDS.load(std::sync::atomic::Ordering::Relaxed) > appended_before,
        "the new rows went the direct way"
    );
    // Row 100 deleted (kept, flagged).
    sink.write(&[
        change(&t, 20, Op::Delete, Some(row(&row_of(100, "a"))), None),
        commit(20),
    ])
    .await
    .unwrap();
    sink.flush().await.unwrap();

    // A chunk copied again after a crash (1..=100, the deleted row among them) and a new chunk
    // (101..=200) in one batch: the keys' range holds rows, so each key is looked up; the rows
    // the target has are upserted (the deleted one comes back), the others appended.
    let mut batch: Vec<SourceMessage> = (1..=200)
        .map(|i| copied(insert(&t, 30, &row_of(i, "b"))))
        .collect();
    batch.push(commit(30));
    sink.write(&batch).await.unwrap();
    sink.flush().await.unwrap();

    let rows = soft_rows(&sink);
    assert_eq!(rows.len(), 300, "no key twice: {:?}", &rows[..5]);
    let ts = "2026-11-26 11:02:36.123456+00";
    assert_eq!(rows[0], format!("1|b1|false|true|{ts}"));
    assert_eq!(rows[99], format!("100|b100|false|true|{ts}"));
    assert_eq!(rows[150], format!("151|b151|false|true|{ts}"));
    assert_eq!(rows[250], format!("251|a251|false|true|{ts}"));
    assert_eq!(
        query(
            &sink,
            "SELECT CAST(count(*) AS VARCHAR) FROM replica.t WHERE v LIKE 'b%'"
        ),
        ["200"]
    );

    // Resume: the position committed with the rows.
    drop(sink);
    let mut cfg = config(&dir);
    cfg.delete_mode = DeleteMode::Soft;
    cfg.metadata_columns = true;
    let mut sink = DuckdbSink::new(cfg);
    assert_eq!(
        sink.open().await.unwrap().map(|r| r.position),
        Some(pos(30))
    );
}
