//! Applying net changes to a target table in bulk: COPY into a temporary staging table, then one
//! set-based statement (`INSERT .. ON CONFLICT DO UPDATE` for upserts, `DELETE .. USING` for
//! deletes). A statement per batch, not per row.
//!
//! A failure says, where Postgres does, which change caused it (the COPY line) and which column
//! (see [`Refused`]): the dead-letter search starts there.

use std::collections::BTreeMap;

use bytes::Bytes;
use cdc_core::batch::NetChange;
use cdc_core::{PipelineError, SourceMeta, TableSchema, Value};
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::copy_text::push_value;
use crate::ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
use crate::{quote_ident, sink_error};

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK: usize = 1 << 20;

/// New rows per COPY (each under a savepoint of its own) when refused rows are set aside inline:
/// a refused row costs the rows of its chunk copied again, not the whole batch.
const NEW_ROWS_CHUNK: usize = 1000;

/// Changes the target refused one by one while the rest went in: (index in the changes given,
/// the target's error).
pub type RefusedInline = Vec<(usize, PipelineError)>;

/// A failed apply: the error, and the index (in the changes given) of the change the target
/// named, when it named one (a COPY line). The error's `column` is the column it named.
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

/// A target error while applying `rows` (indexes into the changes given, in the order they were
/// sent): where it names a COPY line, the change on it.
fn refused(e: tokio_postgres::Error, doing: &str, rows: &[usize]) -> Refused {
    let place = e.as_db_error().and_then(|db| db.where_()).unwrap_or("");
    let line = copy_line(place);
    let column = e
        .as_db_error()
        .and_then(|db| db.column().map(str::to_string))
        .or_else(|| copy_column(place));
    Refused {
        error: sink_error(e, doing).with_column(column),
        at: line.and_then(|l| rows.get(l.checked_sub(1)?).copied()),
    }
}

/// The line of a COPY error's context (`COPY t, line 3, column v: "…"`), from 1.
fn copy_line(place: &str) -> Option<usize> {
    let rest = place.strip_prefix("COPY ")?;
    let (_, after) = rest.split_once(", line ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The column of a COPY error's context, if it names one.
fn copy_column(place: &str) -> Option<String> {
    let rest = place.strip_prefix("COPY ")?;
    let (_, after) = rest.split_once(", column ")?;
    let name = after.split(':').next().unwrap_or(after);
    Some(name.to_string()).filter(|n| !n.is_empty())
}

/// Applies one table's net changes (deletes first, then upserts, as given). With
/// `target.refuse_inline`, new rows the target refuses at a COPY line are left out and returned
/// (the rest is in); otherwise any refusal fails the whole call.
pub async fn changes(
    client: &Client,
    target: &Target<'_>,
    changes: &[NetChange],
    counter: &mut u64,
) -> Result<RefusedInline, Refused> {
    let (deletes, upserts): (Owned, Owned) = changes
        .iter()
        .enumerate()
        .partition(|(_, c)| matches!(c, NetChange::Delete { .. }));
    self::deletes(client, target, &deletes, counter).await?;
    self::upserts(client, target, &upserts, counter).await
}

pub struct Target<'a> {
    /// Quoted `schema.table`.
    pub name: &'a str,
    pub schema: &'a TableSchema,
    pub soft_delete: bool,
    pub metadata: bool,
    /// The dead-letter store takes refused changes: new rows go in by chunks, and a row the
    /// target refuses at a COPY line is left out of its chunk (see [`insert_new_rows`]).
    pub refuse_inline: bool,
}

/// The columns (name, `format_type` type) a target table has; empty when it does not exist.
pub async fn target_columns(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>, PipelineError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| sink_error(e, "reading the target table's columns"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Changes with their indexes in what the caller was given.
type Indexed<'a> = [(usize, &'a NetChange)];
type Owned<'a> = Vec<(usize, &'a NetChange)>;

