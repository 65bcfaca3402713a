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
use duckdb::arrow::array::ArrayRef;
use duckdb::types::{TimeUnit, Value as Duck};
use duckdb::{params_from_iter, Connection};

use crate::columnar;
use crate::ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
use crate::encode::{StageKind, Unencodable};
use crate::{duck_error, quote_ident};

/// Values bound per multi-row INSERT on the fallback path.
const FALLBACK_PARAMS_PER_INSERT: usize = 4096;

pub struct Target<'a> {
    /// Quoted `schema.table`.
    pub name: &'a str,
    /// The target schema and table, unquoted.
    pub schema_name: &'a str,
    pub table_name: &'a str,
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

/// Applies `changes`' upserts. With `bulk` set, the new rows the target lacks are appended to
/// it directly ([`append_new_rows`]); if DuckDB refuses such an append, `bulk` is cleared and
/// the error returned is transient: the retry (from the last commit) takes the staged path.
pub fn upserts(
    conn: &Connection,
    target: &Target<'_>,
    changes: &[NetChange],
    counter: &mut u64,
    bulk: &mut bool,
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
        let group = if unchanged.is_empty() && *bulk {
            append_new_rows(conn, target, group, counter, bulk)?
        } else {
            group
        };
        if group.is_empty() {
            continue;
        }
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

/// Fewer new rows than this take the staged path: the key lookup is not worth its statements.
/// (The crate's own tests take every new row this way, so that their type fixtures cover it.)
const MIN_APPENDED_ROWS: usize = if cfg!(test) { 1 } else { 64 };

/// Appends the rows of `group` that are new (`new_row`: the batch's first change to the key was
/// an insert or a snapshot read) and absent from the target straight into the target table, in
/// one columnar append, without a staging table or an upsert; returns the other rows.
///
/// Absent is checked, not assumed: a re-copied snapshot chunk, or a snapshot row a streamed
/// insert already brought, finds its key in the target. The keys alone are staged and joined
/// with the target (DuckDB skips the target's row groups outside the keys' range, so a table
/// filled in key order is hardly read); the rows found take the staged upsert.
fn append_new_rows<'c>(
    conn: &Connection,
    target: &Target<'_>,
    group: Vec<&'c NetChange>,
    counter: &mut u64,
    bulk: &mut bool,
) -> Result<Vec<&'c NetChange>, PipelineError> {
    let (fresh, mut rest): (Vec<&NetChange>, Vec<&NetChange>) = group
        .into_iter()
        .partition(|change| matches!(change, NetChange::Upsert { new_row: true, .. }));
    if fresh.len() < MIN_APPENDED_ROWS {
        rest.extend(fresh);
        return Ok(rest);
    }
    let present = present_keys(conn, target, &fresh, counter)?;
    let mut absent: Vec<&NetChange> = Vec::with_capacity(fresh.len());
    for (i, change) in fresh.into_iter().enumerate() {
        if present.contains(&i) {
            rest.push(change);
        } else {
            absent.push(change);
        }
    }
    let rows: Vec<(&cdc_core::event::Row, &SourceMeta)> = absent
        .iter()
        .filter_map(|change| match change {
            NetChange::Upsert { row, source, .. } => Some((row, source)),
            NetChange::Delete { .. } => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(rest);
    }
    let Some(arrays) = target_columns(target, &rows)? else {
        // A list column: the staged path takes them.
        rest.extend(absent);
        return Ok(rest);
    };
    let appended = columnar::append(conn, None, target.schema_name, target.table_name, arrays);
    if let Err(refused) = appended {
        *bulk = false;
        tracing::warn!(table = %target.name, error = %refused, "DuckDB refused new rows appended to the table; applying its changes as upserts from now on");
        return Err(PipelineError::transient(
            "sink",
            format!("appending new rows to {}: {refused}", target.name),
        ));
    }
    DIRECT_APPENDS.fetch_add(1, Ordering::Relaxed);
    Ok(rest)
}

/// Appends of new rows straight into a target table (tests check the path is taken).
pub(crate) static DIRECT_APPENDS: AtomicU64 = AtomicU64::new(0);

