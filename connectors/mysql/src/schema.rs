//! Table columns, and their history along the binlog.
//!
//! Rows events carry column *types* but no names (unless `binlog_row_metadata=FULL`), and a row
//! decoded with the wrong column list is silently wrong. So the source keeps, per table, the
//! columns `information_schema` reported, each version stored with the binlog position from which
//! it holds:
//!
//! ```text
//!  start at P            ─▶ the newest stored version at or before P (none yet: read it now, store at P)
//!  DDL event ending at E ─▶ a version stored at E (a replay: use it) or read it now and store at E
//!  TABLE_MAP             ─▶ column count and types checked against the version in use
//! ```
//!
//! A restart from a checkpoint older than an ALTER therefore decodes the rows before the ALTER with
//! the columns that were valid then.

use std::collections::HashMap;
use std::sync::Arc;

use cdc_core::Name;
use cdc_core::{ColumnSchema, ColumnType, PipelineError, Position, StateTree, TableSchema};
use mysql_async::binlog::events::TableMapEvent;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};

use crate::errors::query_error;

/// What `information_schema` says of a column: enough to decode its binlog values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `enum`, ...
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `enum('a','b')`, `binary(4)`, ...
    pub column_type: String,
    /// `CHARACTER_SET_NAME` for character columns.
    pub charset: Option<String>,
    /// A JSON column: MySQL's `json`, or MariaDB's alias (`longtext` checked by `json_valid`).
    pub json: bool,
}

/// A table's columns (in ordinal order) and primary key (column indexes, in key order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    pub db: String,
    pub table: String,
    pub columns: Vec<ColumnInfo>,
    pub key: Vec<usize>,
}

impl TableInfo {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.table)
    }
}

/// How a column's binlog value becomes a [`cdc_core::Value`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A signed integer of this many bits (the binlog may have decoded it as unsigned).
    SignedInt(u32),
    /// An unsigned integer of this many bits (the binlog may have decoded it as signed).
    UnsignedInt(u32),
    Float,
    Double,
    Decimal,
    Text(Charset),
    Bytes,
    /// `BINARY(n)`: the binlog drops trailing zero bytes; they are put back.
    FixedBinary(usize),
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    Bit,
    Year,
    Date,
    Time,
    DateTime,
    Timestamp,
    /// MySQL's internal geometry (4-byte SRID, then WKB): emitted as the WKB.
    Geometry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// MySQL's `latin1` is Windows-1252.
    Latin1,
    /// Anything else: accepted when the bytes are valid UTF-8.
    Other,
}

/// A table ready for decoding: its columns, the schema sinks see, and a decoder per column.
#[derive(Debug)]
pub struct DecodedTable {
    pub info: TableInfo,
    pub schema: Arc<TableSchema>,
    pub kinds: Vec<ValueKind>,
}

impl DecodedTable {
    pub fn new(info: TableInfo) -> Self {
        let columns = info
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: Name::new(c.name.as_str()),
                column_type: column_type(c),
                source_type: c.column_type.clone(),
            })
            .collect();
        let schema = Arc::new(TableSchema {
            schema: Name::new(info.db.as_str()),
            table: Name::new(info.table.as_str()),
            columns,
            key: info.key.clone(),
        });
        let kinds = info.columns.iter().map(value_kind).collect();
        DecodedTable {
            info,
            schema,
            kinds,
        }
    }
}

fn unsigned(c: &ColumnInfo) -> bool {
    c.column_type.contains("unsigned")
}

/// The `n` of `type(n)`.
fn type_length(column_type: &str) -> Option<u32> {
    let open = column_type.find('(')?;
    let close = column_type[open..].find(')')? + open;
    column_type[open + 1..close]
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The `(p,s)` of `decimal(p,s)`.
fn precision_scale(column_type: &str) -> (Option<u32>, Option<u32>) {
    let Some(open) = column_type.find('(') else {
        return (None, None);
    };
    let inner = column_type[open + 1..].split(')').next().unwrap_or("");
    let mut parts = inner.split(',').map(|p| p.trim().parse().ok());
    (parts.next().flatten(), parts.next().flatten())
}

/// The quoted members of `enum('a','b')` / `set('a','b')`, unescaped.
pub fn members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..];
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut member = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    member.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        member.push(next);
                    }
                }
                other => member.push(other),
            }
        }
        out.push(member);
    }
    out
}