async fn deletes(
    client: &Client,
    target: &Target<'_>,
    changes: &Indexed<'_>,
    counter: &mut u64,
) -> Result<(), Refused> {
    if changes.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = target.schema.key_names().collect();
    let stage = stage_table(client, target, &keys, counter).await?;
    let mut rows = CopyRows::default();
    let mut sent = Vec::with_capacity(changes.len());
    for (i, change) in changes {
        if let NetChange::Delete { key, source } = change {
            rows.row(
                keys.iter().map(|k| key.get(k)),
                target.metadata.then_some(source),
            );
            sent.push(*i);
        }
    }
    copy_into(client, &stage, &copy_columns(&keys, target.metadata), rows)
        .await
        .map_err(|e| refused(e, "copying keys into the staging table", &sent))?;
    let matches = key_match(&keys);
    let sql = if target.soft_delete {
        let mut set = vec![format!("{} = true", quote_ident(DELETED_COLUMN))];
        if target.metadata {
            set.extend(metadata_assignments("s."));
        }
        format!(
            "UPDATE {} t SET {} FROM {stage} s WHERE {matches}",
            target.name,
            set.join(", ")
        )
    } else {
        format!(
            "DELETE FROM {} t USING {stage} s WHERE {matches}",
            target.name
        )
    };
    client
        .batch_execute(&format!("{sql}; DROP TABLE {stage}"))
        .await
        .map_err(|e| refused(e, &format!("applying deletes to {}", target.name), &[]))
}

