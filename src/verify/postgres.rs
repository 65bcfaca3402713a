//! A Postgres side (source or target): normalized text, hashes and key ranges in Postgres SQL.
//!
//! The connection uses the source connector's session settings (ISO dates, UTC, ISO-8601
//! intervals, shortest exact floats, hex bytea), so `::text` already gives most normalized forms.
//! Across database families, floats and JSON meet MariaDB's canonical forms through two
//! temporary functions (`pg_temp.cdc_number`, `pg_temp.cdc_json`, created on first use).

use anyhow::{Context, Result};
use async_trait::async_trait;
use cdc_core::{Lsn, Position};
use cdc_postgres::schema::{quote_ident, quote_literal, SESSION_SETTINGS};
use cdc_postgres::wire::{ConnectParams, Connection};

use super::kind::{Column, Family, Kind, Pair};
use super::side::{
    is_number, key_in_list, range_predicate, Described, FetchedRow, Key, Range, Side, Summary,
    TableSpec,
};

/// The soft-delete column of warehouse targets.
const DELETED_COLUMN: &str = "_cdc_deleted";

/// MariaDB's `JSON_NORMALIZE` number form (`1.5E0`, `-2.5E-7`, `0.0E0`) from a number's text,
/// and its JSON document form (keys sorted bytewise, no spaces): what a MariaDB side computes
/// natively.
const TEMP_FUNCTIONS: &str = r#"
CREATE OR REPLACE FUNCTION pg_temp.cdc_number(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $f$
DECLARE
  body text := lower(ltrim(t, '-+'));
  mantissa text := split_part(body, 'e', 1);
  exponent int := coalesce(nullif(split_part(body, 'e', 2), '')::int, 0);
  whole text := split_part(mantissa, '.', 1);
  digits text := whole || split_part(mantissa, '.', 2);
  trimmed text := ltrim(digits, '0');
BEGIN
  IF body !~ '^[0-9]*\.?[0-9]*(e[-+]?[0-9]+)?$' THEN RETURN t; END IF;
  exponent := exponent + length(whole) - 1 - (length(digits) - length(trimmed));
  trimmed := rtrim(trimmed, '0');
  IF trimmed = '' THEN RETURN '0.0E0'; END IF;
  RETURN CASE WHEN left(t, 1) = '-' THEN '-' ELSE '' END || left(trimmed, 1) || '.'
    || coalesce(nullif(substr(trimmed, 2), ''), '0') || 'E' || exponent;
END $f$;
CREATE OR REPLACE FUNCTION pg_temp.cdc_json(j jsonb) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $f$
BEGIN
  RETURN CASE jsonb_typeof(j)
    WHEN 'object' THEN '{' || coalesce((SELECT string_agg(to_json(k)::text || ':' || pg_temp.cdc_json(v), ',' ORDER BY k COLLATE "C") FROM jsonb_each(j) AS e(k, v)), '') || '}'
    WHEN 'array' THEN '[' || coalesce((SELECT string_agg(pg_temp.cdc_json(v), ',' ORDER BY n) FROM jsonb_array_elements(j) WITH ORDINALITY AS a(v, n)), '') || ']'
    WHEN 'number' THEN pg_temp.cdc_number(j::text)
    ELSE j::text END;
END $f$;
"#;

/// A column as this side's catalog describes it.
#[derive(Clone, Debug)]
struct PgColumn {
    name: String,
    /// The base type's name (domains resolved): `int8`, `bpchar`, `_text`, ...
    typname: String,
    typtype: String,
    /// Arrays: the element type's name.
    element: Option<String>,
    /// `character(n)`: n.
    bpchar_len: Option<i32>,
    /// Position in the primary key (1-based), if in it.
    key_position: Option<i32>,
    /// Compares text bytewise (collation C or POSIX).
    bytewise: bool,
}

/// The SQL of the table being compared.
struct Prepared {
    from: String,
    filter: String,
    /// Normalized text of each key column, in key order.
    key_values: Vec<String>,
    /// Key columns as compared in ranges (bytewise for text), in key order.
    key_order: Vec<String>,
    /// Key columns as they are (their own collation: the snapshot's order).
    key_native: Vec<String>,
    key_kinds: Vec<Kind>,
    /// A single key column of type numeric (else integer keys fit in a bigint).
    numeric_key: bool,
    /// Normalized text of every compared column.
    values: Vec<String>,
    /// The row's hash as text (compared row by row).
    row_hash: String,
    /// The row's hash as a bigint below 2^63 (summed over ranges).
    hash_term: String,
}

pub struct PgSide {
    conn: Connection,
    source: bool,
    /// `server_version_num`.
    version: u32,
    bytes: u64,
    temp_functions: bool,
    prepared: Option<Prepared>,
}

impl PgSide {
    pub async fn connect(url: &str, source: bool) -> Result<PgSide> {
        let mut params = ConnectParams::from_url(url)
            .map_err(|e| anyhow::anyhow!("{} URL: {e}", if source { "source" } else { "sink" }))?;
        if params.application_name.is_empty() {
            params.application_name = "cdc-agent verify".into();
        }
        let conn = Connection::connect(&params, false, SESSION_SETTINGS)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to the {}: {e}",
                    if source { "source" } else { "target" }
                )
            })?;
        let mut side = PgSide {
            conn,
            source,
            version: 0,
            bytes: 0,
            temp_functions: false,
            prepared: None,
        };
        side.version = side
            .query("SHOW server_version_num")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(side)
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut rows = Vec::new();
        let mut bytes = 0u64;
        let started = std::time::Instant::now();
        self.conn
            .simple_query_each(sql, |fields| {
                let row = fields.into_owned()?;
                bytes += row
                    .iter()
                    .flatten()
                    .map(|v| v.len() as u64 + 4)
                    .sum::<u64>();
                rows.push(row);
                Ok(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("query on the {}: {}", self.role(), abbreviate(sql)))?;
        self.bytes += bytes;
        tracing::debug!(side = self.role(), ms = started.elapsed().as_millis() as u64, rows = rows.len(), sql = %abbreviate(sql), "verify query");
        Ok(rows)
    }

    fn role(&self) -> &'static str {
        if self.source {
            "source"
        } else {
            "target"
        }
    }

    fn prepared(&self) -> Result<&Prepared> {
        self.prepared
            .as_ref()
            .context("internal error: no table opened")
    }

    async fn columns(&mut self, schema: &str, table: &str) -> Result<Vec<PgColumn>> {
        let sql = format!(
            "SELECT a.attname, bt.typname, bt.typtype, CASE WHEN bt.typcategory = 'A' THEN et.typname END, \
                    CASE WHEN bt.typname = 'bpchar' AND a.atttypmod > 4 THEN a.atttypmod - 4 END, \
                    array_position(i.indkey::int2[], a.attnum), \
                    coalesce(co.collname IN ('C', 'POSIX') OR (co.collname = 'default' AND \
                      (SELECT datcollate FROM pg_database WHERE datname = current_database()) IN ('C', 'POSIX')), true) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             LEFT JOIN pg_type et ON et.oid = bt.typelem \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             LEFT JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE n.nspname = {} AND c.relname = {} AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            quote_literal(schema),
            quote_literal(table)
        );
        let rows = self.query(&sql).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten();
                PgColumn {
                    name: text(0).unwrap_or_default(),
                    typname: text(1).unwrap_or_default(),
                    typtype: text(2).unwrap_or_default(),
                    element: text(3),
                    bpchar_len: text(4).and_then(|v| v.parse().ok()),
                    key_position: text(5).and_then(|v| v.parse().ok()),
                    bytewise: text(6).as_deref() == Some("t"),
                }
            })
            .collect())
    }

    async fn ensure_temp_functions(&mut self) -> Result<()> {
        if !self.temp_functions {
            self.query(TEMP_FUNCTIONS).await.context(
                "creating the temporary functions that compare floats and JSON with MariaDB (the user needs TEMP on the database)",
            )?;
            self.temp_functions = true;
        }
        Ok(())
    }
}

