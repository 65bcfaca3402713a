//! The Postgres half of the chunked snapshot ([`cdc_core::chunked`]): a worker's own
//! connection reads chunks with `SELECT … WHERE (key) > (last) ORDER BY key LIMIT n` and writes
//! watermarks as transactional logical messages (`pg_logical_emit_message`), which reach the
//! replication stream in commit order like any transaction.

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
        begin_snapshot_after_watermark(&mut self.catalog).await?;
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
/// A snapshot taken after the watermark's commit can still miss such a transaction: Postgres
/// writes a commit record before it removes the transaction from the running set, so for a
/// moment (longer on a loaded machine) the commit is in the stream before the window while its
/// rows are invisible to the read, and the chunk would then overwrite the change with the older
/// row. Such a snapshot lists, among its running transactions, one that is already committed:
/// it is dropped and taken again (the moment passes in microseconds).
async fn begin_snapshot_after_watermark(catalog: &mut Catalog) -> Result<(), PipelineError> {
    // txid_* rather than pg_current_snapshot()/pg_xact_status(): Postgres 10 and later.
    const CHECK: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
        SELECT count(*) FROM txid_snapshot_xip(txid_current_snapshot()) AS x \
        WHERE txid_status(x) = 'committed'";
    // About a second of retries: the moment is microseconds, even on a loaded machine.
    for _ in 0..1000 {
        let checked = match catalog.query(CHECK).await {
            Ok(result) => result
                .rows
                .first()
                .and_then(|row| row.first().cloned().flatten()),
            Err(e) => {
                let _ = catalog.query("ROLLBACK").await;
                return Err(e);
            }
        };
        if checked.as_deref() == Some("0") {
            return Ok(());
        }
        catalog.query("ROLLBACK").await?;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    Err(PipelineError::transient(
        "snapshot",
        "a committed transaction stayed in the running set for over a second",
    ))
}

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