async fn upserts(
    client: &Client,
    target: &Target<'_>,
    changes: &Indexed<'_>,
    counter: &mut u64,
) -> Result<RefusedInline, Refused> {
    let (new_rows, mut rest): (Owned, Owned) =
        changes.iter().partition(
            |(_, c)| matches!(c, NetChange::Upsert { new_row: true, unchanged, .. } if unchanged.is_empty()),
        );
    let mut refused_inline = RefusedInline::new();
    if target.refuse_inline {
        for chunk in new_rows.chunks(NEW_ROWS_CHUNK) {
            let (upsert_instead, refused) =
                insert_chunk_leaving_out_refused(client, target, chunk).await?;
            rest.extend(upsert_instead);
            refused_inline.extend(refused);
        }
    } else if !insert_new_rows(client, target, &new_rows).await? {
        rest.extend(new_rows);
    }
    // Rows that left different columns unchanged need different statements.
    let mut groups: BTreeMap<Vec<&str>, Vec<(usize, &NetChange)>> = BTreeMap::new();
    for (i, change) in rest {
        if let NetChange::Upsert { unchanged, .. } = change {
            let mut key: Vec<&str> = unchanged.iter().map(|c| &**c).collect();
            key.sort_unstable();
            groups.entry(key).or_default().push((i, change));
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
        let stage = stage_table(client, target, &columns, counter).await?;
        let mut rows = CopyRows::default();
        let mut sent = Vec::with_capacity(group.len());
        for (i, change) in group {
            if let NetChange::Upsert { row, source, .. } = change {
                rows.row(
                    columns.iter().map(|c| row.get(c)),
                    target.metadata.then_some(source),
                );
                sent.push(i);
            }
        }
        copy_into(
            client,
            &stage,
            &copy_columns(&columns, target.metadata),
            rows,
        )
        .await
        .map_err(|e| refused(e, "copying rows into the staging table", &sent))?;
        let mut insert_columns: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let mut select: Vec<String> = insert_columns.clone();
        if target.metadata {
            for c in [POSITION_COLUMN, COMMIT_TS_COLUMN] {
                insert_columns.push(quote_ident(c));
                select.push(quote_ident(c));
            }
        }
        if target.soft_delete {
            insert_columns.push(quote_ident(DELETED_COLUMN));
            select.push("false".into());
        }
        let updates: Vec<String> = insert_columns
            .iter()
            .filter(|c| !keys.iter().any(|k| &quote_ident(k) == *c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let key_list: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {stage} ON CONFLICT ({}) {conflict}; DROP TABLE {stage}",
            target.name,
            insert_columns.join(", "),
            select.join(", "),
            key_list.join(", "),
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| refused(e, &format!("applying upserts to {}", target.name), &[]))?;
    }
    Ok(refused_inline)
}

/// Rows the source did not have before this batch go straight into the target by COPY: no
/// staging table, no merge. That is the bulk of a typical stream (and of every snapshot). A key
/// the target has anyway (a soft-deleted row, a row written to the target by hand) makes the COPY
/// fail as a whole; it is then rolled back to a savepoint and the rows take the upsert path.
/// Returns whether the rows are in.
async fn insert_new_rows(
    client: &Client,
    target: &Target<'_>,
    changes: &Indexed<'_>,
) -> Result<bool, Refused> {
    Ok(match copy_new_rows(client, target, changes).await? {
        NewRows::In => true,
        NewRows::KeyTaken => false,
        NewRows::Refused(refused) => return Err(refused),
    })
}

/// One chunk of new rows for [`Target::refuse_inline`]: copied under a savepoint; a row the
/// target refuses at a COPY line is left out and the chunk copied again, until it goes in. Returns
/// the rows that take the upsert path instead (all of the chunk, when a key is already in the
/// target) and the refused ones. A refusal that names no line fails the call: the caller's
/// search finds the change then.
async fn insert_chunk_leaving_out_refused<'a>(
    client: &Client,
    target: &Target<'_>,
    chunk: &[(usize, &'a NetChange)],
) -> Result<(Owned<'a>, RefusedInline), Refused> {
    let mut rows: Owned<'a> = chunk.to_vec();
    let mut refused_rows = RefusedInline::new();
    loop {
        match copy_new_rows(client, target, &rows).await? {
            NewRows::In => return Ok((Vec::new(), refused_rows)),
            NewRows::KeyTaken => return Ok((rows, refused_rows)),
            NewRows::Refused(Refused {
                error,
                at: Some(index),
            }) if error.is_poison() => {
                rows.retain(|(i, _)| *i != index);
                refused_rows.push((index, error));
            }
            NewRows::Refused(refused) => return Err(refused),
        }
    }
}

/// What became of new rows copied under a savepoint.
enum NewRows {
    In,
    /// A row's key is in the target already: nothing went in.
    KeyTaken,
    /// The target refused them (nothing went in).
    Refused(Refused),
}

async fn copy_new_rows(
    client: &Client,
    target: &Target<'_>,
    changes: &Indexed<'_>,
) -> Result<NewRows, Refused> {
    if changes.is_empty() {
        return Ok(NewRows::In);
    }
    let columns: Vec<&str> = target.schema.columns.iter().map(|c| &*c.name).collect();
    let mut names = copy_columns(&columns, target.metadata);
    let mut rows = CopyRows::default();
    if target.soft_delete {
        names.push(quote_ident(DELETED_COLUMN));
        rows.suffix = "\tf";
    }
    let mut sent = Vec::with_capacity(changes.len());
    for (i, change) in changes {
        if let NetChange::Upsert { row, source, .. } = change {
            rows.row(
                columns.iter().map(|c| row.get(c)),
                target.metadata.then_some(source),
            );
            sent.push(*i);
        }
    }
    let context = format!("inserting new rows into {}", target.name);
    client
        .batch_execute("SAVEPOINT cdc_new_rows")
        .await
        .map_err(|e| sink_error(e, &context))?;
    match copy_into(client, target.name, &names, rows).await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT cdc_new_rows")
                .await
                .map_err(|e| sink_error(e, &context))?;
            Ok(NewRows::In)
        }
        Err(e) => {
            let taken = e.code() == Some(&SqlState::UNIQUE_VIOLATION);
            let refusal = refused(e, &context, &sent);
            if !taken && !refusal.error.is_poison() {
                return Err(refusal);
            }
            client
                .batch_execute("ROLLBACK TO SAVEPOINT cdc_new_rows; RELEASE SAVEPOINT cdc_new_rows")
                .await
                .map_err(|e| sink_error(e, &context))?;
            if taken {
                tracing::debug!(table = %target.name, "a new row's key is already in the target; upserting instead");
                return Ok(NewRows::KeyTaken);
            }
            Ok(NewRows::Refused(refusal))
        }
    }
}

/// The COPY column list: `columns` and, with metadata, the metadata columns.
fn copy_columns(columns: &[&str], metadata: bool) -> Vec<String> {
    let mut names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    if metadata {
        names.push(quote_ident(POSITION_COLUMN));
        names.push(quote_ident(COMMIT_TS_COLUMN));
    }
    names
}

/// A temporary table with the target's types for `columns` (and the metadata columns).
async fn stage_table(
    client: &Client,
    target: &Target<'_>,
    columns: &[&str],
    counter: &mut u64,
) -> Result<String, PipelineError> {
    *counter += 1;
    let stage = format!("\"_cdc_stage_{counter}\"");
    let mut select: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    if target.metadata {
        select.push(format!("NULL::text AS {}", quote_ident(POSITION_COLUMN)));
        select.push(format!(
            "NULL::timestamptz AS {}",
            quote_ident(COMMIT_TS_COLUMN)
        ));
    }
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
            select.join(", "),
            target.name
        ))
        .await
        .map_err(|e| sink_error(e, &format!("staging changes for {}", target.name)))?;
    Ok(stage)
}