/// The first line of a statement, for error messages.
fn abbreviate(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    line.chars().take(160).collect()
}

/// Whether comparing `pair` needs the temporary functions on the Postgres side.
fn needs_temp_functions(columns: &[Column], pair: Pair) -> bool {
    let other_is_mysql = pair.source == Family::Mysql || pair.target == Family::Mysql;
    other_is_mysql
        && columns.iter().any(|c| match c.kind {
            Kind::Float => true,
            // MariaDB sources' JSON meets ours through JSON_NORMALIZE.
            Kind::Json => pair.source == Family::Mysql,
            _ => false,
        })
}

/// The normalized text of column `c` of kind `kind` on a Postgres side.
fn value_sql(c: &str, kind: &Kind, own: &PgColumn, pair: Pair, source: bool) -> String {
    match kind {
        Kind::Bool => format!("left({c}::text, 1)"),
        Kind::Int | Kind::Uuid | Kind::Date | Kind::Time | Kind::Timestamp => format!("{c}::text"),
        // The type's output form, as the change record carries it (`::text` of an inet adds
        // the netmask the output leaves out).
        Kind::Other => format!("CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END"),
        // DuckDB holds months, days and microseconds: they are compared.
        Kind::Interval if pair.target == Family::Duckdb => format!(
            "((extract(year from {c}) * 12 + extract(month from {c}))::bigint::text || ',' || \
             extract(day from {c})::bigint::text || ',' || \
             (extract(hour from {c}) * 3600000000 + extract(minute from {c}) * 60000000 + extract(microseconds from {c}))::bigint::text)"
        ),
        Kind::Interval => format!("{c}::text"),
        Kind::Float if pair.same_family() => format!("{c}::text"),
        // 17 significant digits in e-notation: the double exactly, as DuckDB's format() writes it.
        Kind::Float if pair.target == Family::Duckdb => format!(
            "CASE WHEN {c}::float8 IN ('NaN', 'Infinity', '-Infinity') THEN {c}::float8::text \
             ELSE btrim(to_char({c}::float8, '9.9999999999999999EEEE')) END"
        ),
        Kind::Float => format!("pg_temp.cdc_number({c}::float8::text)"),
        Kind::Decimal => format!("trim_scale({c}::numeric)::text"),
        Kind::Text => match own.bpchar_len {
            // The change record carries char(n) padded (its output form); `::text` trims it.
            Some(n) => format!("rpad({c}::text, {n})"),
            None => format!("{c}::text"),
        },
        Kind::Json => match (pair.source, pair.target) {
            (Family::Postgres, Family::Postgres) => format!("{c}::jsonb::text"),
            (Family::Mysql, _) if !source => format!("pg_temp.cdc_json({c}::jsonb)"),
            // Into MySQL/MariaDB the document goes as the record carried it: Postgres' own text.
            _ => format!("{c}::text"),
        },
        Kind::Bytes => format!("encode({c}, 'hex')"),
        Kind::TimestampTz => format!("({c} AT TIME ZONE 'UTC')::text"),
        Kind::Set => format!("array_to_string({c}, ',')"),
        Kind::Array(element) => match pair.target {
            Family::Postgres => format!("{c}::text"),
            // Other targets hold the JSON array the change record carried.
            _ => match **element {
                Kind::Int | Kind::Bool | Kind::Json | Kind::Timestamp | Kind::Float => {
                    format!("array_to_json({c})::text")
                }
                _ => format!("array_to_json({c}::text[])::text"),
            },
        },
    }
}

