//! Applying net changes to a target table in bulk: multi-row statements, not a statement per row.
//!
//! ```text
//!  deletes ─▶ DELETE FROM t WHERE (k1, k2) IN ((?, ?), (?, ?), ...)          (hard)
//!             UPDATE t SET _cdc_deleted = 1 .. WHERE (k1, k2) IN (...)       (soft)
//!  upserts ─▶ per set of unchanged columns:
//!             INSERT INTO t (cols) VALUES (?, ..), (?, ..) ... ON DUPLICATE KEY UPDATE c = VALUES(c), ..
//! ```
//!
//! Rows go in chunks of at most [`MAX_ROWS`] rows, about [`MAX_BYTES`] of values and MySQL's
//! 65,535 placeholders. Every value is a bound parameter (prepared statement), never spliced into
//! the SQL text. A column an update did not send (`unchanged`, e.g. an unchanged TOASTed value)
//! is left out of its group's statement, so the target keeps what it has.

use std::collections::BTreeMap;
use std::sync::Arc;

use cdc_core::batch::NetChange;
use cdc_core::{PipelineError, Row, SourceMeta, TableSchema, Value};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as Param};

use crate::ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
use crate::errors::named_row;
use crate::values::{datetime_text, to_param};
use crate::{quote_ident, sink_error};

/// A failed apply: the error, and the index (in the changes given) of the change the target
/// named (`at row N` of a multi-row statement, or a value that cannot be bound), if any.
#[derive(Debug)]
pub struct Refused {
    pub error: PipelineError,
    pub at: Option<usize>,
}

impl From<PipelineError> for Refused {
    fn from(error: PipelineError) -> Self {
        Refused { error, at: None }
    }
}

/// Changes with their indexes in what the caller was given.
type Indexed<'a> = [(usize, &'a NetChange)];
type Owned<'a> = Vec<(usize, &'a NetChange)>;

/// Applies one table's net changes (deletes first, then upserts, as given).
pub async fn changes(
    conn: &mut Conn,
    target: &Target<'_>,
    changes: &[NetChange],
) -> Result<(), Refused> {
    let (deletes, upserts): (Owned, Owned) = changes
        .iter()
        .enumerate()
        .partition(|(_, c)| matches!(c, NetChange::Delete { .. }));
    self::deletes(conn, target, &deletes).await?;
    self::upserts(conn, target, &upserts).await
}

/// Rows per statement.
const MAX_ROWS: usize = 500;
/// Bytes of values per statement (well under the default `max_allowed_packet`).
const MAX_BYTES: usize = 1 << 20;
/// MySQL's limit of placeholders in one prepared statement.
const MAX_PARAMS: usize = 65_535;

pub struct Target<'a> {
    /// Quoted `db`.`table`.
    pub name: &'a str,
    /// `db.table`, for messages.
    pub label: &'a str,
    pub schema: &'a TableSchema,
    pub soft_delete: bool,
    pub metadata: bool,
}

/// The columns (name, canonical type) a target table has; empty when it does not exist.
pub async fn target_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Vec<(String, String)>, PipelineError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(|e| sink_error(e, "reading the target table's columns"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name = text_at(r, 0)?;
            let column_type = text_at(r, 1)?;
            Some((name, crate::ddl::normalize_type(&column_type)))
        })
        .collect())
}

/// Column `i` of a result row as text (`None` for NULL or a missing column).
pub fn text_at(row: &mysql_async::Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        Param::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Param::NULL => None,
        Param::Int(v) => Some(v.to_string()),
        Param::UInt(v) => Some(v.to_string()),
        other => Some(format!("{other:?}")),
    }
}

async fn deletes(
    conn: &mut Conn,
    target: &Target<'_>,
    changes: &Indexed<'_>,
) -> Result<(), Refused> {
    if changes.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = target.schema.key_names().collect();
    // Soft deletes with metadata record each delete's own position: one statement group per
    // source transaction (a batch holds few).
    // (position, commit time) → the keys, with their indexes.
    type Group<'a> = Vec<(usize, &'a Row)>;
    let mut groups: BTreeMap<(String, Option<Arc<str>>), Group> = BTreeMap::new();
    for (i, change) in changes {
        if let NetChange::Delete { key, source } = change {
            let group = if target.soft_delete && target.metadata {
                (source.position.to_string(), source.commit_ts.clone())
            } else {
                (String::new(), None)
            };
            groups.entry(group).or_default().push((*i, key));
        }
    }
    let key_list: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    let one = format!("({})", vec!["?"; keys.len()].join(", "));
    for ((position, commit_ts), rows) in groups {
        let mut prefix = Vec::new();
        let head = if target.soft_delete {
            let mut set = vec![format!("{} = 1", quote_ident(DELETED_COLUMN))];
            if target.metadata {
                set.push(format!("{} = ?", quote_ident(POSITION_COLUMN)));
                set.push(format!("{} = ?", quote_ident(COMMIT_TS_COLUMN)));
                prefix.push(Param::Bytes(position.into_bytes()));
                prefix.push(commit_ts_param(commit_ts.as_deref()));
            }
            format!("UPDATE {} SET {} WHERE ", target.name, set.join(", "))
        } else {
            format!("DELETE FROM {} WHERE ", target.name)
        };
        let sql = |n: usize| {
            if keys.len() == 1 {
                format!("{head}{} IN ({})", key_list[0], vec!["?"; n].join(", "))
            } else {
                format!(
                    "{head}({}) IN ({})",
                    key_list.join(", "),
                    vec![one.as_str(); n].join(", ")
                )
            }
        };
        let params = rows.into_iter().map(|(i, key)| {
            (
                i,
                keys.iter()
                    .map(|k| param(target, k, key.get(k)))
                    .collect::<Result<Vec<_>, _>>(),
            )
        });
        run_chunked(
            conn,
            &sql,
            prefix,
            params,
            &format!("applying deletes to {}", target.label),
        )
        .await?;
    }
    Ok(())
}

