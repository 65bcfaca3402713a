//! A MySQL/MariaDB side (source or target): normalized text, hashes and key ranges in MySQL SQL.
//!
//! The session runs in UTC with utf8mb4, so `TIMESTAMP` columns read as the UTC instants the
//! agent carries and text is hashed as UTF-8 whatever the column's character set. Text keys are
//! compared under a binary no-pad collation, the order of Postgres' `COLLATE "C"`; bound values
//! are written as hex literals, never spliced in as text.

use anyhow::{Context, Result};
use async_trait::async_trait;
use cdc_core::Position;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use super::kind::{Column, Family, Kind, Pair};
use super::side::{
    is_number, key_in_list, range_predicate, Described, FetchedRow, Key, Range, Side, Summary,
    TableSpec,
};

const DELETED_COLUMN: &str = "_cdc_deleted";

/// A column as `information_schema` describes it on this side.
#[derive(Clone, Debug)]
struct MyColumn {
    name: String,
    data_type: String,
    column_type: String,
    collation: Option<String>,
    json: bool,
}

struct Prepared {
    from: String,
    /// (database, table), for catalog lookups.
    names: (String, String),
    filter: String,
    key_values: Vec<String>,
    key_order: Vec<String>,
    /// Key columns as they are (their own collation: the snapshot's order).
    key_native: Vec<String>,
    /// How each key column's bounds are written: the kind, and for text the collation.
    key_literals: Vec<(Kind, Option<String>)>,
    values: Vec<String>,
    row_md5: String,
}

pub struct MySide {
    conn: Conn,
    source: bool,
    mariadb: bool,
    /// The binary collation without trailing-space padding of this server.
    nopad_bin: &'static str,
    bytes: u64,
    prepared: Option<Prepared>,
}

pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A string literal that no sql_mode can misread: its UTF-8 bytes in hex.
fn text_literal(value: &str, collation: &str) -> String {
    if value.is_empty() {
        return format!("CONVERT('' USING utf8mb4) COLLATE {collation}");
    }
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    format!("CONVERT(X'{hex}' USING utf8mb4) COLLATE {collation}")
}

impl MySide {
    pub async fn connect(url: &str, source: bool) -> Result<MySide> {
        let url = cdc_tls::mysql::parse_url(url)
            .map_err(|e| anyhow::anyhow!("{}.url: {e}", if source { "source" } else { "sink" }))?;
        let side = if source { "source" } else { "target" };
        let mut conn = cdc_tls::mysql::connect(OptsBuilder::from_opts(url.opts), &url.tls)
            .await
            .map_err(|e| match e {
                cdc_tls::mysql::ConnectError::Tls(e) => {
                    anyhow::anyhow!("connecting to the {side}: {e}")
                }
                cdc_tls::mysql::ConnectError::Driver(e) => {
                    anyhow::Error::new(e).context(format!("connecting to the {side}"))
                }
            })?;
        conn.query_drop("SET time_zone = '+00:00', NAMES utf8mb4")
            .await
            .context("setting the session to UTC and utf8mb4")?;
        let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
        let mariadb = version.unwrap_or_default().contains("MariaDB");
        Ok(MySide {
            conn,
            source,
            mariadb,
            nopad_bin: if mariadb {
                "utf8mb4_nopad_bin"
            } else {
                "utf8mb4_0900_bin"
            },
            bytes: 0,
            prepared: None,
        })
    }