/// Column `c` as a value of the same type on both Postgres sides, for hashing by type (the
/// target's type may have been widened: int to bigint or numeric, real to double, varchar to
/// text; json is jsonb there, enums and extension types are text).
fn hashable_sql(c: &str, kind: &Kind, own: &PgColumn) -> String {
    match kind {
        Kind::Int => format!("{c}::int8"),
        Kind::Float => format!("{c}::float8"),
        Kind::Decimal => format!("{c}::numeric"),
        Kind::Text => match own.bpchar_len {
            Some(n) => format!("rpad({c}::text, {n})"),
            None => format!("{c}::text"),
        },
        Kind::Json => format!("{c}::jsonb"),
        Kind::Array(element) => match **element {
            Kind::Int => format!("{c}::int8[]"),
            Kind::Float => format!("{c}::float8[]"),
            Kind::Decimal => format!("{c}::numeric[]"),
            Kind::Json => format!("{c}::jsonb[]"),
            Kind::Text | Kind::Other | Kind::Set | Kind::Array(_) => format!("{c}::text[]"),
            _ => c.to_string(),
        },
        // Types without a portable twin may have no hash function (point): their output text.
        Kind::Other => format!("CASE WHEN {c} IS NULL THEN NULL ELSE concat({c}) END"),
        _ => c.to_string(),
    }
}

