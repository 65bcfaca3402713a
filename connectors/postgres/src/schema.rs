//! What the source knows about tables: relations by OID, their columns' value kinds and keys.
//!
//! pgoutput announces a relation (and again after ALTER TABLE) before its first change; the
//! column types it names are resolved here, built-ins from a table, the rest (domains, enums,
//! arrays of them) from the catalog over a side connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cdc_core::{ColumnSchema, ColumnType, Name, PipelineError, TableSchema};

use crate::errors::classify;
use crate::values::{builtin_kind, ValueKind};
use crate::wire::{ConnectParams, Connection, QueryResult, RowFields, WireError};

/// Session settings that fix the text form of values (see `values.rs`): ISO dates, UTC, ISO-8601
/// intervals, shortest exact floats, hex bytea, UTF-8.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Name,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub kind: ValueKind,
    /// Part of the replica identity as the server announced it.
    pub identity: bool,
}

#[derive(Debug)]
pub struct Relation {
    pub oid: u32,
    pub schema: Name,
    pub name: Name,
    pub columns: Vec<Column>,
    /// Indexes of the record's key columns: the primary key, else the replica identity.
    pub key: Vec<usize>,
    /// Whether the pipeline replicates this table.
    pub included: bool,
    /// The portable description events carry to sinks.
    pub table_schema: Arc<TableSchema>,
}

impl Relation {
    /// Builds a relation, describing its columns' types for sinks (one catalog query).
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        catalog: &mut Catalog,
        oid: u32,
        schema: &str,
        name: &str,
        columns: Vec<Column>,
        key: Vec<usize>,
        key_is_unique: bool,
        included: bool,
    ) -> Result<Relation, PipelineError> {
        let type_names = if included && !columns.is_empty() {
            format_types(catalog, &columns).await?
        } else {
            vec![]
        };
        let schema = Name::new(schema);
        let name = Name::new(name);
        let table_schema = Arc::new(TableSchema {
            schema,
            table: name,
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let source_type = type_names.get(i).cloned().unwrap_or_default();
                    ColumnSchema {
                        name: c.name,
                        column_type: column_type(
                            c.type_oid,
                            c.type_modifier,
                            &c.kind,
                            &source_type,
                        ),
                        source_type,
                    }
                })
                .collect(),
            // A whole-row identity (REPLICA IDENTITY FULL, no key) identifies no single row:
            // sinks that apply by key must know there is none.
            key: if key_is_unique { key.clone() } else { vec![] },
        });
        Ok(Relation {
            oid,
            schema,
            name,
            columns,
            key,
            included,
            table_schema,
        })
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A lazily (re)connected ordinary connection for catalog queries.
pub struct Catalog {
    params: ConnectParams,
    conn: Option<Connection>,
}

impl Catalog {
    pub fn new(params: ConnectParams) -> Self {
        Catalog { params, conn: None }
    }

    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, PipelineError> {
        let result = self.connection().await?.simple_query(sql).await;
        result.map_err(|e| self.failed(e))
    }

