//! The Postgres half of the chunked snapshot ([`cdc_core::chunked`]): a worker's own
//! connection reads chunks with `SELECT … WHERE (key) > (last) ORDER BY key LIMIT n` and writes
//! watermarks as transactional logical messages (`pg_logical_emit_message`), which reach the
//! replication stream in commit order like any transaction.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cdc_core::chunked::{ChunkReader, ChunkReaders, ChunkRows, Cursor, Key, OpenedTable};
use cdc_core::Name;
use cdc_core::{Lsn, PipelineError};

use crate::schema::{quote_ident, quote_literal, Catalog, Relation, TypeCache};
use crate::setup::TableRef;
use crate::snapshot::{describe_table, estimate_sql, parse_estimate, snapshot_event};
use crate::wire::ConnectParams;

/// The logical-message prefix of watermarks.
pub const WATERMARK_PREFIX: &str = "cdc-agent-snapshot";

/// Makes a [`PgChunkReader`] per worker.
pub struct PgChunkReaders {
    pub params: ConnectParams,
    pub db: Name,
    pub tables: Vec<TableRef>,
}

impl ChunkReaders for PgChunkReaders {
    fn reader(&self) -> Box<dyn ChunkReader> {
        Box::new(PgChunkReader {
            catalog: Catalog::new(self.params.clone()),
            types: TypeCache::default(),
            db: self.db,
            tables: self.tables.clone(),
            relation: None,
            long_running: HashSet::new(),
        })
    }
}

/// One worker's connection, and the table it copies.
struct PgChunkReader {
    catalog: Catalog,
    types: TypeCache,
    db: Name,
    tables: Vec<TableRef>,
    relation: Option<Relation>,
    /// Transactions found running for longer than a commit takes: not waited for again (see
    /// [`begin_snapshot_after_watermark`]).
    long_running: HashSet<i64>,
}

#[async_trait]
impl ChunkReader for PgChunkReader {
    async fn open_table(&mut self, name: &str) -> Result<OpenedTable, PipelineError> {
        let Some(table) = self.tables.iter().find(|t| t.qualified() == name) else {
            return Err(PipelineError::definite(
                "config",
                format!("cannot snapshot {name}: it is not one of the pipeline's tables"),
            ));
        };
        let relation = describe_table(&mut self.catalog, &mut self.types, table).await?;
        let estimate = self.catalog.query(&estimate_sql(table)).await?;
        let keyed = !relation.table_schema.key.is_empty();
        self.relation = Some(relation);
        Ok(OpenedTable {
            keyed,
            estimate: parse_estimate(&estimate),
        })
    }

    async fn watermark(&mut self, text: &str) -> Result<(), PipelineError> {
        emit(&mut self.catalog, &[text]).await
    }

    async fn watermarks(&mut self, texts: &[String]) -> Result<(), PipelineError> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        emit(&mut self.catalog, &texts).await
    }

    async fn read_chunk(
        &mut self,
        after: &Cursor,
        through: Option<&[Option<String>]>,
        limit: usize,
    ) -> Result<ChunkRows, PipelineError> {
        let Some(relation) = self.relation.as_ref() else {
            return Err(PipelineError::transient("snapshot", "no table open"));
        };
        let mut events = Vec::with_capacity(limit.min(1 << 16));
        // The cursor of the next chunk: the key of the row that fills this one.
        let mut last_row = None;
        let db = &self.db;
        begin_snapshot_after_watermark(&mut self.catalog, &mut self.long_running).await?;
        let read = self
            .catalog
            .query_each(&chunk_sql(relation, after, through, limit), |fields| {
                if limit > 0 && events.len() + 1 == limit {
                    last_row = Some(fields.clone().into_owned()?);
                }
                events.push(snapshot_event(relation, db, fields, Lsn(0), 0)?);
                Ok(())
            })
            .await;
        let end = self
            .catalog
            .query(if read.is_ok() { "COMMIT" } else { "ROLLBACK" })
            .await;
        read?;
        end?;
        let last_key = last_row.map(|row| {
            relation
                .key
                .iter()
                .map(|&i| row.get(i).cloned().flatten())
                .collect()
        });
        Ok(ChunkRows { events, last_key })
    }

    async fn boundary(
        &mut self,
        after: &Cursor,
        rows: usize,
    ) -> Result<Option<Key>, PipelineError> {
        let Some(relation) = self.relation.as_ref() else {
            return Err(PipelineError::transient("snapshot", "no table open"));
        };
        let key = key_columns(relation);
        let mut sql = select_from(relation, &key);
        if let Cursor::After(values) = after {
            sql.push_str(&format!(" WHERE {}", key_compare(&key, ">", values)));
        }
        sql.push_str(&format!(
            " ORDER BY {} OFFSET {} LIMIT 1",
            key.join(", "),
            rows.saturating_sub(1)
        ));
        let result = self.catalog.query(&sql).await?;
        Ok(result.rows.into_iter().next())
    }

    async fn close(&mut self) {
        self.catalog.close().await;
    }
}