/// The indexes into `fresh` of the rows whose key the target has.
fn present_keys(
    conn: &Connection,
    target: &Target<'_>,
    fresh: &[&NetChange],
    counter: &mut u64,
) -> Result<std::collections::HashSet<usize>, PipelineError> {
    if key_range_is_empty(conn, target, fresh)? {
        return Ok(std::collections::HashSet::new());
    }
    *counter += 1;
    let name = format!("_cdc_keys_{counter}");
    let keys: Vec<&str> = target.schema.key_names().collect();
    let mut kinds: Vec<(String, StageKind)> = keys
        .iter()
        .map(|k| (k.to_string(), stage_kind(target, k)))
        .collect();
    let rows: Vec<Vec<Option<&Value>>> = fresh
        .iter()
        .map(|change| match change {
            NetChange::Upsert { row, .. } => keys.iter().map(|k| row.get(k)).collect(),
            NetChange::Delete { key, .. } => keys.iter().map(|k| key.get(k)).collect(),
        })
        .collect();
    let mut columns: Vec<(String, ArrayRef)> = Vec::with_capacity(keys.len() + 1);
    let index: Vec<Duck> = (0..rows.len()).map(|i| Duck::BigInt(i as i64)).collect();
    columns.push((ROW_INDEX_COLUMN.into(), arrow(&StageKind::Int, &index)?));
    for (i, (key, kind)) in kinds.iter_mut().enumerate() {
        let values = encode_column(kind, rows.iter().map(|r| r[i]))
            .map_err(|why| unfit(target, key, why))?;
        columns.push((key.clone(), arrow(kind, &values)?));
    }
    let mut definitions = vec![format!("{} BIGINT", quote_ident(ROW_INDEX_COLUMN))];
    definitions.extend(
        kinds
            .iter()
            .map(|(key, kind)| format!("{} {}", quote_ident(key), kind.sql_type())),
    );
    let doing = format!("looking up new rows' keys in {}", target.name);
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE {} ({})",
        quote_ident(&name),
        definitions.join(", ")
    ))
    .map_err(|e| duck_error(e, &doing))?;
    columnar::append(conn, Some("temp"), "main", &name, columns)
        .map_err(|e| duck_error(e, &doing))?;
    let matches = keys
        .iter()
        .map(|k| format!("t.{} = {}", quote_ident(k), target.cast(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    // An inner join, so that DuckDB builds its hash table on the (small) staged keys and
    // probes the target; a target key is unique, so a staged row matches at most once.
    let sql = format!(
        "SELECT s.{} FROM temp.main.{} AS s JOIN {} AS t ON {matches}",
        quote_ident(ROW_INDEX_COLUMN),
        quote_ident(&name),
        target.name
    );
    let present = {
        let mut statement = conn.prepare(&sql).map_err(|e| duck_error(e, &doing))?;
        let found = statement
            .query_map([], |row| row.get::<_, i64>(0))
            .map_err(|e| duck_error(e, &doing))?;
        found
            .map(|i| i.map(|i| i as usize))
            .collect::<Result<std::collections::HashSet<usize>, _>>()
            .map_err(|e| duck_error(e, &doing))?
    };
    conn.execute_batch(&format!("DROP TABLE temp.main.{}", quote_ident(&name)))
        .map_err(|e| duck_error(e, &doing))?;
    Ok(present)
}

/// True if the target has no row in the range of `fresh`'s keys, for a single integer key: one
/// count that DuckDB answers from its row groups' min/max where the table grew in key order
/// (a snapshot, inserts of a sequence). False when it has or the key is of another kind: the
/// caller then looks the keys up one by one.
fn key_range_is_empty(
    conn: &Connection,
    target: &Target<'_>,
    fresh: &[&NetChange],
) -> Result<bool, PipelineError> {
    let mut keys = target.schema.key_names();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Ok(false);
    };
    // Compared as the target's integers: a key kept in another type (text) is looked up.
    if !matches!(
        target.column_type(key),
        Some("BIGINT" | "INTEGER" | "SMALLINT" | "TINYINT")
    ) {
        return Ok(false);
    }
    let mut range: Option<(i64, i64)> = None;
    for change in fresh {
        let NetChange::Upsert { row, .. } = change else {
            return Ok(false);
        };
        let Some(Value::Int(k)) = row.get(key) else {
            return Ok(false);
        };
        range = Some(match range {
            None => (*k, *k),
            Some((low, high)) => (low.min(*k), high.max(*k)),
        });
    }
    let Some((low, high)) = range else {
        return Ok(false);
    };
    let doing = format!("looking up new rows' keys in {}", target.name);
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {} BETWEEN ? AND ?",
        target.name,
        quote_ident(key)
    );
    let count: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row([low, high], |row| row.get(0)))
        .map_err(|e| duck_error(e, &doing))?;
    Ok(count == 0)
}