/// A key bound as a literal of key column `i`'s type.
fn key_literal(kinds: &[Kind], i: usize, value: &str) -> String {
    match kinds.get(i) {
        Some(Kind::Int | Kind::Decimal) if is_number(value) => value.to_string(),
        Some(Kind::Bytes) if value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("decode('{value}', 'hex')")
        }
        _ => quote_literal(value),
    }
}

/// The part of the row text for one value: free text is length-prefixed, NULL is `~`.
fn row_part(value: &str, kind: &Kind) -> String {
    if kind.free_text() {
        format!("coalesce(octet_length({value})::text || ':' || {value}, '~')")
    } else {
        format!("coalesce({value}, '~')")
    }
}

#[async_trait]
impl Side for PgSide {
    async fn describe(&mut self, schema: &str, table: &str) -> Result<Option<Described>> {
        let columns = self.columns(schema, table).await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let mut key: Vec<(i32, usize)> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.key_position.map(|p| (p, i)))
            .collect();
        key.sort();
        Ok(Some(Described {
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    kind: Kind::of_postgres(&c.typname, &c.typtype, c.element.as_deref()),
                })
                .collect(),
            key: key.into_iter().map(|(_, i)| i).collect(),
        }))
    }

    async fn open(&mut self, spec: &TableSpec) -> Result<std::result::Result<(), String>> {
        self.prepared = None;
        let own = self.columns(&spec.schema, &spec.table).await?;
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
        let mut hashable = Vec::new();
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
                self.source,
            );
            parts.push(row_part(&value, &column.kind));
            hashable.push(hashable_sql(&quote_ident(&column.name), &column.kind, mine));
            values.push(value);
        }
        let (row_hash, hash_term) = if spec.pair.same_family() && spec.pair.record_hash {
            // Postgres on both sides: each value hashed by its type's own hash function (no
            // text made at all), the types made the same on both sides first.
            let term = format!("hash_record_extended(ROW({}), 0)", hashable.join(", "));
            (format!("{term}::text"), term)
        } else {
            let md5 = format!("md5({})", parts.join(" || '|' || "));
            let term = format!("('x' || left({md5}, 15))::bit(60)::bigint");
            (md5, term)
        };
        if needs_temp_functions(&spec.columns, spec.pair) {
            self.ensure_temp_functions().await?;
        }
        let key_order = spec
            .key
            .iter()
            .map(|&i| {
                let column = &spec.columns[i];
                let quoted = quote_ident(&column.name);
                let bytewise = own
                    .iter()
                    .find(|c| c.name == column.name)
                    .is_none_or(|c| c.bytewise);
                if matches!(column.kind, Kind::Text) && !bytewise {
                    format!("{quoted} COLLATE \"C\"")
                } else {
                    quoted
                }
            })
            .collect();
        let soft = spec.soft_delete && own.iter().any(|c| c.name == DELETED_COLUMN);
        let key_native = spec
            .key
            .iter()
            .map(|&i| quote_ident(&spec.columns[i].name))
            .collect();
        self.prepared = Some(Prepared {
            key_native,
            from: format!("{}.{}", quote_ident(&spec.schema), quote_ident(&spec.table)),
            filter: if soft {
                format!("NOT coalesce({}, false)", quote_ident(DELETED_COLUMN))
            } else {
                "TRUE".into()
            },
            key_values: spec.key.iter().map(|&i| values[i].clone()).collect(),
            key_order,
            key_kinds: spec
                .key
                .iter()
                .map(|&i| spec.columns[i].kind.clone())
                .collect(),
            numeric_key: spec.key.len() == 1
                && own
                    .iter()
                    .any(|c| c.name == spec.columns[spec.key[0]].name && c.typname == "numeric"),
            row_hash,
            hash_term,
            values,
        });
        Ok(Ok(()))
    }

    async fn summary(&mut self, range: &Range) -> Result<Summary> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT count(*)::text, coalesce(sum({term}), 0)::text \
             FROM ONLY {from} WHERE {filter} AND {predicate}",
            term = p.hash_term,
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
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let names: Vec<String> = (0..p.key_values.len()).map(|i| format!("k{i}")).collect();
        let selected: Vec<String> = p
            .key_values
            .iter()
            .zip(&names)
            .map(|(v, n)| format!("{v} AS {n}"))
            .collect();
        let sql = format!(
            "SELECT {names} FROM (SELECT {selected}, row_number() OVER (ORDER BY {order}) AS rn \
             FROM ONLY {from} WHERE {filter} AND {predicate}) s WHERE rn % {every} = 0 ORDER BY rn",
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
        if p.key_kinds != [Kind::Int] {
            return Ok(None);
        }
        let cast = if p.numeric_key { "numeric" } else { "int8" };
        // width_bucket counts the thresholds at or below the key: thresholds one past each bound.
        let thresholds: Vec<String> = throughs.iter().map(|t| (t + 1).to_string()).collect();
        // The planner cannot estimate the buckets (it guesses a group per row) and would sort
        // the whole table, spilling to disk, rather than hash a few thousand groups.
        let sql = format!(
            "SET enable_sort = off; \
             SELECT width_bucket({k}::{cast}, ARRAY[{list}]::{cast}[])::text, count(*)::text, coalesce(sum({term}), 0)::text \
             FROM ONLY {from} WHERE {filter} GROUP BY width_bucket({k}::{cast}, ARRAY[{list}]::{cast}[]); \
             RESET enable_sort",
            k = p.key_order[0],
            list = thresholds.join(","),
            term = p.hash_term,
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        Ok(Some(super::side::parse_buckets(rows)))
    }

    async fn int_span(&mut self, range: &Range) -> Result<Option<(i128, i128)>> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT min({k})::text, max({k})::text FROM ONLY {from} WHERE {filter} AND {predicate}",
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
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT {keys}, {hash} FROM ONLY {from} WHERE {filter} AND {predicate}",
            keys = p.key_values.join(", "),
            hash = p.row_hash,
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
            let kinds = p.key_kinds.clone();
            let key_columns: Vec<String> = p.key_order.clone();
            let list = key_in_list(&key_columns, batch, &|i, v| key_literal(&kinds, i, v));
            let mut selected = p.key_values.clone();
            selected.push(p.row_hash.clone());
            if values {
                selected.extend(p.values.iter().cloned());
            }
            let sql = format!(
                "SELECT {} FROM ONLY {} WHERE {} AND {list}",
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
        let kinds = p.key_kinds.clone();
        let literals: Vec<String> = key
            .iter()
            .enumerate()
            .map(|(i, v)| key_literal(&kinds, i, v))
            .collect();
        let descending: Vec<String> = p.key_native.iter().map(|c| format!("{c} DESC")).collect();
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE ({}) < ({}) ORDER BY {} LIMIT 1",
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
        let rows = self.query("SELECT pg_current_wal_lsn()::text").await?;
        let text = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .context("no WAL position")?;
        let lsn: Lsn = text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(Position::Postgres { lsn }))
    }

    async fn estimate_rows(&mut self) -> Result<u64> {
        let from = self.prepared()?.from.clone();
        let rows = self
            .query(&format!(
                "SELECT greatest(reltuples, 0)::bigint::text FROM pg_class WHERE oid = {}::regclass",
                quote_literal(&from)
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

    fn record_hash(&self) -> bool {
        self.version >= 140_000
    }
}

/// A fetched row from its fields: key columns, md5, then (with `values`) each column.
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

impl PgSide {
    /// Deletes (or with soft deletes, marks deleted) the target rows with `keys` whose keys the
    /// source still lacks, in one transaction that holds the pipeline's `_cdc_state` row: the
    /// sink commits nothing meanwhile, so a source insert of such a key committed after the
    /// source was asked is applied after this delete, never before it. Returns the rows deleted.
    async fn delete_guarded(
        &mut self,
        spec: &TableSpec,
        pipeline: &str,
        keys: &[Key],
        source: &mut dyn Side,
    ) -> Result<u64> {
        let state = format!("{}.\"_cdc_state\"", quote_ident(&spec.schema));
        // Short: the sink may hold a row this delete needs while it waits for the state row;
        // giving way is cheaper than a deadlock the server resolves against the sink.
        self.query(&format!(
            "BEGIN; SET LOCAL lock_timeout = '500ms'; SELECT 1 FROM {state} WHERE pipeline = {} FOR UPDATE",
            quote_literal(pipeline)
        ))
        .await?;
        let result = async {
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
                let kinds = p.key_kinds.clone();
                let list = key_in_list(&p.key_order, batch, &|i, v| key_literal(&kinds, i, v));
                let sql = if spec.soft_delete {
                    format!(
                        "UPDATE ONLY {} SET {} = true WHERE {} AND {list} RETURNING 1",
                        p.from,
                        quote_ident(DELETED_COLUMN),
                        p.filter
                    )
                } else {
                    format!("DELETE FROM ONLY {} WHERE {list} RETURNING 1", p.from)
                };
                deleted += self.query(&sql).await?.len() as u64;
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

    fn own(bpchar: Option<i32>) -> PgColumn {
        PgColumn {
            name: "c".into(),
            typname: "text".into(),
            typtype: "b".into(),
            element: None,
            bpchar_len: bpchar,
            key_position: None,
            bytewise: true,
        }
    }

    #[test]
    fn values_are_written_per_kind_and_pair() {
        let pg = Pair {
            source: Family::Postgres,
            target: Family::Postgres,
            record_hash: true,
        };
        let from_mysql = Pair {
            source: Family::Mysql,
            target: Family::Postgres,
            record_hash: false,
        };
        assert_eq!(
            value_sql("c", &Kind::Decimal, &own(None), pg, true),
            "trim_scale(c::numeric)::text"
        );
        assert_eq!(
            value_sql("c", &Kind::Text, &own(Some(5)), pg, true),
            "rpad(c::text, 5)"
        );
        assert_eq!(
            value_sql("c", &Kind::Json, &own(None), from_mysql, false),
            "pg_temp.cdc_json(c::jsonb)"
        );
        assert_eq!(
            value_sql("c", &Kind::Float, &own(None), from_mysql, false),
            "pg_temp.cdc_number(c::float8::text)"
        );
        assert_eq!(key_literal(&[Kind::Int], 0, "42"), "42");
        assert_eq!(key_literal(&[Kind::Int], 0, "4; x"), "'4; x'");
        assert_eq!(key_literal(&[Kind::Text], 0, "it's"), "'it''s'");
        assert_eq!(
            row_part("v", &Kind::Text),
            "coalesce(octet_length(v)::text || ':' || v, '~')"
        );
    }
}