/// The type sinks create target columns from.
pub fn column_type(c: &ColumnInfo) -> ColumnType {
    if c.json {
        return ColumnType::Json;
    }
    match (c.data_type.as_str(), unsigned(c)) {
        ("tinyint", _) | ("smallint", false) | ("year", _) => ColumnType::Int16,
        ("smallint", true) | ("mediumint", _) | ("int", false) => ColumnType::Int32,
        ("int", true) | ("bigint", false) => ColumnType::Int64,
        ("bigint", true) => ColumnType::UInt64,
        ("float", _) => ColumnType::Float32,
        ("double", _) | ("real", _) => ColumnType::Float64,
        ("decimal", _) | ("numeric", _) => {
            let (precision, scale) = precision_scale(&c.column_type);
            ColumnType::Decimal { precision, scale }
        }
        ("char", _) | ("varchar", _) => ColumnType::Text {
            max_len: type_length(&c.column_type),
        },
        ("tinytext", _) | ("text", _) | ("mediumtext", _) | ("longtext", _) | ("enum", _) => {
            ColumnType::Text { max_len: None }
        }
        ("set", _) => ColumnType::Array(Box::new(ColumnType::Text { max_len: None })),
        ("json", _) => ColumnType::Json,
        ("binary", _)
        | ("varbinary", _)
        | ("tinyblob", _)
        | ("blob", _)
        | ("mediumblob", _)
        | ("longblob", _)
        | ("bit", _) => ColumnType::Bytes,
        (g, _) if is_geometry(g) => ColumnType::Bytes,
        ("date", _) => ColumnType::Date,
        ("time", _) => ColumnType::Time,
        ("datetime", _) => ColumnType::Timestamp,
        ("timestamp", _) => ColumnType::TimestampTz,
        (other, _) => ColumnType::Other {
            name: other.to_string(),
            builtin: true,
        },
    }
}

fn is_geometry(data_type: &str) -> bool {
    matches!(
        data_type,
        "geometry"
            | "point"
            | "linestring"
            | "polygon"
            | "multipoint"
            | "multilinestring"
            | "multipolygon"
            | "geometrycollection"
            | "geomcollection"
    )
}

fn value_kind(c: &ColumnInfo) -> ValueKind {
    if c.json {
        return ValueKind::Json;
    }
    let charset = match c.charset.as_deref() {
        Some(cs) if cs.starts_with("utf8") || cs == "ascii" => Charset::Utf8,
        Some("latin1") => Charset::Latin1,
        _ => Charset::Other,
    };
    match c.data_type.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => {
            let bits = match c.data_type.as_str() {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" => 32,
                _ => 64,
            };
            if unsigned(c) {
                ValueKind::UnsignedInt(bits)
            } else {
                ValueKind::SignedInt(bits)
            }
        }
        "float" => ValueKind::Float,
        "double" | "real" => ValueKind::Double,
        "decimal" | "numeric" => ValueKind::Decimal,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            ValueKind::Text(charset)
        }
        "binary" => ValueKind::FixedBinary(type_length(&c.column_type).unwrap_or(0) as usize),
        "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ValueKind::Bytes,
        "json" => ValueKind::Json,
        "enum" => ValueKind::Enum(members(&c.column_type)),
        "set" => ValueKind::Set(members(&c.column_type)),
        "bit" => ValueKind::Bit,
        "year" => ValueKind::Year,
        "date" => ValueKind::Date,
        "time" => ValueKind::Time,
        "datetime" => ValueKind::DateTime,
        "timestamp" => ValueKind::Timestamp,
        g if is_geometry(g) => ValueKind::Geometry,
        _ => ValueKind::Text(charset),
    }
}

/// Reads the columns and primary key of `db.table` now; `None` when the table does not exist.
pub async fn read_table(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<Option<TableInfo>, PipelineError> {
    let rows: Vec<(String, String, String, Option<String>, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), CHARACTER_SET_NAME, COLUMN_KEY \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| query_error(e, &format!("reading the columns of {db}.{table}")))?;
    if rows.is_empty() {
        return Ok(None);
    }
    // MariaDB's JSON is LONGTEXT with a json_valid() check; MySQL has a real json type.
    let json_checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CHECK_CLAUSE LIKE 'json_valid(%'",
            (db, table),
        )
        .await
        .unwrap_or_default();
    let key_columns: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| query_error(e, &format!("reading the primary key of {db}.{table}")))?;
    let columns: Vec<ColumnInfo> = rows
        .into_iter()
        .map(|(name, data_type, column_type, charset, _)| {
            let json = data_type == "json"
                || json_checks
                    .iter()
                    .any(|check| check.contains(&format!("`{name}`")));
            ColumnInfo {
                name,
                data_type,
                column_type,
                charset,
                json,
            }
        })
        .collect();
    let key = key_columns
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok(Some(TableInfo {
        db: db.to_string(),
        table: table.to_string(),
        columns,
        key,
    }))
}

