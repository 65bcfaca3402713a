//! Table schemas as sources describe them: what sinks need to create and alter target tables.
//!
//! Every change event points at the schema it was decoded with ([`TableSchema`], shared by all
//! events of the table until the source announces a change), so a sink can apply a schema change
//! before the first row that needs it.

use crate::name::Name;

/// A column type, portable across targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnSchema {
    pub name: Name,
    pub column_type: ColumnType,
    /// The source's own spelling of the type (`numeric(10,2)`, `character varying(20)`).
    pub source_type: String,
}

/// Serializable so that a change set aside in the dead-letter store keeps the schema it was
/// decoded with, for its replay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSchema {
    pub schema: Name,
    pub table: Name,
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
/// Does `name` match a `*` glob?
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Is `schema.table` one of the configured `patterns` (none: every table)?
pub fn table_included(patterns: &[String], schema: &str, table: &str) -> bool {
    let name = format!("{schema}.{table}");
    patterns.is_empty() || patterns.iter().any(|p| glob_match(p, &name))
}