    /// [`Catalog::query`] that hands each row to `on_row` as it arrives (see
    /// [`Connection::simple_query_each`]).
    pub async fn query_each<F>(&mut self, sql: &str, on_row: F) -> Result<(), PipelineError>
    where
        F: FnMut(RowFields<'_>) -> Result<(), WireError> + Send,
    {
        let result = self
            .connection()
            .await?
            .simple_query_each(sql, on_row)
            .await;
        result.map_err(|e| self.failed(e))
    }

    async fn connection(&mut self) -> Result<&mut Connection, PipelineError> {
        if self.conn.is_none() {
            let conn = Connection::connect(&self.params, false, SESSION_SETTINGS)
                .await
                .map_err(|e| classify(e, "connecting to the source", &self.params.user))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| PipelineError::transient("connection", "catalog connection lost"))
    }

    /// A query failed: a lost connection is dropped (the next query makes a new one).
    fn failed(&mut self, e: WireError) -> PipelineError {
        if e.is_connection_error() {
            self.conn = None;
        }
        classify(e, "querying the source catalog", &self.params.user)
    }

    /// Whether the open connection runs over TLS (false when none is open).
    pub fn is_tls(&self) -> bool {
        self.conn.as_ref().is_some_and(Connection::is_tls)
    }

    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Value kinds by type OID, resolved once per OID.
#[derive(Default)]
pub struct TypeCache {
    kinds: HashMap<u32, ValueKind>,
}

impl TypeCache {
    pub fn forget(&mut self, oid: u32) {
        self.kinds.remove(&oid);
    }

    pub fn resolve<'a>(
        &'a mut self,
        oid: u32,
        catalog: &'a mut Catalog,
    ) -> Pin<Box<dyn Future<Output = Result<ValueKind, PipelineError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(kind) = builtin_kind(oid) {
                return Ok(kind);
            }
            if let Some(kind) = self.kinds.get(&oid) {
                return Ok(kind.clone());
            }
            let r = catalog
                .query(&format!(
                    "SELECT typtype, typbasetype, typelem, typdelim, typcategory FROM pg_type WHERE oid = {oid}"
                ))
                .await?;
            let kind = if r.rows.is_empty() {
                ValueKind::Text
            } else {
                let field = |c: &str| r.get(0, c).unwrap_or("").to_string();
                let base: u32 = field("typbasetype").parse().unwrap_or(0);
                let elem: u32 = field("typelem").parse().unwrap_or(0);
                if field("typtype") == "d" && base != 0 {
                    self.resolve(base, catalog).await?
                } else if field("typcategory") == "A" && elem != 0 {
                    let delimiter = field("typdelim").bytes().next().unwrap_or(b',');
                    ValueKind::Array {
                        element: Box::new(self.resolve(elem, catalog).await?),
                        delimiter,
                    }
                } else {
                    // Enums, ranges, composites, extension types: their text form.
                    ValueKind::Text
                }
            };
            self.kinds.insert(oid, kind.clone());
            Ok(kind)
        })
    }
}

/// Names of the primary-key columns of a table, in key order (empty when it has none).
pub async fn primary_key(catalog: &mut Catalog, oid: u32) -> Result<Vec<String>, PipelineError> {
    index_columns(catalog, oid, "i.indisprimary").await
}

/// The columns that identify a row: the primary key, else the replica-identity index; empty
/// when neither exists (REPLICA IDENTITY FULL: the whole row).
pub async fn identity_columns(
    catalog: &mut Catalog,
    oid: u32,
) -> Result<Vec<String>, PipelineError> {
    let pk = primary_key(catalog, oid).await?;
    if !pk.is_empty() {
        return Ok(pk);
    }
    index_columns(catalog, oid, "i.indisreplident").await
}

async fn index_columns(
    catalog: &mut Catalog,
    oid: u32,
    which: &str,
) -> Result<Vec<String>, PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT a.attname FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = {oid} AND {which} ORDER BY k.n"
        ))
        .await?;
    Ok(r.rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect())
}

/// The key of a relation: its primary key where it has one (even under REPLICA IDENTITY FULL,
/// where the server flags every column), else the replica-identity columns.
pub fn key_indexes(columns: &[Column], primary_key: &[String]) -> Vec<usize> {
    let from_pk: Vec<usize> = primary_key
        .iter()
        .filter_map(|k| columns.iter().position(|c| &*c.name == k))
        .collect();
    if !from_pk.is_empty() && from_pk.len() == primary_key.len() {
        return from_pk;
    }
    columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.identity)
        .map(|(i, _)| i)
        .collect()
}

