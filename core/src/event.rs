//! The canonical change record.
//!
//! One [`ChangeEvent`] per row change, whatever the source. Its JSON form is the record of the
//! spec: `{"op", "source", "key", "before", "after", "unchanged"}`; the `jsonl` sink writes it as
//! is and other sinks map it.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;

use crate::name::Name;
use crate::pipeline::ResumePoint;
use crate::position::{Lsn, Position};
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Postgres,
    Mysql,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Mysql => "mysql",
        }
    }
}

/// Columns in table order, with their (interned) names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub Vec<(Name, Value)>);

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| name.as_ref() == column)
            .map(|(_, v)| v)
    }

    fn approx_size(&self) -> usize {
        // Each column's slot in the row, then what its value holds on the heap. (Counting 8
        // bytes a slot made narrow rows half their real size: the memory budgets built on this
        // count held half again as much as they said.)
        const SLOT: usize = std::mem::size_of::<(Name, Value)>();
        self.0
            .iter()
            .map(|(_, v)| SLOT - 16 + v.approx_size())
            .sum()
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name.as_ref(), value)?;
        }
        map.end()
    }
}

/// Where a change came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceMeta {
    pub kind: SourceKind,
    pub db: Name,
    pub schema: Name,
    pub table: Name,
    /// The position of the transaction the change belongs to (Postgres: commit LSN).
    pub position: Position,
    pub tx_id: Option<u64>,
    /// Commit time, UTC, already in the spec's text form; shared by the transaction's events.
    pub commit_ts: Option<Arc<str>>,
    /// Ordinal of the change within its transaction, from 0.
    pub seq: u64,
    /// Read by a snapshot rather than from the stream.
    pub snapshot: bool,
}

impl Serialize for SourceMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", self.kind.as_str())?;
        map.serialize_entry("db", self.db.as_ref())?;
        map.serialize_entry("schema", self.schema.as_ref())?;
        map.serialize_entry("table", self.table.as_ref())?;
        match &self.position {
            Position::Postgres { lsn } => map.serialize_entry("lsn", lsn)?,
            Position::Mysql { file, pos, gtid } => {
                map.serialize_entry("file", file)?;
                map.serialize_entry("pos", pos)?;
                if let Some(gtid) = gtid {
                    map.serialize_entry("gtid", gtid)?;
                }
            }
        }
        if let Some(tx_id) = self.tx_id {
            map.serialize_entry("tx_id", &tx_id)?;
        }
        map.serialize_entry("commit_ts", &self.commit_ts.as_deref())?;
        map.serialize_entry("seq", &self.seq)?;
        if self.snapshot {
            map.serialize_entry("snapshot", &true)?;
        }
        map.end()
    }
}

/// One row change.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub source: SourceMeta,
    /// Primary-key (or replica-identity) columns; `None` for truncates.
    pub key: Option<Row>,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// Columns whose new value the source did not send; absent from `after`.
    pub unchanged: Vec<Name>,
    /// The schema the change was decoded with (not part of the record's JSON).
    pub table_schema: Option<Arc<crate::schema::TableSchema>>,
}

impl ChangeEvent {
    /// `schema.table`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.source.schema, self.source.table)
    }

    /// A rough count of the bytes the event holds, for the pipeline's memory budget.
    pub fn approx_size(&self) -> usize {
        192 + [&self.key, &self.before, &self.after]
            .into_iter()
            .flatten()
            .map(Row::approx_size)
            .sum::<usize>()
    }

    /// The point a sink reaches once this event is durable.
    pub fn resume_point(&self) -> ResumePoint {
        ResumePoint {
            position: self.source.position.clone(),
            seq: Some(self.source.seq),
        }
    }
}

impl Serialize for ChangeEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(6))?;
        map.serialize_entry("op", self.op.as_str())?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("key", &self.key)?;
        map.serialize_entry("before", &self.before)?;
        map.serialize_entry("after", &self.after)?;
        map.serialize_entry(
            "unchanged",
            &self
                .unchanged
                .iter()
                .map(|c| c.as_ref())
                .collect::<Vec<_>>(),
        )?;
        map.end()
    }
}

/// Reads back where a change record stood, from its JSON form: what a sink that writes records
/// (JSON lines) needs to resume after a crash without writing a record twice.
pub fn resume_point_of_record(json_line: &str) -> Option<ResumePoint> {
    #[derive(Deserialize)]
    struct Record {
        source: RecordSource,
    }
    #[derive(Deserialize)]
    struct RecordSource {
        #[serde(rename = "type")]
        kind: String,
        lsn: Option<String>,
        file: Option<String>,
        pos: Option<u64>,
        gtid: Option<String>,
        seq: u64,
    }
    let record: Record = serde_json::from_str(json_line).ok()?;
    let src = record.source;
    let position = match src.kind.as_str() {
        "postgres" => Position::Postgres {
            lsn: src.lsn?.parse::<Lsn>().ok()?,
        },
        "mysql" => Position::Mysql {
            file: src.file?.into(),
            pos: src.pos?,
            gtid: src.gtid.map(Into::into),
        },
        _ => return None,
    };
    Some(ResumePoint {
        position,
        seq: Some(src.seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChangeEvent {
        let id = crate::name::Name::new("id");
        let status = crate::name::Name::new("status");
        let mut event = crate::testing::pg_change(Op::Update, "orders", 0x16B_3748, 755, 3);
        event.key = Some(Row(vec![(id, Value::Int(42))]));
        event.before = Some(Row(vec![
            (id, Value::Int(42)),
            (status, Value::Text("new".into())),
        ]));
        event.after = Some(Row(vec![
            (id, Value::Int(42)),
            (status, Value::Text("paid".into())),
        ]));
        event
    }

    #[test]
    fn record_json_matches_the_spec() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            json,
            r#"{"op":"update","source":{"type":"postgres","db":"app","schema":"public","table":"orders","lsn":"0/16B3748","tx_id":755,"commit_ts":"2026-11-26T11:02:36.123456Z","seq":3},"key":{"id":42},"before":{"id":42,"status":"new"},"after":{"id":42,"status":"paid"},"unchanged":[]}"#
        );
    }

    #[test]
    fn a_written_record_gives_back_its_resume_point() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(resume_point_of_record(&json), Some(sample().resume_point()));
        assert_eq!(resume_point_of_record("{\"op\":"), None);
    }
}