    fn role(&self) -> &'static str {
        if self.source {
            "source"
        } else {
            "target"
        }
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let started = std::time::Instant::now();
        let rows: Vec<mysql_async::Row> = self.conn.query(sql).await.with_context(|| {
            format!(
                "query on the {}: {}",
                self.role(),
                sql.chars().take(160).collect::<String>()
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let values: Vec<Option<String>> = row
                .unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(true)),
                })
                .collect();
            self.bytes += values
                .iter()
                .flatten()
                .map(|v| v.len() as u64 + 4)
                .sum::<u64>();
            out.push(values);
        }
        tracing::debug!(side = self.role(), ms = started.elapsed().as_millis() as u64, rows = out.len(), sql = %sql.chars().take(160).collect::<String>(), "verify query");
        Ok(out)
    }

    fn prepared(&self) -> Result<&Prepared> {
        self.prepared
            .as_ref()
            .context("internal error: no table opened")
    }

    async fn columns(&mut self, db: &str, table: &str) -> Result<(Vec<MyColumn>, Vec<usize>)> {
        let (db_lit, table_lit) = (
            text_literal(db, "utf8mb4_bin"),
            text_literal(table, "utf8mb4_bin"),
        );
        let rows = self
            .query(&format!(
                "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), COLLATION_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {db_lit} AND TABLE_NAME = {table_lit} \
                 ORDER BY ORDINAL_POSITION"
            ))
            .await?;
        // MariaDB's JSON is LONGTEXT with a json_valid() check.
        let checks = if self.mariadb {
            self.query(&format!(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = {db_lit} AND TABLE_NAME = {table_lit} AND CHECK_CLAUSE LIKE 'json_valid(%'"
            ))
            .await
            .unwrap_or_default()
        } else {
            vec![]
        };
        let key_names = self
            .query(&format!(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = {db_lit} AND TABLE_NAME = {table_lit} AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION"
            ))
            .await?;
        let columns: Vec<MyColumn> = rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten();
                let name = text(0).unwrap_or_default();
                let data_type = text(1).unwrap_or_default();
                let json = data_type == "json"
                    || checks.iter().any(|c| {
                        c.first()
                            .cloned()
                            .flatten()
                            .is_some_and(|clause| clause.contains(&format!("`{name}`")))
                    });
                MyColumn {
                    name,
                    data_type,
                    column_type: text(2).unwrap_or_default(),
                    collation: text(3),
                    json,
                }
            })
            .collect();
        let key = key_names
            .iter()
            .filter_map(|r| {
                let name = r.first().cloned().flatten()?;
                columns.iter().position(|c| c.name == name)
            })
            .collect();
        Ok((columns, key))
    }

    /// A key column as compared in ranges: text under the binary no-pad collation.
    fn key_order(&self, column: &str, kind: &Kind, own: &MyColumn) -> (String, Option<String>) {
        let quoted = quote_ident(column);
        if !matches!(kind, Kind::Text | Kind::Uuid) {
            return (quoted, None);
        }
        match own.collation.as_deref() {
            Some(c) if c == self.nopad_bin => (quoted, Some(c.to_string())),
            _ => (
                format!("CONVERT({quoted} USING utf8mb4) COLLATE {}", self.nopad_bin),
                Some(self.nopad_bin.to_string()),
            ),
        }
    }
}

/// `x` without trailing fractional zeros (and without a dot left bare).
fn trim_fraction(x: &str) -> String {
    format!("IF(LOCATE('.', {x}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {x})), {x})")
}