async fn upserts(
    conn: &mut Conn,
    target: &Target<'_>,
    changes: &Indexed<'_>,
) -> Result<(), Refused> {
    // Rows that left different columns unchanged need different statements.
    let mut groups: BTreeMap<Vec<&str>, Vec<(usize, &Row, &SourceMeta)>> = BTreeMap::new();
    for (i, change) in changes {
        if let NetChange::Upsert {
            row,
            unchanged,
            source,
            ..
        } = change
        {
            let mut key: Vec<&str> = unchanged.iter().map(|c| &**c).collect();
            key.sort_unstable();
            groups.entry(key).or_default().push((*i, row, source));
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
        let mut insert_columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let mut placeholders: Vec<&str> = vec!["?"; columns.len()];
        if target.metadata {
            insert_columns.push(quote_ident(POSITION_COLUMN));
            insert_columns.push(quote_ident(COMMIT_TS_COLUMN));
            placeholders.extend(["?", "?"]);
        }
        if target.soft_delete {
            insert_columns.push(quote_ident(DELETED_COLUMN));
            placeholders.push("0");
        }
        let key_columns: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
        let mut updates: Vec<String> = insert_columns
            .iter()
            .filter(|c| !key_columns.contains(c))
            .map(|c| format!("{c} = VALUES({c})"))
            .collect();
        if updates.is_empty() {
            // Only key columns: an existing row stays as it is.
            updates.push(format!("{0} = {0}", key_columns[0]));
        }
        let one = format!("({})", placeholders.join(", "));
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            target.name,
            insert_columns.join(", ")
        );
        let tail = format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "));
        let sql = |n: usize| format!("{head}{}{tail}", vec![one.as_str(); n].join(", "));
        let params = group.into_iter().map(|(i, row, source)| {
            let values = columns
                .iter()
                .map(|c| param(target, c, row.get(c)))
                .collect::<Result<Vec<_>, _>>()
                .map(|mut values| {
                    if target.metadata {
                        values.push(Param::Bytes(source.position.to_string().into_bytes()));
                        values.push(commit_ts_param(source.commit_ts.as_deref()));
                    }
                    values
                });
            (i, values)
        });
        run_chunked(
            conn,
            &sql,
            Vec::new(),
            params,
            &format!("applying upserts to {}", target.label),
        )
        .await?;
    }
    Ok(())
}

fn param(target: &Target<'_>, column: &str, value: Option<&Value>) -> Result<Param, PipelineError> {
    match value {
        None => Ok(Param::NULL),
        Some(v) => to_param(v).map_err(|e| e.at(target.label, column)),
    }
}

fn commit_ts_param(commit_ts: Option<&str>) -> Param {
    commit_ts
        .and_then(|ts| datetime_text(ts).ok())
        .map_or(Param::NULL, |ts| Param::Bytes(ts.into_bytes()))
}

fn param_bytes(p: &Param) -> usize {
    match p {
        Param::Bytes(b) => b.len() + 4,
        _ => 8,
    }
}

/// Executes `sql(n)` for chunks of `n` rows, each bound to `prefix` followed by its rows' values.
/// Rows come with their indexes in the changes given, so a failure names its change.
async fn run_chunked<F, I>(
    conn: &mut Conn,
    sql: &F,
    prefix: Vec<Param>,
    rows: I,
    doing: &str,
) -> Result<(), Refused>
where
    F: Fn(usize) -> String + Sync,
    I: Iterator<Item = (usize, Result<Vec<Param>, PipelineError>)> + Send,
{
    let mut params = prefix.clone();
    let mut chunk_rows: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (i, row) in rows {
        let row = row.map_err(|error| Refused { error, at: Some(i) })?;
        let row_bytes: usize = row.iter().map(param_bytes).sum();
        let n = chunk_rows.len();
        if n > 0
            && (n >= MAX_ROWS
                || params.len() + row.len() > MAX_PARAMS
                || bytes + row_bytes > MAX_BYTES)
        {
            let chunk = std::mem::replace(&mut params, prefix.clone());
            execute(conn, sql(n), chunk, &chunk_rows, doing).await?;
            chunk_rows.clear();
            bytes = 0;
        }
        params.extend(row);
        chunk_rows.push(i);
        bytes += row_bytes;
    }
    if !chunk_rows.is_empty() {
        execute(conn, sql(chunk_rows.len()), params, &chunk_rows, doing).await?;
    }
    Ok(())
}

/// One multi-row statement; its failure names the change of the row the server names.
async fn execute(
    conn: &mut Conn,
    sql: String,
    params: Vec<Param>,
    rows: &[usize],
    doing: &str,
) -> Result<(), Refused> {
    conn.exec_drop(sql, params).await.map_err(|e| {
        let error = sink_error(e, doing);
        let at = if rows.len() == 1 {
            rows.first().copied()
        } else {
            named_row(&error.message).and_then(|r| rows.get(r.checked_sub(1)?).copied())
        };
        Refused { error, at }
    })
}
