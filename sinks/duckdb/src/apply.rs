//! Applying net changes to a target table in bulk.
//!
//! ```text
//!  net changes ─encode─▶ Appender ─▶ temp staging table ─▶ INSERT INTO t SELECT .. FROM stage
//!                        (or, if the appender refuses      ON CONFLICT (key) DO UPDATE SET ..
//!                         a value, multi-row INSERTs)     DELETE FROM t USING stage WHERE keys match
//! ```
//!
//! A statement per table and batch, not per row. Upserts are grouped by the set of columns the
//! source did not send (`unchanged`), so a column is never overwritten with a value the source
//! did not send. Everything runs in the sink's open DuckDB transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cdc_core::batch::NetChange;
use cdc_core::{PipelineError, SourceMeta, TableSchema, Value};
use duckdb::types::{TimeUnit, Value as Duck};
use duckdb::{appender_params_from_iter, params_from_iter, Connection};

use crate::ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
use crate::encode::{StageKind, Unencodable};
use crate::{duck_error, quote_ident};

/// Values bound per multi-row INSERT on the fallback path.
const FALLBACK_PARAMS_PER_INSERT: usize = 4096;

pub struct Target<'a> {
    /// Quoted `schema.table`.
    pub name: &'a str,
    pub schema: &'a TableSchema,
    /// The target table's columns (name, type in `duckdb_columns()` spelling).
    pub columns: &'a [(String, String)],
    pub soft_delete: bool,
    pub metadata: bool,
}

impl Target<'_> {
    fn column_type(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }

    /// `CAST(s."c" AS <target type>)`: staged text and wider staged numbers become the target's
    /// type exactly (or fail with DuckDB's reason).
    fn cast(&self, column: &str) -> String {
        let quoted = format!("s.{}", quote_ident(column));
        match self.column_type(column) {
            Some(t) => format!("CAST({quoted} AS {t})"),
            None => quoted,
        }
    }
}

/// The columns of a staging table and their kinds.
struct Stage {
    /// Unquoted name, in the temp catalog.
    name: String,
    columns: Vec<(String, StageKind)>,
}

impl Stage {
    fn sql_name(&self) -> String {
        format!("temp.main.{}", quote_ident(&self.name))
    }
}