/// The normalized text of column `c` of kind `kind` on a MySQL side.
fn value_sql(
    c: &str,
    kind: &Kind,
    own: &MyColumn,
    pair: Pair,
    mariadb: bool,
    source: bool,
) -> String {
    let as_char = format!("CAST({c} AS CHAR)");
    match kind {
        Kind::Bool => format!("CASE WHEN {c} IS NULL THEN NULL WHEN {c} <> 0 THEN 't' ELSE 'f' END"),
        Kind::Int if own.data_type == "year" => format!("CAST({c} + 0 AS CHAR)"),
        Kind::Int => as_char,
        Kind::Float if pair.same_family() || !mariadb => as_char,
        // MariaDB's own canonical number form, which the Postgres side writes too.
        Kind::Float => format!(
            "TRIM(TRAILING ']' FROM TRIM(LEADING '[' FROM JSON_NORMALIZE(CONCAT('[', {c} + 0e0, ']'))))"
        ),
        Kind::Decimal => trim_fraction(&as_char),
        Kind::Text | Kind::Uuid | Kind::Interval | Kind::Other => {
            format!("CONVERT({c} USING utf8mb4)")
        }
        Kind::Json if source && pair.target != Family::Mysql && mariadb => {
            format!("JSON_NORMALIZE({c})")
        }
        Kind::Json if own.data_type == "json" => as_char,
        Kind::Json | Kind::Array(_) => format!("CONVERT({c} USING utf8mb4)"),
        Kind::Bytes if own.data_type == "bit" => {
            let bits: u32 = own
                .column_type
                .trim_start_matches("bit(")
                .trim_end_matches(')')
                .parse()
                .unwrap_or(1);
            format!("LOWER(LPAD(HEX({c}), {}, '0'))", bits.div_ceil(8) * 2)
        }
        // Geometry: its WKB, as the agent carries it.
        Kind::Bytes if is_geometry(&own.data_type) => format!("LOWER(HEX(ST_AsWKB({c})))"),
        Kind::Bytes => format!("LOWER(HEX({c}))"),
        Kind::Date => format!("NULLIF({as_char}, '0000-00-00')"),
        Kind::Time => trim_fraction(&as_char),
        Kind::Timestamp | Kind::TimestampTz => {
            format!("NULLIF({}, '0000-00-00 00:00:00')", trim_fraction(&as_char))
        }
        Kind::Set if pair.target == Family::Mysql && !source => format!("CONVERT({c} USING utf8mb4)"),
        // Into another MySQL the members travel as a JSON array of strings.
        Kind::Set if pair.target == Family::Mysql => format!(
            "IF({c} = '', '[]', CONCAT('[\"', REPLACE(CONVERT({c} USING utf8mb4), ',', '\",\"'), '\"]'))"
        ),
        Kind::Set => format!("CONVERT({c} USING utf8mb4)"),
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

/// A key bound for key column `i` as a literal.
fn key_literal(literals: &[(Kind, Option<String>)], i: usize, value: &str) -> String {
    let Some((kind, collation)) = literals.get(i) else {
        return "NULL".into();
    };
    match kind {
        Kind::Int | Kind::Decimal if is_number(value) => value.to_string(),
        Kind::Bool => if value == "t" { "1" } else { "0" }.to_string(),
        Kind::Bytes if !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("X'{value}'")
        }
        Kind::Date | Kind::Time | Kind::Timestamp | Kind::TimestampTz
            if value
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'.' | b' ')) =>
        {
            format!("'{value}'")
        }
        _ => text_literal(value, collation.as_deref().unwrap_or("utf8mb4_bin")),
    }
}

fn row_part(value: &str, kind: &Kind) -> String {
    if kind.free_text() {
        format!("COALESCE(CONCAT(LENGTH({value}), ':', {value}), '~')")
    } else {
        format!("COALESCE({value}, '~')")
    }
}