/// The row index column of a key lookup's staging table.
const ROW_INDEX_COLUMN: &str = "_cdc_row";

/// `values` as an Arrow array of `kind`, or the error that says this kind cannot be one (a list
/// key, which no source has).
fn arrow(kind: &StageKind, values: &[Duck]) -> Result<ArrayRef, PipelineError> {
    columnar::arrow_column(kind, values).ok_or_else(|| {
        PipelineError::definite(
            "sink",
            format!(
                "a key column staged as {} cannot be looked up",
                kind.sql_type()
            ),
        )
    })
}

/// The target table's columns, in its order, for `rows`: the source's values, `false` for the
/// soft-delete flag, the change's position and commit time, NULL for a column the source does
/// not have. `None` if one of them is a list.
fn target_columns(
    target: &Target<'_>,
    rows: &[(&cdc_core::event::Row, &SourceMeta)],
) -> Result<Option<Vec<(String, ArrayRef)>>, PipelineError> {
    let mut out = Vec::with_capacity(target.columns.len());
    for (name, _) in target.columns {
        let (kind, values) = if target.soft_delete && name == DELETED_COLUMN {
            (StageKind::Bool, vec![Duck::Boolean(false); rows.len()])
        } else if target.metadata && name == POSITION_COLUMN {
            let positions = rows
                .iter()
                .map(|(_, meta)| Duck::Text(meta.position.to_string()))
                .collect();
            (StageKind::Text, positions)
        } else if target.metadata && name == COMMIT_TS_COLUMN {
            let times = rows.iter().map(|(_, meta)| commit_ts(meta)).collect();
            (StageKind::TimestampTz, times)
        } else if target.schema.column(name).is_some() {
            let mut kind = stage_kind(target, name);
            let values = encode_column(&mut kind, rows.iter().map(|(row, _)| row.get(name)))
                .map_err(|why| unfit(target, name, why))?;
            (kind, values)
        } else {
            (StageKind::Text, vec![Duck::Null; rows.len()])
        };
        match columnar::arrow_column(&kind, &values) {
            Some(array) => out.push((name.clone(), array)),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
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
            .map(|c| (c.to_string(), stage_kind(target, c)))
            .collect(),
    };
    let encoded = encode_rows(target, &mut stage.columns, rows)?;
    let mut definitions: Vec<String> = stage
        .columns
        .iter()
        .map(|(name, kind)| format!("{} {}", quote_ident(name), kind.sql_type()))
        .collect();
    if target.metadata {
        for (name, kind) in metadata_kinds() {
            definitions.push(format!("{} {}", quote_ident(name), kind.sql_type()));
        }
    }
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE {} ({})",
        quote_ident(&stage.name),
        definitions.join(", ")
    ))
    .map_err(|e| duck_error(e, &format!("staging changes for {}", target.name)))?;
    load(conn, &stage, encoded, target)?;
    Ok(stage)
}

/// How `column` of the target is staged: by its source type and the target column's type.
fn stage_kind(target: &Target<'_>, column: &str) -> StageKind {
    match target.schema.column(column).map(|s| &s.column_type) {
        Some(t) => StageKind::for_column(t, target.column_type(column)),
        None => StageKind::Text,
    }
}