pub fn deletes(
    conn: &Connection,
    target: &Target<'_>,
    changes: &[NetChange],
    counter: &mut u64,
) -> Result<(), PipelineError> {
    if changes.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = target.schema.key_names().collect();
    let rows: Vec<(Vec<Option<&Value>>, &SourceMeta)> = changes
        .iter()
        .filter_map(|change| match change {
            NetChange::Delete { key, source } => {
                Some((keys.iter().map(|k| key.get(k)).collect(), source))
            }
            NetChange::Upsert { .. } => None,
        })
        .collect();
    let stage = stage(conn, target, &keys, &rows, counter)?;
    let stage_name = stage.sql_name();
    let matches = keys
        .iter()
        .map(|k| format!("t.{} = {}", quote_ident(k), target.cast(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = if target.soft_delete {
        let mut set = vec![format!("{} = true", quote_ident(DELETED_COLUMN))];
        if target.metadata {
            for c in [POSITION_COLUMN, COMMIT_TS_COLUMN] {
                set.push(format!("{0} = s.{0}", quote_ident(c)));
            }
        }
        format!(
            "UPDATE {} AS t SET {} FROM {stage_name} AS s WHERE {matches}",
            target.name,
            set.join(", ")
        )
    } else {
        format!(
            "DELETE FROM {} AS t USING {stage_name} AS s WHERE {matches}",
            target.name
        )
    };
    conn.execute_batch(&format!("{sql}; DROP TABLE {stage_name}"))
        .map_err(|e| duck_error(e, &format!("applying deletes to {}", target.name)))
}

pub fn upserts(
    conn: &Connection,
    target: &Target<'_>,
    changes: &[NetChange],
    counter: &mut u64,
) -> Result<(), PipelineError> {
    // Rows that left different columns unchanged need different statements.
    let mut groups: BTreeMap<Vec<&str>, Vec<&NetChange>> = BTreeMap::new();
    for change in changes {
        if let NetChange::Upsert { unchanged, .. } = change {
            let mut key: Vec<&str> = unchanged.iter().map(|c| &**c).collect();
            key.sort_unstable();
            groups.entry(key).or_default().push(change);
        }
    }
    let keys: Vec<&str> = target.schema.key_names().collect();
    for (unchanged, group) in groups {
        let columns: Vec<&str> = target
            .schema
            .columns
            .iter()
            .map(|c| &*c.name)
            .filter(|c| !unchanged.contains(c))
            .collect();
        let rows: Vec<(Vec<Option<&Value>>, &SourceMeta)> = group
            .iter()
            .filter_map(|change| match change {
                NetChange::Upsert { row, source, .. } => {
                    Some((columns.iter().map(|c| row.get(c)).collect(), source))
                }
                NetChange::Delete { .. } => None,
            })
            .collect();
        let stage = stage(conn, target, &columns, &rows, counter)?;
        let stage_name = stage.sql_name();
        let mut insert_columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let mut select: Vec<String> = columns.iter().map(|c| target.cast(c)).collect();
        if target.metadata {
            for c in [POSITION_COLUMN, COMMIT_TS_COLUMN] {
                insert_columns.push(quote_ident(c));
                select.push(format!("s.{}", quote_ident(c)));
            }
        }
        if target.soft_delete {
            insert_columns.push(quote_ident(DELETED_COLUMN));
            select.push("false".into());
        }
        let key_list: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
        let updates: Vec<String> = insert_columns
            .iter()
            .filter(|c| !key_list.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {stage_name} AS s ON CONFLICT ({}) {conflict}; DROP TABLE {stage_name}",
            target.name,
            insert_columns.join(", "),
            select.join(", "),
            key_list.join(", "),
        );
        conn.execute_batch(&sql)
            .map_err(|e| duck_error(e, &format!("applying upserts to {}", target.name)))?;
    }
    Ok(())
}

/// Creates a staging table for `columns` (and the metadata columns) and loads `rows` into it.
fn stage(
    conn: &Connection,
    target: &Target<'_>,
    columns: &[&str],
    rows: &[(Vec<Option<&Value>>, &SourceMeta)],
    counter: &mut u64,
) -> Result<Stage, PipelineError> {
    *counter += 1;
    let mut stage = Stage {
        name: format!("_cdc_stage_{counter}"),
        columns: columns
            .iter()
            .map(|c| {
                let column_type = target.schema.column(c).map(|s| &s.column_type);
                let kind = match column_type {
                    Some(t) => StageKind::for_column(t, target.column_type(c)),
                    None => StageKind::Text,
                };
                (c.to_string(), kind)
            })
            .collect(),
    };
    // Column by column: a column whose values the typed staging type cannot take is staged as
    // text for this batch.
    let mut encoded: Vec<std::vec::IntoIter<Duck>> = Vec::with_capacity(columns.len() + 2);
    for (i, (name, kind)) in stage.columns.iter_mut().enumerate() {
        let values = encode_column(kind, rows.iter().map(|(values, _)| values[i]))
            .map_err(|why| unfit(target, name, why))?;
        encoded.push(values.into_iter());
    }
    if target.metadata {
        encoded.push(
            rows.iter()
                .map(|(_, meta)| Duck::Text(meta.position.to_string()))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        encoded.push(
            rows.iter()
                .map(|(_, meta)| commit_ts(meta))
                .collect::<Vec<_>>()
                .into_iter(),
        );
    }
    let rows: Vec<Vec<Duck>> = (0..rows.len())
        .map(|_| {
            encoded
                .iter_mut()
                .map(|column| column.next().unwrap_or(Duck::Null))
                .collect()
        })
        .collect();

    let mut definitions: Vec<String> = stage
        .columns
        .iter()
        .map(|(name, kind)| format!("{} {}", quote_ident(name), kind.sql_type()))
        .collect();
    if target.metadata {
        definitions.push(format!("{} VARCHAR", quote_ident(POSITION_COLUMN)));
        definitions.push(format!(
            "{} TIMESTAMP WITH TIME ZONE",
            quote_ident(COMMIT_TS_COLUMN)
        ));
    }
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE {} ({})",
        quote_ident(&stage.name),
        definitions.join(", ")
    ))
    .map_err(|e| duck_error(e, &format!("staging changes for {}", target.name)))?;
    load(conn, &stage, &rows, target)?;
    Ok(stage)
}

fn encode_column<'v>(
    kind: &mut StageKind,
    values: impl Iterator<Item = Option<&'v Value>> + Clone,
) -> Result<Vec<Duck>, String> {
    let encode = |kind: &StageKind| {
        values
            .clone()
            .map(|v| kind.encode(v.unwrap_or(&Value::Null)))
            .collect::<Result<Vec<_>, _>>()
    };
    match encode(kind) {
        Ok(column) => Ok(column),
        Err(Unencodable::Unfit(why)) => Err(why),
        Err(Unencodable::TryText) => {
            *kind = kind.as_text();
            encode(kind).map_err(|e| match e {
                Unencodable::Unfit(why) => why,
                Unencodable::TryText => "a value of an unexpected kind".into(),
            })
        }
    }
}

fn unfit(target: &Target<'_>, column: &str, why: String) -> PipelineError {
    PipelineError::definite(
        "sink",
        format!("column {}.{column}: {why}", target.name),
    )
    .with_hint(format!(
        "ALTER TABLE {} ALTER COLUMN {} TYPE VARCHAR in the DuckDB file (it then holds the value's text), then restart: nothing is lost, the pipeline resumes at this change",
        target.name,
        quote_ident(column)
    ))
}

fn commit_ts(meta: &SourceMeta) -> Duck {
    match meta
        .commit_ts
        .as_deref()
        .and_then(cdc_core::time::parse_utc_micros)
    {
        Some(micros) => Duck::Timestamp(TimeUnit::Microsecond, micros),
        None => Duck::Null,
    }
}

/// Batches the appender refused and the INSERT path loaded (tests check the appender takes the
/// common types).
pub(crate) static APPENDER_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Fills the staging table with the appender; if it refuses the batch (a value it cannot take),
/// with prepared multi-row INSERTs instead. Lists go the INSERT way at once: the appender of the
/// DuckDB C API this build links (1.5) takes no list values.
fn load(
    conn: &Connection,
    stage: &Stage,
    rows: &[Vec<Duck>],
    target: &Target<'_>,
) -> Result<(), PipelineError> {
    if rows.iter().flatten().any(|v| matches!(v, Duck::List(_))) {
        return insert_rows(conn, &stage.sql_name(), rows)
            .map_err(|e| duck_error(e, &format!("staging changes for {}", target.name)));
    }
    let Err(refused) = append_rows(conn, &stage.name, rows) else {
        return Ok(());
    };
    APPENDER_FALLBACKS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(table = %target.name, error = %refused, "the appender refused this batch; loading it with INSERT statements instead");
    let stage_name = stage.sql_name();
    conn.execute_batch(&format!("DELETE FROM {stage_name}"))
        .map_err(|e| duck_error(e, "clearing the staging table"))?;
    insert_rows(conn, &stage_name, rows)
        .map_err(|e| duck_error(e, &format!("staging changes for {}", target.name)))
}

/// The bulk path: DuckDB's appender into the temp table `stage`.
fn append_rows(conn: &Connection, stage: &str, rows: &[Vec<Duck>]) -> duckdb::Result<()> {
    let mut appender = conn.appender_to_catalog_and_db(stage, "temp", "main")?;
    for row in rows {
        appender.append_row(appender_params_from_iter(row.iter()))?;
    }
    appender.flush()
}

/// The fallback: multi-row INSERTs with bound parameters into `stage` (a qualified name).
///
/// A list is spelled `list_value(?, …)` with its elements bound one by one: the DuckDB C API
/// this build links (1.5) cannot bind a list parameter. The statement text then depends on the
/// lists' lengths, so such rows are not grouped by a cached statement per width.
fn insert_rows(conn: &Connection, stage: &str, rows: &[Vec<Duck>]) -> duckdb::Result<()> {
    let width = rows.first().map_or(1, Vec::len).max(1);
    let per_insert = (FALLBACK_PARAMS_PER_INSERT / width).max(1);
    for chunk in rows.chunks(per_insert) {
        let mut values = Vec::with_capacity(chunk.len());
        let mut params: Vec<&Duck> = Vec::with_capacity(chunk.len() * width);
        for row in chunk {
            let mut placeholders = Vec::with_capacity(row.len());
            for value in row {
                match value {
                    Duck::List(items) => {
                        placeholders
                            .push(format!("list_value({})", vec!["?"; items.len()].join(", ")));
                        params.extend(items.iter());
                    }
                    other => {
                        placeholders.push("?".to_string());
                        params.push(other);
                    }
                }
            }
            values.push(format!("({})", placeholders.join(", ")));
        }
        let sql = format!("INSERT INTO {stage} VALUES {}", values.join(", "));
        conn.prepare_cached(&sql)?
            .execute(params_from_iter(params))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::StageKind;

    #[test]
    fn the_insert_fallback_stages_what_the_appender_does() {
        let conn = Connection::open_in_memory().unwrap();
        let kinds = [
            StageKind::Int,
            StageKind::Decimal,
            StageKind::Blob,
            StageKind::Date,
            StageKind::TimestampTz,
            StageKind::Interval,
            StageKind::List(Box::new(StageKind::Text)),
            StageKind::List(Box::new(StageKind::Timestamp)),
        ];
        let values = [
            Value::Int(-3),
            Value::Decimal("12.50".into()),
            Value::Bytes(vec![0, 255]),
            Value::Date("infinity".into()),
            Value::TimestampTz("2026-11-26T12:45:00.5Z".into()),
            Value::Interval("P1Y-2DT3.25S".into()),
            Value::Array(vec![Value::Text("a".into()), Value::Null]),
            Value::Array(vec![Value::Timestamp("2026-11-26T12:45:00".into())]),
        ];
        let row: Vec<Duck> = kinds
            .iter()
            .zip(&values)
            .map(|(k, v)| k.encode(v).unwrap())
            .collect();
        let rows = vec![row.clone(), kinds.iter().map(|_| Duck::Null).collect(), row];
        let columns: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| format!("c{i} {}", k.sql_type()))
            .collect();
        // The appender takes no lists (DuckDB 1.5's C API): it is compared on the other columns.
        let scalars = kinds.len() - 2;
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE inserted ({}); CREATE TEMP TABLE appended ({})",
            columns.join(", "),
            columns[..scalars].join(", ")
        ))
        .unwrap();
        let scalar_rows: Vec<Vec<Duck>> = rows.iter().map(|r| r[..scalars].to_vec()).collect();
        append_rows(&conn, "appended", &scalar_rows).unwrap();
        insert_rows(&conn, "temp.main.inserted", &rows).unwrap();
        let text = |table: &str, width: usize| -> Vec<String> {
            let mut statement = conn
                .prepare(&format!(
                    "SELECT CAST(COLUMNS(*) AS VARCHAR) FROM temp.main.{table}"
                ))
                .unwrap();
            let rows = statement
                .query_map([], |r| {
                    (0..width)
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap();
            rows.map(|r| format!("{:?}", r.unwrap())).collect()
        };
        let inserted = text("inserted", kinds.len());
        let appended = text("appended", scalars);
        let inserted_scalars: Vec<String> = text("inserted", scalars);
        assert_eq!(appended, inserted_scalars);
        assert_eq!(
            inserted[0],
            r#"[Some("-3"), Some("12.50"), Some("\\x00\\xFF"), Some("infinity"), Some("2026-11-26 12:45:00.5+00"), Some("1 year -2 days 00:00:03.25"), Some("[a, NULL]"), Some("['2026-11-26 12:45:00']")]"#
        );
    }
}