#[async_trait]
impl Side for MySide {
    async fn describe(&mut self, schema: &str, table: &str) -> Result<Option<Described>> {
        let (columns, key) = self.columns(schema, table).await?;
        if columns.is_empty() {
            return Ok(None);
        }
        Ok(Some(Described {
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    kind: Kind::of_mysql(&c.data_type, c.json),
                })
                .collect(),
            key,
        }))
    }

    async fn open(&mut self, spec: &TableSpec) -> Result<std::result::Result<(), String>> {
        self.prepared = None;
        let (own, _) = self.columns(&spec.schema, &spec.table).await?;
        if own.is_empty() {
            return Ok(Err(format!(
                "table {}.{} does not exist on the {}",
                spec.schema,
                spec.table,
                self.role()
            )));
        }
        let mut values = Vec::new();
        let mut parts = Vec::new();
        for column in &spec.columns {
            let Some(mine) = own.iter().find(|c| c.name == column.name) else {
                return Ok(Err(format!(
                    "column {} is missing on the {} ({}.{})",
                    column.name,
                    self.role(),
                    spec.schema,
                    spec.table
                )));
            };
            let value = value_sql(
                &quote_ident(&column.name),
                &column.kind,
                mine,
                spec.pair,
                self.mariadb,
                self.source,
            );
            parts.push(row_part(&value, &column.kind));
            values.push(value);
        }
        let mut key_order = Vec::new();
        let mut key_literals = Vec::new();
        for &i in &spec.key {
            let column = &spec.columns[i];
            let Some(mine) = own.iter().find(|c| c.name == column.name) else {
                continue;
            };
            let (order, collation) = self.key_order(&column.name, &column.kind, mine);
            key_order.push(order);
            key_literals.push((column.kind.clone(), collation));
        }
        let soft = spec.soft_delete && own.iter().any(|c| c.name == DELETED_COLUMN);
        let key_native = spec
            .key
            .iter()
            .map(|&i| quote_ident(&spec.columns[i].name))
            .collect();
        self.prepared = Some(Prepared {
            key_native,
            from: format!("{}.{}", quote_ident(&spec.schema), quote_ident(&spec.table)),
            names: (spec.schema.clone(), spec.table.clone()),
            filter: if soft {
                format!("NOT COALESCE({}, 0)", quote_ident(DELETED_COLUMN))
            } else {
                "TRUE".into()
            },
            key_values: spec.key.iter().map(|&i| values[i].clone()).collect(),
            key_order,
            key_literals,
            row_md5: format!("MD5(CONCAT({}))", parts.join(", '|', ")),
            values,
        });
        Ok(Ok(()))
    }

    async fn summary(&mut self, range: &Range) -> Result<Summary> {
        let p = self.prepared()?;
        let literals = p.key_literals.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&literals, i, v));
        let sql = format!(
            "SELECT CAST(COUNT(*) AS CHAR), CAST(COALESCE(SUM(CAST(CONV(LEFT({md5}, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) \
             FROM {from} WHERE {filter} AND {predicate}",
            md5 = p.row_md5,
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        let row = rows.first().context("no summary row")?;
        Ok(Summary {
            rows: row
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            sum: row.get(1).cloned().flatten().unwrap_or_default(),
        })
    }

    async fn boundaries(&mut self, range: &Range, every: u64) -> Result<Vec<Key>> {
        let p = self.prepared()?;
        let literals = p.key_literals.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&literals, i, v));
        let names: Vec<String> = (0..p.key_values.len()).map(|i| format!("k{i}")).collect();
        let selected: Vec<String> = p
            .key_values
            .iter()
            .zip(&names)
            .map(|(v, n)| format!("{v} AS {n}"))
            .collect();
        let sql = format!(
            "SELECT {names} FROM (SELECT {selected}, ROW_NUMBER() OVER (ORDER BY {order}) AS rn \
             FROM {from} WHERE {filter} AND {predicate}) s WHERE rn % {every} = 0 ORDER BY rn",
            names = names.join(", "),
            selected = selected.join(", "),
            order = p.key_order.join(", "),
            from = p.from,
            filter = p.filter,
            every = every.max(1),
        );
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    async fn bucket_summaries(
        &mut self,
        throughs: &[i128],
    ) -> Result<Option<Vec<(usize, Summary)>>> {
        let p = self.prepared()?;
        if p.key_literals.len() != 1 || p.key_literals[0].0 != Kind::Int {
            return Ok(None);
        }
        // INTERVAL() counts the thresholds at or below the key: thresholds one past each bound.
        let mut args = vec![p.key_order[0].clone()];
        args.extend(throughs.iter().map(|t| (t + 1).to_string()));
        let bucket = if throughs.is_empty() {
            "'0'".to_string()
        } else {
            format!("CAST(INTERVAL({}) AS CHAR)", args.join(", "))
        };
        let sql = format!(
            "SELECT {bucket} AS b, CAST(COUNT(*) AS CHAR), \
             CAST(COALESCE(SUM(CAST(CONV(LEFT({md5}, 15), 16, 10) AS UNSIGNED)), 0) AS CHAR) \
             FROM {from} WHERE {filter} GROUP BY b",
            md5 = p.row_md5,
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        Ok(Some(super::side::parse_buckets(rows)))
    }

    async fn int_span(&mut self, range: &Range) -> Result<Option<(i128, i128)>> {
        let p = self.prepared()?;
        let literals = p.key_literals.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&literals, i, v));
        let sql = format!(
            "SELECT CAST(MIN({k}) AS CHAR), CAST(MAX({k}) AS CHAR) FROM {from} WHERE {filter} AND {predicate}",
            k = p.key_order[0],
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        let parse = |i: usize| -> Option<i128> { rows.first()?.get(i)?.as_ref()?.parse().ok() };
        Ok(parse(0).zip(parse(1)))
    }

    async fn row_hashes(&mut self, range: &Range) -> Result<Vec<FetchedRow>> {
        let p = self.prepared()?;
        let literals = p.key_literals.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&literals, i, v));
        let sql = format!(
            "SELECT {keys}, {md5} FROM {from} WHERE {filter} AND {predicate}",
            keys = p.key_values.join(", "),
            md5 = p.row_md5,
            from = p.from,
            filter = p.filter,
        );
        let width = p.key_values.len();
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .map(|r| fetched(r, width, false))
            .collect())
    }

    async fn rows(&mut self, keys: &[Key], values: bool) -> Result<Vec<FetchedRow>> {
        let mut out = Vec::new();
        for batch in keys.chunks(super::side::KEYS_PER_QUERY) {
            let p = self.prepared()?;
            let literals = p.key_literals.clone();
            let list = key_in_list(&p.key_order, batch, &|i, v| key_literal(&literals, i, v));
            let mut selected = p.key_values.clone();
            selected.push(p.row_md5.clone());
            if values {
                selected.extend(p.values.iter().cloned());
            }
            let sql = format!(
                "SELECT {} FROM {} WHERE {} AND {list}",
                selected.join(", "),
                p.from,
                p.filter
            );
            let width = p.key_values.len();
            out.extend(
                self.query(&sql)
                    .await?
                    .into_iter()
                    .map(|r| fetched(r, width, values)),
            );
        }
        Ok(out)
    }

    async fn predecessor(&mut self, key: &Key) -> Result<Option<Key>> {
        let p = self.prepared()?;
        // Literals that take the column's collation (coercible), not a binary one.
        let literals: Vec<String> = key
            .iter()
            .zip(&p.key_literals)
            .map(|(v, (kind, _))| match kind {
                Kind::Text | Kind::Uuid if !v.is_empty() => format!(
                    "_utf8mb4 X'{}'",
                    v.bytes().map(|b| format!("{b:02x}")).collect::<String>()
                ),
                Kind::Text | Kind::Uuid => "''".to_string(),
                _ => key_literal(&[(kind.clone(), None)], 0, v),
            })
            .collect();
        let descending: Vec<String> = p.key_native.iter().map(|c| format!("{c} DESC")).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE ({}) < ({}) ORDER BY {} LIMIT 1",
            p.key_values.join(", "),
            p.from,
            p.key_native.join(", "),
            literals.join(", "),
            descending.join(", ")
        );
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .next()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect()))
    }

    async fn position(&mut self) -> Result<Option<Position>> {
        if !self.source {
            return Ok(None);
        }
        Ok(Some(
            cdc_mysql::setup::current_position(&mut self.conn)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }

    async fn estimate_rows(&mut self) -> Result<u64> {
        let (db, table) = self.prepared()?.names.clone();
        let rows = self
            .query(&format!(
                "SELECT CAST(TABLE_ROWS AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                text_literal(&db, "utf8mb4_bin"),
                text_literal(&table, "utf8mb4_bin")
            ))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    async fn delete_extra(
        &mut self,
        spec: &TableSpec,
        pipeline: &str,
        keys: &[Key],
        source: &mut dyn Side,
    ) -> Result<u64> {
        self.delete_guarded(spec, pipeline, keys, source).await
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

fn fetched(row: Vec<Option<String>>, key_width: usize, values: bool) -> FetchedRow {
    let mut fields = row.into_iter();
    let key = fields
        .by_ref()
        .take(key_width)
        .map(Option::unwrap_or_default)
        .collect();
    let hash = fields.next().flatten().unwrap_or_default();
    FetchedRow {
        key,
        hash,
        values: if values { fields.collect() } else { vec![] },
    }
}

impl MySide {
    /// Deletes (or marks deleted) the target rows with `keys` the source still lacks, holding the
    /// pipeline's `_cdc_state` row meanwhile (see the Postgres side's `delete_extra`).
    async fn delete_guarded(
        &mut self,
        spec: &TableSpec,
        pipeline: &str,
        keys: &[Key],
        source: &mut dyn Side,
    ) -> Result<u64> {
        let state = format!("{}.`_cdc_state`", quote_ident(&spec.schema));
        self.query("SET SESSION innodb_lock_wait_timeout = 1")
            .await?;
        self.query("START TRANSACTION").await?;
        let result = async {
            self.query(&format!(
                "SELECT 1 FROM {state} WHERE pipeline = {} FOR UPDATE",
                text_literal(pipeline, "utf8mb4_bin")
            ))
            .await?;
            let present: std::collections::HashSet<Key> = source
                .rows(keys, false)
                .await?
                .into_iter()
                .map(|r| r.key)
                .collect();
            let absent: Vec<Key> = keys
                .iter()
                .filter(|k| !present.contains(*k))
                .cloned()
                .collect();
            let mut deleted = 0u64;
            for batch in absent.chunks(super::side::KEYS_PER_QUERY) {
                let p = self.prepared()?;
                let literals = p.key_literals.clone();
                let list = key_in_list(&p.key_order, batch, &|i, v| key_literal(&literals, i, v));
                let sql = if spec.soft_delete {
                    format!(
                        "UPDATE {} SET {} = 1 WHERE {} AND {list}",
                        p.from,
                        quote_ident(DELETED_COLUMN),
                        p.filter
                    )
                } else {
                    format!("DELETE FROM {} WHERE {list}", p.from)
                };
                self.conn.query_drop(&sql).await?;
                deleted += self.conn.affected_rows();
            }
            Ok::<_, anyhow::Error>(deleted)
        }
        .await;
        match result {
            Ok(deleted) => {
                self.query("COMMIT").await?;
                Ok(deleted)
            }
            Err(e) => {
                let _ = self.query("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_literals_no_sql_mode_misreads() {
        let text = (Kind::Text, Some("utf8mb4_nopad_bin".to_string()));
        assert_eq!(
            key_literal(&[text], 0, "a'b"),
            "CONVERT(X'612762' USING utf8mb4) COLLATE utf8mb4_nopad_bin"
        );
        assert_eq!(key_literal(&[(Kind::Int, None)], 0, "-5"), "-5");
        assert_eq!(key_literal(&[(Kind::Bool, None)], 0, "t"), "1");
        assert_eq!(key_literal(&[(Kind::Bytes, None)], 0, "00ff"), "X'00ff'");
        assert_eq!(
            key_literal(&[(Kind::Timestamp, None)], 0, "2026-01-01 10:00:00.5"),
            "'2026-01-01 10:00:00.5'"
        );
    }
}