/// Opens the read-only transaction a chunk is read in, with a snapshot that sees every
/// transaction whose commit precedes the low watermark in the WAL.
///
/// A snapshot taken right after the watermark's commit can still miss such a transaction:
/// Postgres writes a commit record, flushes it, marks the transaction committed in clog and only
/// then removes it from the running set. For that moment (microseconds, longer when the backend
/// is descheduled on a loaded machine, or while it waits for a synchronous standby) the commit is
/// in the stream before the window while its rows are invisible to the read, and the chunk would
/// then overwrite the change with the older row. Whether the commit record is already written
/// cannot be asked, so: every transaction running right after the watermark (the only ones that
/// can be in that moment; any that starts later commits after the watermark) is waited for until
/// it leaves the running set, and the chunk's snapshot is taken after that.
///
/// A transaction still running after [`COMMIT_MOMENT`] is a long one whose commit lies ahead (the
/// watermark's commit was flushed before we looked, and with it every earlier commit record, so
/// an earlier commit only lacks its clog and running-set update): it is remembered in
/// `long_running` and not waited for again by this worker (else every chunk would wait for it; the
/// one case left open is such a transaction committing in the very moment a later chunk's
/// snapshot is taken, with its backend descheduled). One that clog shows committed is always
/// waited for (a synchronous standby), up to [`COMMITTED_LIMIT`].
async fn begin_snapshot_after_watermark(
    catalog: &mut Catalog,
    long_running: &mut HashSet<i64>,
) -> Result<(), PipelineError> {
    // txid_* rather than pg_current_snapshot()/pg_xact_status(): Postgres 10 and later.
    const RUNNING: &str = "SELECT x::text FROM txid_snapshot_xip(txid_current_snapshot()) AS x";
    let running = catalog.query(RUNNING).await?;
    let mut waiting: Vec<i64> = running
        .rows
        .iter()
        .filter_map(|row| row.first()?.as_deref()?.parse().ok())
        .filter(|x| !long_running.contains(x))
        .collect();
    let started = Instant::now();
    while !waiting.is_empty() {
        let list: Vec<String> = waiting.iter().map(i64::to_string).collect();
        let still = catalog
            .query(&format!(
                "SELECT x::text, txid_status(x) FROM unnest(ARRAY[{}]::bigint[]) AS x \
                 WHERE x IN (SELECT txid_snapshot_xip(txid_current_snapshot()))",
                list.join(",")
            ))
            .await?;
        let committed = still
            .rows
            .iter()
            .any(|row| row.get(1).and_then(|s| s.as_deref()) == Some("committed"));
        waiting = still
            .rows
            .iter()
            .filter_map(|row| row.first()?.as_deref()?.parse().ok())
            .collect();
        if waiting.is_empty() {
            break;
        }
        let waited = started.elapsed();
        if committed && waited >= COMMITTED_LIMIT {
            return Err(PipelineError::transient(
                "snapshot",
                "a committed transaction stayed in the running set for over 30 s (a synchronous standby that does not answer?)",
            ));
        }
        if !committed && waited >= COMMIT_MOMENT {
            if long_running.len() > 10_000 {
                long_running.clear();
            }
            long_running.extend(waiting.iter().copied());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The snapshot is taken by the chunk's query, the transaction's first.
    catalog
        .query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map(|_| ())
}

/// How long a transaction may take from its commit record to leaving the running set, once
/// the record is flushed: microseconds, unless the backend is descheduled. Longer: it is running.
const COMMIT_MOMENT: Duration = Duration::from_millis(250);

/// How long a transaction clog shows committed may stay in the running set (waiting for a
/// synchronous standby) before the chunk gives up and the copy is retried.
const COMMITTED_LIMIT: Duration = Duration::from_secs(30);

/// Writes a watermark into the WAL: a transactional logical message, so it reaches the stream
/// in commit order like any transaction.
///
/// Its commit is flushed whatever the server's `synchronous_commit`: the walsender only sends
/// flushed WAL, and with `synchronous_commit = off` an unflushed watermark waits for the WAL
/// writer (`wal_writer_delay`, 200 ms by default), which held every chunk back that long.
async fn emit(catalog: &mut Catalog, texts: &[&str]) -> Result<(), PipelineError> {
    let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit = on;");
    for text in texts {
        sql.push_str(&format!(
            " SELECT pg_logical_emit_message(true, {}, {});",
            quote_literal(WATERMARK_PREFIX),
            quote_literal(text)
        ));
    }
    sql.push_str(" COMMIT");
    catalog.query(&sql).await.map(|_| ())
}

/// A chunk's query: rows after `after` and up to `through` in key order, at most `limit` (0: no
/// limit); with neither bound nor limit (or no key), the whole table as it lies.
fn chunk_sql(
    relation: &Relation,
    after: &Cursor,
    through: Option<&[Option<String>]>,
    limit: usize,
) -> String {
    let columns: Vec<String> = relation
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let mut sql = select_from(relation, &columns);
    let key = key_columns(relation);
    let mut conditions = Vec::new();
    if let Cursor::After(values) = after {
        conditions.push(key_compare(&key, ">", values));
    }
    if let Some(values) = through {
        conditions.push(key_compare(&key, "<=", values));
    }
    if key.is_empty() || (conditions.is_empty() && limit == 0) {
        return sql;
    }
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
    if limit > 0 {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    sql
}

/// `SELECT columns FROM ONLY schema.table` (a table without columns: `NULL` a row).
fn select_from(relation: &Relation, columns: &[String]) -> String {
    format!(
        "SELECT {} FROM ONLY {}.{}",
        if columns.is_empty() {
            "NULL".to_string()
        } else {
            columns.join(", ")
        },
        quote_ident(&relation.schema),
        quote_ident(&relation.name)
    )
}

/// The key's columns, quoted, in key order.
fn key_columns(relation: &Relation) -> Vec<String> {
    relation
        .key
        .iter()
        .filter_map(|&i| relation.columns.get(i))
        .map(|c| quote_ident(&c.name))
        .collect()
}

/// `(k1, k2) op ('v1', 'v2')`: a row comparison, which the key's index serves.
fn key_compare(key: &[String], op: &str, values: &[Option<String>]) -> String {
    let literals: Vec<String> = values
        .iter()
        .map(|v| v.as_deref().map_or("NULL".to_string(), quote_literal))
        .collect();
    format!("({}) {op} ({})", key.join(", "), literals.join(", "))
}
