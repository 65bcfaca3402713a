//! Golden tests: our Debezium messages against Debezium's documented forms (PostgreSQL and MySQL
//! connector docs, "Data change events"), with the documented differences in value encoding.

use serde_json::{json, Value as Json};

use super::*;

fn row(values: Vec<(&str, Value)>) -> Row {
    Row(values
        .into_iter()
        .map(|(n, v)| (crate::name::Name::from(n), v))
        .collect())
}

fn pg_event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    let mut event = crate::testing::pg_change(op, "orders", 23_803_720, 755, 0);
    event.key = Some(row(vec![("id", Value::Int(42))]));
    event.before = before;
    event.after = after;
    event
}

fn value_message(event: &ChangeEvent) -> Json {
    let mut out = Vec::new();
    write_value_message(event, "shop", 1_764_155_000_000, None, &mut out);
    serde_json::from_slice(&out).expect("the envelope is JSON")
}

#[test]
fn postgres_update_is_debeziums_envelope() {
    let event = pg_event(
        Op::Update,
        Some(row(vec![
            ("id", Value::Int(42)),
            ("status", Value::Text("new".into())),
        ])),
        Some(row(vec![
            ("id", Value::Int(42)),
            ("status", Value::Text("paid".into())),
        ])),
    );
    assert_eq!(
        value_message(&event),
        json!({
            "before": {"id": 42, "status": "new"},
            "after": {"id": 42, "status": "paid"},
            "source": {
                "version": concat!("cdc-agent ", env!("CARGO_PKG_VERSION")),
                "connector": "postgresql",
                "name": "shop",
                "ts_ms": 1_795_690_956_123i64,
                "snapshot": "false",
                "db": "app",
                "schema": "public",
                "table": "orders",
                "txId": 755,
                "lsn": 23_803_720
            },
            "op": "u",
            "ts_ms": 1_764_155_000_000i64,
            "transaction": null
        })
    );
    let mut key = Vec::new();
    write_key_message(&event, &mut key);
    assert_eq!(
        serde_json::from_slice::<Json>(&key).unwrap(),
        json!({"id": 42})
    );
}

#[test]
fn op_letters_are_debeziums() {
    let insert = pg_event(Op::Insert, None, Some(row(vec![("id", Value::Int(1))])));
    assert_eq!(value_message(&insert)["op"], "c");
    let mut read = insert.clone();
    read.source.snapshot = true;
    assert_eq!(value_message(&read)["op"], "r");
    assert_eq!(value_message(&read)["source"]["snapshot"], "true");
    let delete = pg_event(Op::Delete, Some(row(vec![("id", Value::Int(1))])), None);
    let message = value_message(&delete);
    assert_eq!(message["op"], "d");
    assert_eq!(message["after"], Json::Null);
    assert_eq!(message["before"], json!({"id": 1}));
    let truncate = ChangeEvent {
        key: None,
        ..pg_event(Op::Truncate, None, None)
    };
    assert_eq!(value_message(&truncate)["op"], "t");
    let mut key = Vec::new();
    write_key_message(&truncate, &mut key);
    assert_eq!(key, b"null");
}

/// Each value kind against Debezium's representation with `decimal.handling.mode=string`,
/// `binary.handling.mode=base64`, `interval.handling.mode=string`; the temporal kinds Debezium
/// sends as epoch numbers by default are ISO text here (README, "Debezium envelope").
#[test]
fn every_value_kind_has_its_documented_form() {
    let cases: Vec<(Value, Json)> = vec![
        (Value::Null, Json::Null),
        (Value::Bool(true), json!(true)),
        (Value::Int(-7), json!(-7)),
        (Value::UInt(u64::MAX), json!(u64::MAX)),
        (Value::Float(1.5), json!(1.5)),
        // decimal.handling.mode=string
        (Value::Decimal("129.90".into()), json!("129.90")),
        (Value::Text("héllo \"q\"".into()), json!("héllo \"q\"")),
        // io.debezium.data.Json: the document's text in a string.
        (
            Value::json_from_text("{\"a\": [1, 2]}".into()),
            json!("{\"a\": [1, 2]}"),
        ),
        // binary.handling.mode=base64
        (Value::Bytes(vec![0, 1, 2]), json!("AAEC")),
        // io.debezium.time.ZonedTimestamp: ISO-8601 with the offset, as Debezium.
        (
            Value::TimestampTz("2026-11-26T11:02:36.123456Z".into()),
            json!("2026-11-26T11:02:36.123456Z"),
        ),
        // interval.handling.mode=string: ISO-8601 duration, as Debezium.
        (Value::Interval("P1DT2H".into()), json!("P1DT2H")),
        // Differences (Debezium default: epoch days / micros), ISO text here.
        (Value::Date("2026-11-26".into()), json!("2026-11-26")),
        (Value::Time("13:45:00.5".into()), json!("13:45:00.5")),
        (
            Value::Timestamp("2026-11-26T13:45:00".into()),
            json!("2026-11-26T13:45:00"),
        ),
        (
            Value::Array(vec![Value::Int(1), Value::Null]),
            json!([1, null]),
        ),
    ];
    for (value, expected) in cases {
        let event = pg_event(Op::Insert, None, Some(row(vec![("v", value.clone())])));
        assert_eq!(
            value_message(&event)["after"]["v"],
            expected,
            "value {value:?}"
        );
    }
}

#[test]
fn mysql_source_block_is_debeziums() {
    let mut event = pg_event(Op::Insert, None, Some(row(vec![("id", Value::Int(1))])));
    event.source.kind = SourceKind::Mysql;
    event.source.db = "inventory".into();
    event.source.schema = "inventory".into();
    event.source.tx_id = None;
    event.source.seq = 3;
    event.source.position = Position::Mysql {
        file: "mysql-bin.000003".into(),
        pos: 154,
        gtid: Some("0-1-42".into()),
    };
    let source = value_message(&event)["source"].clone();
    assert_eq!(source["connector"], "mysql");
    assert_eq!(source["db"], "inventory");
    assert_eq!(source["table"], "orders");
    assert_eq!(source["file"], "mysql-bin.000003");
    assert_eq!(source["pos"], 154);
    assert_eq!(source["row"], 3);
    assert_eq!(source["gtid"], "0-1-42");
    assert_eq!(source["server_id"], 0);
    assert!(source.get("schema").is_none(), "{source}");
}
