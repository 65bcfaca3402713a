use std::sync::Arc;

use super::*;
use crate::name::Name;
use crate::schema::{ColumnSchema, ColumnType};

fn schema() -> Arc<TableSchema> {
    let col = |n: &str, t: ColumnType| ColumnSchema {
        name: Name::new(n),
        column_type: t,
        source_type: "x".into(),
    };
    Arc::new(TableSchema {
        schema: "public".into(),
        table: "t".into(),
        columns: vec![
            col("id", ColumnType::Int64),
            col("v", ColumnType::Text { max_len: None }),
            col("f", ColumnType::Float64),
            col("b", ColumnType::Bytes),
            col("j", ColumnType::Json),
            col(
                "d",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
            ),
        ],
        key: vec![0],
    })
}

fn event() -> ChangeEvent {
    let mut e = crate::testing::pg_change(Op::Update, "t", 0x10, 7, 2);
    let n = Name::new;
    let row = Row(vec![
        (n("id"), Value::Int(5)),
        (n("v"), Value::Text("a\0b".into())),
        (n("f"), Value::Float(f64::NAN)),
        (n("b"), Value::Bytes(vec![0, 255, 1])),
        (n("j"), Value::json_from_str("{\"a\": [1, 2]}")),
        (n("d"), Value::Decimal("129.90".into())),
    ]);
    e.key = Some(Row(vec![(n("id"), Value::Int(5))]));
    e.after = Some(row);
    e.unchanged = vec![n("big")];
    e.table_schema = Some(schema());
    e
}

#[test]
fn a_letter_gives_back_the_very_change_and_schema() {
    let e = event();
    let letter = DeadLetter::of_event(&e, &schema(), "data", "refused");
    assert_eq!(letter.table, "public.t");
    assert_eq!(letter.key, r#"{"id":5}"#);
    let text = serde_json::to_string(&letter).unwrap();
    let back: DeadLetter = serde_json::from_str(&text).unwrap();
    assert_eq!(back, letter);
    let replayed = back.event();
    assert_eq!(replayed, e);
    assert_eq!(replayed.table_schema.as_deref(), Some(&*schema()));
    assert_eq!(letter.record["after"]["v"], "a\u{0}b");
}

#[test]
fn a_net_change_is_the_event_with_its_effect() {
    let s = schema();
    let e = event();
    let up = NetChange::Upsert {
        row: e.after.clone().unwrap(),
        unchanged: vec![],
        source: e.source.clone(),
        new_row: true,
    };
    let letter = DeadLetter::of_net_change(&up, &s, "data", "m");
    assert_eq!(letter.record["op"], "insert");
    assert_eq!(letter.key, net_change_key(&up, &s));
    let del = NetChange::Delete {
        key: e.key.clone().unwrap(),
        source: e.source.clone(),
    };
    assert_eq!(net_change_key(&del, &s), r#"{"id":5}"#);
    assert_eq!(
        DeadLetter::of_net_change(&del, &s, "held", "m").event().op,
        Op::Delete
    );
}

#[test]
fn a_refusal_names_table_key_column_and_a_shortened_value() {
    let e = event();
    let row = e.after.as_ref().unwrap();
    assert_eq!(column_with_nul(row), Some("v"));
    let text = describe_refusal(
        "public.t",
        r#"{"id":5}"#,
        Some(row),
        Some("v"),
        "22021: bad",
    );
    assert_eq!(
        text,
        r#"public.t key {"id":5}, column v = "a\u0000b": 22021: bad"#
    );
    let long = shorten(&Value::Text("x".repeat(100)));
    assert!(long.ends_with("…\" (100 characters)"), "{long}");
    assert_eq!(long.chars().filter(|c| *c == 'x').count(), 40);
}