/// The server's names of the columns' types (`numeric(10,2)`, `character varying(20)`), in order.
async fn format_types(
    catalog: &mut Catalog,
    columns: &[Column],
) -> Result<Vec<String>, PipelineError> {
    let oids: Vec<String> = columns.iter().map(|c| c.type_oid.to_string()).collect();
    let mods: Vec<String> = columns
        .iter()
        .map(|c| c.type_modifier.to_string())
        .collect();
    let r = catalog
        .query(&format!(
            "SELECT format_type(o, m) AS t FROM unnest('{{{}}}'::oid[], '{{{}}}'::int[]) WITH ORDINALITY AS x(o, m, n) ORDER BY n",
            oids.join(","),
            mods.join(",")
        ))
        .await?;
    Ok((0..r.rows.len())
        .map(|i| r.get(i, "t").unwrap_or_default().to_string())
        .collect())
}

/// Postgres OIDs below this are built into every server (FirstGenbkiObjectId).
const FIRST_USER_OID: u32 = 10_000;

/// The portable type of a column, from its type OID and modifier (and, for domains, enums and
/// arrays resolved through the catalog, its value kind).
pub fn column_type(oid: u32, typmod: i32, kind: &ValueKind, source_type: &str) -> ColumnType {
    let len = (typmod >= 4).then(|| (typmod - 4) as u32);
    match oid {
        16 => ColumnType::Bool,
        21 => ColumnType::Int16,
        23 => ColumnType::Int32,
        20 => ColumnType::Int64,
        700 => ColumnType::Float32,
        701 => ColumnType::Float64,
        1700 => ColumnType::Decimal {
            precision: len.map(|l| (l >> 16) & 0xffff),
            scale: len.map(|l| l & 0xffff),
        },
        25 => ColumnType::Text { max_len: None },
        1043 | 1042 => ColumnType::Text { max_len: len },
        114 | 3802 => ColumnType::Json,
        17 => ColumnType::Bytes,
        2950 => ColumnType::Uuid,
        1082 => ColumnType::Date,
        1083 => ColumnType::Time,
        1114 => ColumnType::Timestamp,
        1184 => ColumnType::TimestampTz,
        1186 => ColumnType::Interval,
        _ => match kind {
            // Domains over built-ins and arrays: by the kind their values decode as.
            ValueKind::Array { element, .. } => ColumnType::Array(Box::new(column_type(
                element_oid(element),
                -1,
                element,
                source_type.trim_end_matches("[]"),
            ))),
            ValueKind::Bool => ColumnType::Bool,
            ValueKind::Int => ColumnType::Int64,
            ValueKind::Float => ColumnType::Float64,
            ValueKind::Numeric => ColumnType::Decimal {
                precision: None,
                scale: None,
            },
            ValueKind::Json => ColumnType::Json,
            ValueKind::Bytea => ColumnType::Bytes,
            ValueKind::Date => ColumnType::Date,
            ValueKind::Time => ColumnType::Time,
            ValueKind::Timestamp => ColumnType::Timestamp,
            ValueKind::TimestampTz => ColumnType::TimestampTz,
            ValueKind::Interval => ColumnType::Interval,
            ValueKind::Text => ColumnType::Other {
                name: source_type.to_string(),
                builtin: oid < FIRST_USER_OID,
            },
        },
    }
}

/// A representative built-in OID for a value kind (array elements carry only their kind).
fn element_oid(kind: &ValueKind) -> u32 {
    match kind {
        ValueKind::Bool => 16,
        ValueKind::Int => 20,
        ValueKind::Float => 701,
        ValueKind::Numeric => 1700,
        ValueKind::Json => 3802,
        ValueKind::Bytea => 17,
        ValueKind::Date => 1082,
        ValueKind::Time => 1083,
        ValueKind::Timestamp => 1114,
        ValueKind::TimestampTz => 1184,
        ValueKind::Interval => 1186,
        ValueKind::Text | ValueKind::Array { .. } => 0,
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (standard_conforming_strings is on since Postgres 9.1).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