/// Rows in COPY text format.
#[derive(Default)]
struct CopyRows {
    chunks: Vec<String>,
    current: String,
    /// Appended to every row (constant trailing columns).
    suffix: &'static str,
}

impl CopyRows {
    fn row<'a>(
        &mut self,
        values: impl Iterator<Item = Option<&'a Value>>,
        meta: Option<&SourceMeta>,
    ) {
        let mut first = true;
        for value in values {
            if !first {
                self.current.push('\t');
            }
            first = false;
            push_value(&mut self.current, value.unwrap_or(&Value::Null));
        }
        if let Some(meta) = meta {
            self.current.push('\t');
            self.current.push_str(&meta.position.to_string());
            self.current.push('\t');
            match &meta.commit_ts {
                Some(ts) => self.current.push_str(ts),
                None => self.current.push_str("\\N"),
            }
        }
        self.current.push_str(self.suffix);
        self.current.push('\n');
        if self.current.len() >= COPY_CHUNK {
            self.chunks.push(std::mem::take(&mut self.current));
        }
    }
}

async fn copy_into(
    client: &Client,
    table: &str,
    names: &[String],
    mut rows: CopyRows,
) -> Result<(), tokio_postgres::Error> {
    let copy = client
        .copy_in(&format!("COPY {table} ({}) FROM STDIN", names.join(", ")))
        .await?;
    futures_util::pin_mut!(copy);
    if !rows.current.is_empty() {
        rows.chunks.push(std::mem::take(&mut rows.current));
    }
    for chunk in rows.chunks {
        copy.send(Bytes::from(chunk)).await?;
    }
    copy.finish().await?;
    Ok(())
}

fn key_match(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("t.{0} = s.{0}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn metadata_assignments(from: &str) -> Vec<String> {
    [POSITION_COLUMN, COMMIT_TS_COLUMN]
        .iter()
        .map(|c| format!("{0} = {from}{0}", quote_ident(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_error_context_gives_its_line_and_column() {
        let place = "COPY _cdc_stage_3, line 2, column note: \"abcdefg\"";
        assert_eq!(copy_line(place), Some(2));
        assert_eq!(copy_column(place).as_deref(), Some("note"));
        assert_eq!(copy_line("COPY t, line 17"), Some(17));
        assert_eq!(copy_column("COPY t, line 17"), None);
        assert_eq!(copy_line("SQL statement"), None);
    }
}