/// Store keys order by position: `db.table/<file index>/<offset>`, both zero-padded.
fn version_key(table: &str, at: &Position) -> String {
    match at {
        Position::Mysql { file, pos, .. } => {
            let index: u64 = file
                .rsplit('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            format!("{table}/{index:010}/{pos:020}")
        }
        Position::Postgres { lsn } => format!("{table}/{:030}", lsn.0),
    }
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    valid_from: Position,
    table: TableInfo,
}

/// Every table's column versions, persisted in the state store.
pub struct SchemaHistory {
    store: Arc<dyn StateTree>,
    /// Per `db.table`: versions in position order.
    versions: HashMap<String, Vec<(Position, Arc<DecodedTable>)>>,
}

impl SchemaHistory {
    pub fn load(store: Arc<dyn StateTree>) -> Result<Self, PipelineError> {
        let mut versions: HashMap<String, Vec<(Position, Arc<DecodedTable>)>> = HashMap::new();
        for (key, bytes) in store.scan("")? {
            // The chunked snapshot keeps its requests and progress in the same tree; a history
            // key starts with `db.table`, which holds a dot before the first slash.
            if key.starts_with(cdc_core::chunked::STATE_PREFIX) {
                continue;
            }
            let stored: StoredVersion = serde_json::from_slice(&bytes).map_err(|e| {
                PipelineError::definite(
                    "state",
                    format!("the schema history entry {key} is unreadable: {e}"),
                )
                .with_hint("run `cdc-agent reset --yes` and snapshot again")
            })?;
            versions
                .entry(stored.table.qualified())
                .or_default()
                .push((stored.valid_from, Arc::new(DecodedTable::new(stored.table))));
        }
        Ok(SchemaHistory { store, versions })
    }

    /// The version of `table` valid at `at`: the newest stored at or before it.
    pub fn at(&self, table: &str, at: &Position) -> Option<Arc<DecodedTable>> {
        self.versions.get(table).and_then(|list| {
            list.iter()
                .rev()
                .find(|(from, _)| from.try_cmp(at).is_ok_and(|o| o.is_le()))
                .map(|(_, t)| Arc::clone(t))
        })
    }

    /// Was a version of `table` stored exactly at `at` (a DDL seen before, now replayed)?
    pub fn has_version_at(&self, table: &str, at: &Position) -> bool {
        self.versions.get(table).is_some_and(|list| {
            list.iter()
                .any(|(from, _)| from.try_cmp(at).is_ok_and(|o| o.is_eq()))
        })
    }

    /// Records `info` as valid from `at` (unless it equals the version already valid there).
    pub fn record(
        &mut self,
        info: TableInfo,
        at: &Position,
    ) -> Result<Arc<DecodedTable>, PipelineError> {
        let name = info.qualified();
        if let Some(current) = self.at(&name, at) {
            if current.info == info {
                return Ok(current);
            }
        }
        let stored = StoredVersion {
            valid_from: at.clone(),
            table: info,
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| PipelineError::definite("state", format!("encoding a schema: {e}")))?;
        self.store.put(&version_key(&name, at), &bytes)?;
        let decoded = Arc::new(DecodedTable::new(stored.table));
        let list = self.versions.entry(name).or_default();
        let index = list
            .iter()
            .position(|(from, _)| from.try_cmp(at).is_ok_and(|o| o.is_gt()))
            .unwrap_or(list.len());
        list.insert(index, (at.clone(), Arc::clone(&decoded)));
        Ok(decoded)
    }
}

/// The column names a table map carries (`binlog_row_metadata=FULL`), if it has them all.
pub fn map_column_names(map: &TableMapEvent<'_>) -> Option<Vec<String>> {
    let meta =
        mysql_async::binlog::events::OptionalMetaExtractor::new(map.iter_optional_meta()).ok()?;
    let names: Vec<String> = meta
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .ok()?;
    (names.len() as u64 == map.columns_count()).then_some(names)
}

/// The columns as the table map has them: names from it, details from the server's table where
/// a column of that name still exists, else what the binlog type says.
pub fn from_table_map(
    map: &TableMapEvent<'_>,
    names: &[String],
    now: Option<&TableInfo>,
    db: &str,
    table: &str,
) -> TableInfo {
    use mysql_async::consts::ColumnType as T;
    let columns = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if let Some(known) =
                now.and_then(|t| t.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
            {
                return known.clone();
            }
            let data_type = match map.get_column_type(i).ok().flatten() {
                Some(T::MYSQL_TYPE_TINY) => "tinyint",
                Some(T::MYSQL_TYPE_SHORT) => "smallint",
                Some(T::MYSQL_TYPE_INT24) => "mediumint",
                Some(T::MYSQL_TYPE_LONG) => "int",
                Some(T::MYSQL_TYPE_LONGLONG) => "bigint",
                Some(T::MYSQL_TYPE_FLOAT) => "float",
                Some(T::MYSQL_TYPE_DOUBLE) => "double",
                Some(T::MYSQL_TYPE_NEWDECIMAL) => "decimal",
                Some(T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE) => "date",
                Some(T::MYSQL_TYPE_TIME | T::MYSQL_TYPE_TIME2) => "time",
                Some(T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2) => "datetime",
                Some(T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2) => "timestamp",
                Some(T::MYSQL_TYPE_YEAR) => "year",
                Some(T::MYSQL_TYPE_BIT) => "bit",
                Some(T::MYSQL_TYPE_JSON) => "json",
                Some(T::MYSQL_TYPE_GEOMETRY) => "geometry",
                _ => "longtext",
            };
            ColumnInfo {
                name: name.clone(),
                data_type: data_type.into(),
                column_type: data_type.into(),
                charset: None,
                json: data_type == "json",
            }
        })
        .collect::<Vec<_>>();
    let key = now
        .map(|t| {
            t.key
                .iter()
                .filter_map(|&k| t.columns.get(k))
                .filter_map(|c| columns.iter().position(|x| x.name == c.name))
                .collect()
        })
        .unwrap_or_default();
    TableInfo {
        db: db.to_string(),
        table: table.to_string(),
        columns,
        key,
    }
}

