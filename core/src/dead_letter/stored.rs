//! A change as the dead-letter store keeps it: lossless, unlike the record's JSON, where a string
//! may be text, a decimal, a date or base64 bytes. A replay decodes it back to the very values
//! and schema the sink was given.

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::{ChangeEvent, Op, Row, SourceKind, SourceMeta};
use crate::name::Name;
use crate::position::Position;
use crate::schema::TableSchema;
use crate::value::Value;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredChange {
    op: String,
    source: StoredSource,
    key: Option<StoredRow>,
    before: Option<StoredRow>,
    after: Option<StoredRow>,
    unchanged: Vec<String>,
    schema: TableSchema,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct StoredSource {
    kind: String,
    db: String,
    schema: String,
    table: String,
    position: Position,
    tx_id: Option<u64>,
    commit_ts: Option<String>,
    seq: u64,
    snapshot: bool,
}

type StoredRow = Vec<(String, StoredValue)>;

/// [`Value`], tagged with its variant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
enum StoredValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// The bits: NaN and the infinities too, exactly.
    Float(u64),
    Decimal(String),
    Text(String),
    Json(String),
    /// Base64.
    Bytes(String),
    Date(String),
    Time(String),
    Timestamp(String),
    TimestampTz(String),
    Interval(String),
    Array(Vec<StoredValue>),
}

impl StoredChange {
    pub fn of(event: &ChangeEvent, schema: &TableSchema) -> Self {
        let s = &event.source;
        StoredChange {
            op: event.op.as_str().to_string(),
            source: StoredSource {
                kind: s.kind.as_str().to_string(),
                db: s.db.to_string(),
                schema: s.schema.to_string(),
                table: s.table.to_string(),
                position: s.position.clone(),
                tx_id: s.tx_id,
                commit_ts: s.commit_ts.as_deref().map(str::to_string),
                seq: s.seq,
                snapshot: s.snapshot,
            },
            key: event.key.as_ref().map(store_row),
            before: event.before.as_ref().map(store_row),
            after: event.after.as_ref().map(store_row),
            unchanged: event.unchanged.iter().map(|c| c.to_string()).collect(),
            schema: schema.clone(),
        }
    }

    /// The source position and ordinal of the change.
    pub fn position(&self) -> (&Position, u64) {
        (&self.source.position, self.source.seq)
    }

    pub fn to_event(&self) -> ChangeEvent {
        let s = &self.source;
        ChangeEvent {
            op: match self.op.as_str() {
                "insert" => Op::Insert,
                "delete" => Op::Delete,
                "truncate" => Op::Truncate,
                _ => Op::Update,
            },
            source: SourceMeta {
                kind: if s.kind == "mysql" {
                    SourceKind::Mysql
                } else {
                    SourceKind::Postgres
                },
                db: Name::new(&s.db),
                schema: Name::new(&s.schema),
                table: Name::new(&s.table),
                position: s.position.clone(),
                tx_id: s.tx_id,
                commit_ts: s.commit_ts.as_deref().map(Arc::from),
                seq: s.seq,
                snapshot: s.snapshot,
            },
            key: self.key.as_ref().map(load_row),
            before: self.before.as_ref().map(load_row),
            after: self.after.as_ref().map(load_row),
            unchanged: self.unchanged.iter().map(|c| Name::new(c)).collect(),
            table_schema: Some(Arc::new(self.schema.clone())),
        }
    }
}

fn store_row(row: &Row) -> StoredRow {
    row.0
        .iter()
        .map(|(name, value)| (name.to_string(), store_value(value)))
        .collect()
}

fn load_row(row: &StoredRow) -> Row {
    Row(row
        .iter()
        .map(|(name, value)| (Name::new(name), load_value(value)))
        .collect())
}

fn store_value(value: &Value) -> StoredValue {
    match value {
        Value::Null => StoredValue::Null,
        Value::Bool(b) => StoredValue::Bool(*b),
        Value::Int(i) => StoredValue::Int(*i),
        Value::UInt(u) => StoredValue::UInt(*u),
        Value::Float(f) => StoredValue::Float(f.to_bits()),
        Value::Decimal(s) => StoredValue::Decimal(s.clone()),
        Value::Text(s) => StoredValue::Text(s.clone()),
        Value::Json(raw) => StoredValue::Json(raw.get().to_string()),
        Value::Bytes(b) => StoredValue::Bytes(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Date(s) => StoredValue::Date(s.clone()),
        Value::Time(s) => StoredValue::Time(s.clone()),
        Value::Timestamp(s) => StoredValue::Timestamp(s.clone()),
        Value::TimestampTz(s) => StoredValue::TimestampTz(s.clone()),
        Value::Interval(s) => StoredValue::Interval(s.clone()),
        Value::Array(items) => StoredValue::Array(items.iter().map(store_value).collect()),
    }
}

fn load_value(value: &StoredValue) -> Value {
    match value {
        StoredValue::Null => Value::Null,
        StoredValue::Bool(b) => Value::Bool(*b),
        StoredValue::Int(i) => Value::Int(*i),
        StoredValue::UInt(u) => Value::UInt(*u),
        StoredValue::Float(bits) => Value::Float(f64::from_bits(*bits)),
        StoredValue::Decimal(s) => Value::Decimal(s.clone()),
        StoredValue::Text(s) => Value::Text(s.clone()),
        StoredValue::Json(s) => Value::json_from_str(s),
        // Written by `store_value`, so valid base64; anything else reads as no bytes.
        StoredValue::Bytes(s) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default(),
        ),
        StoredValue::Date(s) => Value::Date(s.clone()),
        StoredValue::Time(s) => Value::Time(s.clone()),
        StoredValue::Timestamp(s) => Value::Timestamp(s.clone()),
        StoredValue::TimestampTz(s) => Value::TimestampTz(s.clone()),
        StoredValue::Interval(s) => Value::Interval(s.clone()),
        StoredValue::Array(items) => Value::Array(items.iter().map(load_value).collect()),
    }
}
