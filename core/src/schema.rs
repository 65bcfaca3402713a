//! Table schemas as sources describe them: what sinks need to create and alter target tables.
//!
//! Every change event points at the schema it was decoded with ([`TableSchema`], shared by all
//! events of the table until the source announces a change), so a sink can apply a schema change
//! before the first row that needs it.

use std::sync::Arc;

/// A column type, portable across targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    /// MySQL BIGINT UNSIGNED and the like.
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text {
        max_len: Option<u32>,
    },
    Json,
    Bytes,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Array(Box<ColumnType>),
    /// A type without a portable counterpart (inet, point, an enum, ...), kept as its text.
    /// `name` is the source's type name; `builtin` says a target of the same kind has it too.
    Other {
        name: String,
        builtin: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: Arc<str>,
    pub column_type: ColumnType,
    /// The source's own spelling of the type (`numeric(10,2)`, `character varying(20)`).
    pub source_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub columns: Vec<ColumnSchema>,
    /// Indexes into `columns` of the key (primary key, else replica identity).
    pub key: Vec<usize>,
}

impl TableSchema {
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.key.iter().map(|&i| &*self.columns[i].name)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| &*c.name == name)
    }
}