#[cfg(test)]
mod tests {
    use cdc_core::MemoryTree;

    use super::*;

    fn col(name: &str, data_type: &str, column_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            charset: None,
            json: false,
        }
    }

    fn at(file: &str, pos: u64) -> Position {
        Position::Mysql {
            file: file.into(),
            pos,
            gtid: None,
        }
    }

    #[test]
    fn enum_and_set_members_unescape() {
        assert_eq!(members("enum('a','b c','it''s')"), ["a", "b c", "it's"]);
        assert_eq!(members("set('x','y')"), ["x", "y"]);
        assert!(members("int(11)").is_empty());
    }

    #[test]
    fn types_map_with_signedness_and_sizes() {
        assert_eq!(
            column_type(&col("a", "bigint", "bigint(20) unsigned")),
            ColumnType::UInt64
        );
        assert_eq!(
            column_type(&col("a", "decimal", "decimal(65,30)")),
            ColumnType::Decimal {
                precision: Some(65),
                scale: Some(30)
            }
        );
        assert_eq!(
            column_type(&col("a", "varchar", "varchar(40)")),
            ColumnType::Text { max_len: Some(40) }
        );
        assert_eq!(
            value_kind(&col("a", "mediumint", "mediumint(8) unsigned")),
            ValueKind::UnsignedInt(24)
        );
        assert_eq!(
            value_kind(&col("a", "binary", "binary(4)")),
            ValueKind::FixedBinary(4)
        );
    }

    #[test]
    fn history_answers_by_position_and_survives_reloading() {
        let store: Arc<dyn StateTree> = Arc::new(MemoryTree::default());
        let mut history = SchemaHistory::load(Arc::clone(&store)).unwrap();
        let v1 = TableInfo {
            db: "d".into(),
            table: "t".into(),
            columns: vec![col("id", "int", "int(11)")],
            key: vec![0],
        };
        let mut v2 = v1.clone();
        v2.columns.push(col("extra", "text", "text"));
        history.record(v1.clone(), &at("bin.000001", 100)).unwrap();
        history.record(v2.clone(), &at("bin.000002", 50)).unwrap();
        // The same columns again are no new version.
        history.record(v2.clone(), &at("bin.000002", 90)).unwrap();
        let reloaded = SchemaHistory::load(store).unwrap();
        for h in [&history, &reloaded] {
            assert!(h.at("d.t", &at("bin.000001", 99)).is_none());
            assert_eq!(h.at("d.t", &at("bin.000001", 5000)).unwrap().info, v1);
            assert_eq!(h.at("d.t", &at("bin.000002", 50)).unwrap().info, v2);
            assert_eq!(h.at("d.t", &at("bin.000010", 4)).unwrap().info, v2);
            assert!(h.has_version_at("d.t", &at("bin.000002", 50)));
            assert!(!h.has_version_at("d.t", &at("bin.000002", 90)));
        }
    }
}