/// The metadata columns (position, commit time) and their staging kinds.
fn metadata_kinds() -> [(&'static str, StageKind); 2] {
    [
        (POSITION_COLUMN, StageKind::Text),
        (COMMIT_TS_COLUMN, StageKind::TimestampTz),
    ]
}

/// `rows` encoded column by column (then the metadata columns if the target keeps them). A
/// column whose values its typed staging kind cannot take is encoded as text for this batch
/// (its kind in `kinds` changes), and DuckDB's cast decides.
fn encode_rows(
    target: &Target<'_>,
    kinds: &mut [(String, StageKind)],
    rows: &[(Vec<Option<&Value>>, &SourceMeta)],
) -> Result<Vec<Vec<Duck>>, PipelineError> {
    let mut encoded: Vec<Vec<Duck>> = Vec::with_capacity(kinds.len() + 2);
    for (i, (name, kind)) in kinds.iter_mut().enumerate() {
        let values = encode_column(kind, rows.iter().map(|(values, _)| values[i]))
            .map_err(|why| unfit(target, name, why))?;
        encoded.push(values);
    }
    if target.metadata {
        encoded.push(
            rows.iter()
                .map(|(_, meta)| Duck::Text(meta.position.to_string()))
                .collect(),
        );
        encoded.push(rows.iter().map(|(_, meta)| commit_ts(meta)).collect());
    }
    Ok(encoded)
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

/// Fills the staging table with the columnar appender; if it refuses the batch (a value it
/// cannot take), with prepared multi-row INSERTs instead. Lists go the INSERT way at once.
fn load(
    conn: &Connection,
    stage: &Stage,
    columns: Vec<Vec<Duck>>,
    target: &Target<'_>,
) -> Result<(), PipelineError> {
    let mut kinds: Vec<(&str, &StageKind)> = stage
        .columns
        .iter()
        .map(|(name, kind)| (name.as_str(), kind))
        .collect();
    let metadata = metadata_kinds();
    if target.metadata {
        kinds.extend(metadata.iter().map(|(name, kind)| (*name, kind)));
    }
    if let Some(arrays) = arrow_columns(&kinds, &columns) {
        let Err(refused) = columnar::append(conn, Some("temp"), "main", &stage.name, arrays) else {
            return Ok(());
        };
        APPENDER_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(table = %target.name, error = %refused, "the appender refused this batch; loading it with INSERT statements instead");
        conn.execute_batch(&format!("DELETE FROM {}", stage.sql_name()))
            .map_err(|e| duck_error(e, "clearing the staging table"))?;
    }
    insert_rows(conn, &stage.sql_name(), &transpose(columns))
        .map_err(|e| duck_error(e, &format!("staging changes for {}", target.name)))
}

/// The encoded columns as Arrow arrays, named; `None` if one cannot be (a list).
fn arrow_columns(
    kinds: &[(&str, &StageKind)],
    columns: &[Vec<Duck>],
) -> Option<Vec<(String, ArrayRef)>> {
    kinds
        .iter()
        .zip(columns)
        .map(|((name, kind), values)| {
            Some((name.to_string(), columnar::arrow_column(kind, values)?))
        })
        .collect()
}

/// Column-major values as rows.
fn transpose(columns: Vec<Vec<Duck>>) -> Vec<Vec<Duck>> {
    let rows = columns.first().map_or(0, Vec::len);
    let mut columns: Vec<std::vec::IntoIter<Duck>> =
        columns.into_iter().map(Vec::into_iter).collect();
    (0..rows)
        .map(|_| {
            columns
                .iter_mut()
                .map(|column| column.next().unwrap_or(Duck::Null))
                .collect()
        })
        .collect()
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
        // The columnar appender is not given lists: it is compared on the other columns.
        let scalars = kinds.len() - 2;
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE inserted ({}); CREATE TEMP TABLE appended ({})",
            columns.join(", "),
            columns[..scalars].join(", ")
        ))
        .unwrap();
        let names: Vec<String> = (0..scalars).map(|i| format!("c{i}")).collect();
        let scalar_kinds: Vec<(&str, &StageKind)> = names
            .iter()
            .map(String::as_str)
            .zip(&kinds[..scalars])
            .collect();
        let scalar_columns: Vec<Vec<Duck>> = (0..scalars)
            .map(|i| rows.iter().map(|r| r[i].clone()).collect())
            .collect();
        assert!(
            arrow_columns(
                &kinds.iter().map(|k| ("c", k)).collect::<Vec<_>>(),
                &transpose(rows.clone())
            )
            .is_none(),
            "lists are not built as arrays"
        );
        let arrays = arrow_columns(&scalar_kinds, &scalar_columns).unwrap();
        columnar::append(&conn, Some("temp"), "main", "appended", arrays).unwrap();
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
