//! The MySQL/MariaDB half of the chunked snapshot ([`cdc_core::chunked`]).
//!
//! A worker's own connection reads chunks in primary-key order with
//! `SELECT … WHERE key > ? ORDER BY key LIMIT n` (a composite key as `a > ? OR (a = ? AND b > ?)`,
//! which both servers turn into a range scan of the key). Watermarks are rows of a small signal
//! table: each is inserted and deleted in one transaction, so the table stays empty while the
//! binlog carries the row in commit order like any change; the binlog session recognises the
//! table by name and hands the text to the snapshot.

use async_trait::async_trait;
use cdc_core::chunked::{
    ChunkReader, ChunkReaders, ChunkRows, Cursor, Key, OpenedTable, SnapshotMethod,
};
use cdc_core::Name;
use cdc_core::{PipelineError, Position};
use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};

use crate::errors::query_error;
use crate::schema::{read_table, DecodedTable};
use crate::setup::{connect, MysqlConfig};
use crate::snapshot::{prepare_session, quote_name, row_estimate, snapshot_event};

/// The signal table's default name (`database.table`).
pub const DEFAULT_SIGNAL_TABLE: &str = "cdc_agent.snapshot_watermarks";

/// `database.table` of the signal table, split (a name without a database is refused).
pub fn signal_table_parts(name: &str) -> Option<(&str, &str)> {
    let (db, table) = name.split_once('.')?;
    (!db.is_empty() && !table.is_empty() && !table.contains('.')).then_some((db, table))
}

/// Creates the signal table if it is missing. An error means the agent may not write
/// watermarks here (a read-only replica, or no CREATE privilege).
pub async fn ensure_signal_table(conn: &mut Conn, name: &str) -> Result<(), PipelineError> {
    let Some((db, table)) = signal_table_parts(name) else {
        return Err(PipelineError::definite(
            "config",
            format!("source.signal_table = {name:?} is not `database.table`"),
        ));
    };
    for sql in [
        format!("CREATE DATABASE IF NOT EXISTS {}", quote_name(db)),
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
             mark VARCHAR(1024) NOT NULL) ENGINE=InnoDB",
            quote_name(db),
            quote_name(table)
        ),
    ] {
        conn.query_drop(&sql)
            .await
            .map_err(|e| query_error(e, &format!("creating the signal table {name}")))?;
    }
    Ok(())
}

/// A position's place in the binlog as one number: the file's sequence number above the offset
/// (offsets stay below 4 GiB: `max_binlog_size` is at most 1 GiB).
pub fn stream_order(position: &Position) -> Option<u64> {
    let Position::Mysql { file, pos, .. } = position else {
        return None;
    };
    let sequence: u64 = file.rsplit('.').next()?.parse().ok()?;
    Some((sequence << 32) | (pos & 0xffff_ffff))
}

/// `Auto` becomes `Watermark` if the agent may write the signal table (it is created if
/// missing), else `Transaction`; `Watermark` without that right is the operator's to fix.
pub async fn resolve_method(
    config: &MysqlConfig,
    conn: &mut Conn,
) -> Result<SnapshotMethod, PipelineError> {
    if config.snapshot_method == SnapshotMethod::Transaction || config.snapshot_only {
        return Ok(SnapshotMethod::Transaction);
    }
    let probe = async {
        crate::chunked::ensure_signal_table(conn, &config.signal_table).await?;
        let mut reader = MyChunkReaders {
            config: config.clone(),
            signal_table: config.signal_table.clone(),
        }
        .reader();
        let written = reader.watermark("probe").await;
        reader.close().await;
        written
    };
    match (probe.await, config.snapshot_method) {
        (Ok(()), _) => Ok(SnapshotMethod::Watermark),
        (Err(e), SnapshotMethod::Auto) => {
            tracing::warn!(error = %e, signal_table = %config.signal_table, "cannot write snapshot watermarks: snapshots use one consistent transaction (not resumable mid-table)");
            Ok(SnapshotMethod::Transaction)
        }
        (Err(e), _) => Err(PipelineError::definite(
            "config",
            format!("snapshot_method = \"watermark\" needs the agent to write the signal table {}: {e}", config.signal_table),
        )
        .with_hint("grant CREATE, INSERT, DELETE on the signal table's database to the agent's user, set source.signal_table, or use snapshot_method = \"transaction\"")),
    }
}

/// The text of each watermark a rows event of the signal table inserts.
pub fn signal_marks(
    rows: &RowsEventData<'_>,
    map: &TableMapEvent<'_>,
) -> Result<Vec<String>, PipelineError> {
    use mysql_async::binlog::value::BinlogValue;
    if !matches!(
        rows,
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_)
    ) {
        return Ok(Vec::new());
    }
    let mut marks = Vec::new();
    for row in rows.rows(map) {
        let (_, after) = row.map_err(crate::errors::decode_error)?;
        let Some(after) = after else { continue };
        for i in 0..after.len() {
            if let Some(BinlogValue::Value(mysql_async::Value::Bytes(bytes))) = after.as_ref(i) {
                marks.push(String::from_utf8_lossy(bytes).into_owned());
            }
        }
    }
    Ok(marks)
}

/// Makes a [`MyChunkReader`] per worker.
pub struct MyChunkReaders {
    pub config: MysqlConfig,
    pub signal_table: String,
}

impl ChunkReaders for MyChunkReaders {
    fn reader(&self) -> Box<dyn ChunkReader> {
        Box::new(MyChunkReader {
            config: self.config.clone(),
            signal_table: self.signal_table.clone(),
            conn: None,
            table: None,
        })
    }
}

struct MyChunkReader {
    config: MysqlConfig,
    signal_table: String,
    conn: Option<Conn>,
    table: Option<DecodedTable>,
}

impl MyChunkReader {
    async fn conn(&mut self) -> Result<&mut Conn, PipelineError> {
        if self.conn.is_none() {
            let mut conn = connect(&self.config).await?;
            // Every chunk is one statement: read-committed is all the consistency it needs.
            prepare_session(&mut conn, "READ COMMITTED").await?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| PipelineError::transient("connection", "no snapshot connection"))
    }
}

#[async_trait]
impl ChunkReader for MyChunkReader {
    async fn open_table(&mut self, name: &str) -> Result<OpenedTable, PipelineError> {
        let Some((db, table)) = name.split_once('.') else {
            return Err(PipelineError::definite(
                "config",
                format!("cannot snapshot {name}: not a database.table name"),
            ));
        };
        let (db, table) = (db.to_string(), table.to_string());
        let conn = self.conn().await?;
        let Some(info) = read_table(conn, &db, &table).await? else {
            return Err(PipelineError::definite(
                "snapshot",
                format!("cannot snapshot {name}: the table does not exist"),
            ));
        };
        let estimate = row_estimate(conn, &db, &table).await;
        let decoded = DecodedTable::new(info);
        let keyed = !decoded.info.key.is_empty();
        self.table = Some(decoded);
        Ok(OpenedTable { keyed, estimate })
    }

    async fn watermark(&mut self, text: &str) -> Result<(), PipelineError> {
        self.watermarks(&[text.to_string()]).await
    }

    async fn watermarks(&mut self, texts: &[String]) -> Result<(), PipelineError> {
        let Some((db, table)) = signal_table_parts(&self.signal_table) else {
            return Err(PipelineError::definite(
                "config",
                format!(
                    "source.signal_table = {:?} is not `database.table`",
                    self.signal_table
                ),
            ));
        };
        let signal = format!("{}.{}", quote_name(db), quote_name(table));
        let conn = self.conn().await?;
        // Other pipelines (and this one's other workers) write the same table: a deadlock or
        // lock timeout between two watermark transactions is retried, not a failure.
        let mut attempt = 0;
        loop {
            match write_watermarks(conn, &signal, texts).await {
                Err(mysql_async::Error::Server(e))
                    if (e.code == 1213 || e.code == 1205) && attempt < WATERMARK_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                result => {
                    return result.map_err(|e| query_error(e, "writing a snapshot watermark"))
                }
            }
        }
    }

    async fn read_chunk(
        &mut self,
        after: &Cursor,
        through: Option<&[Option<String>]>,
        limit: usize,
    ) -> Result<ChunkRows, PipelineError> {
        let Some(decoded) = self.table.take() else {
            return Err(PipelineError::transient("snapshot", "no table open"));
        };
        let result = read_rows(self.conn().await?, &decoded, after, through, limit).await;
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                self.table = Some(decoded);
                return Err(e);
            }
        };
        let last_key = rows.last().map(|row| {
            decoded
                .info
                .key
                .iter()
                .map(|&i| row.get(i).and_then(cursor_value))
                .collect()
        });
        let db = Name::new(decoded.info.db.as_str());
        let events = rows
            .into_iter()
            .map(|values| snapshot_event(&decoded, &db, values))
            .collect::<Result<Vec<_>, _>>();
        self.table = Some(decoded);
        Ok(ChunkRows {
            events: events?,
            last_key,
        })
    }

    async fn boundary(
        &mut self,
        after: &Cursor,
        rows: usize,
    ) -> Result<Option<Key>, PipelineError> {
        let Some(decoded) = self.table.take() else {
            return Err(PipelineError::transient("snapshot", "no table open"));
        };
        let found = boundary_row(self.conn().await?, &decoded, after, rows).await;
        self.table = Some(decoded);
        Ok(found?.map(|row| row.iter().map(cursor_value).collect()))
    }

    async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.disconnect().await;
        }
    }
}

/// Deadlocks between watermark transactions retried before the copy fails.
const WATERMARK_RETRIES: u64 = 20;

/// One watermark: inserted and deleted again (by its own key, so only that row is locked) in one
/// transaction: the binlog carries the row, the table stays empty.
async fn write_watermarks(
    conn: &mut Conn,
    signal: &str,
    texts: &[String],
) -> Result<(), mysql_async::Error> {
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await?;
    for text in texts {
        tx.exec_drop(format!("INSERT INTO {signal} (mark) VALUES (?)"), (text,))
            .await?;
        tx.query_drop(format!("DELETE FROM {signal} WHERE id = LAST_INSERT_ID()"))
            .await?;
    }
    tx.commit().await
}

/// The chunk's rows as the server sends them (binary protocol).
async fn read_rows(
    conn: &mut Conn,
    decoded: &DecodedTable,
    after: &Cursor,
    through: Option<&[Option<String>]>,
    limit: usize,
) -> Result<Vec<Vec<My>>, PipelineError> {
    let (sql, params) = chunk_sql(decoded, after, through, limit)?;
    let name = decoded.info.qualified();
    let rows: Vec<mysql_async::Row> = conn
        .exec(sql.as_str(), params)
        .await
        .map_err(|e| query_error(e, &format!("reading a chunk of {name}")))?;
    Ok(rows.into_iter().map(mysql_async::Row::unwrap).collect())
}

/// The key of the `rows`-th row after `after`, in key order (the columns of the key).
async fn boundary_row(
    conn: &mut Conn,
    decoded: &DecodedTable,
    after: &Cursor,
    rows: usize,
) -> Result<Option<Vec<My>>, PipelineError> {
    let key = key_columns(decoded);
    let mut sql = select_from(decoded, &key);
    let mut params = Vec::new();
    if let Cursor::After(values) = after {
        let values = cursor_params(decoded, values)?;
        sql.push_str(&format!(
            " WHERE {}",
            key_compare(&key, ">", &values, &mut params)
        ));
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT 1 OFFSET {}",
        key.join(", "),
        rows.saturating_sub(1)
    ));
    let name = decoded.info.qualified();
    let row: Option<mysql_async::Row> = conn
        .exec_first(sql.as_str(), params)
        .await
        .map_err(|e| query_error(e, &format!("finding a chunk boundary of {name}")))?;
    Ok(row.map(mysql_async::Row::unwrap))
}

/// A chunk's query and its parameters: rows after `after` and up to `through` in key order, at
/// most `limit` (0: no limit); with neither bound nor limit (or no key), the whole table as it
/// lies.
pub(crate) fn chunk_sql(
    decoded: &DecodedTable,
    after: &Cursor,
    through: Option<&[Option<String>]>,
    limit: usize,
) -> Result<(String, Vec<My>), PipelineError> {
    let columns: Vec<String> = decoded
        .info
        .columns
        .iter()
        .map(|c| quote_name(&c.name))
        .collect();
    let mut sql = select_from(decoded, &columns);
    let mut params = Vec::new();
    let key = key_columns(decoded);
    let mut conditions = Vec::new();
    if let Cursor::After(values) = after {
        let values = cursor_params(decoded, values)?;
        conditions.push(key_compare(&key, ">", &values, &mut params));
    }
    if let Some(values) = through {
        let values = cursor_params(decoded, values)?;
        conditions.push(key_compare(&key, "<=", &values, &mut params));
    }
    if key.is_empty() || (conditions.is_empty() && limit == 0) {
        return Ok((sql, Vec::new()));
    }
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
    if limit > 0 {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok((sql, params))
}

/// `SELECT columns FROM db.table`.
fn select_from(decoded: &DecodedTable, columns: &[String]) -> String {
    format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_name(&decoded.info.db),
        quote_name(&decoded.info.table)
    )
}

/// The key's columns, quoted, in key order.
fn key_columns(decoded: &DecodedTable) -> Vec<String> {
    decoded
        .info
        .key
        .iter()
        .filter_map(|&i| decoded.info.columns.get(i))
        .map(|c| quote_name(&c.name))
        .collect()
}

/// A cursor's key values as query parameters of their own type.
fn cursor_params(
    decoded: &DecodedTable,
    values: &[Option<String>],
) -> Result<Vec<My>, PipelineError> {
    values
        .iter()
        .map(|v| parse_cursor_value(v.as_deref()))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            PipelineError::definite(
                "state",
                format!(
                    "unreadable snapshot cursor for {}",
                    decoded.info.qualified()
                ),
            )
            .with_hint("run `cdc-agent snapshot` for the table to copy it again")
        })
}

/// `(a, b) > (x, y)` (or `<=`) spelled out, `a > x OR (a = x AND b > y)`, which both servers turn
/// into a range scan of the key; its parameters are appended to `params`.
fn key_compare(key: &[String], op: &str, values: &[My], params: &mut Vec<My>) -> String {
    // The strict part of the comparison: every column but the last compares strictly.
    let strict = if op == "<=" { "<" } else { op };
    let mut alternatives = Vec::new();
    for last in 0..key.len() {
        let mut terms = Vec::new();
        for (i, column) in key.iter().enumerate().take(last + 1) {
            let op = match (i == last, last + 1 == key.len()) {
                (false, _) => "=",
                (true, true) => op,
                (true, false) => strict,
            };
            terms.push(format!("{column} {op} ?"));
            params.push(values.get(i).cloned().unwrap_or(My::NULL));
        }
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    format!("({})", alternatives.join(" OR "))
}

/// A key value in the cursor's text form, typed so it goes back as the same parameter type
/// (an integer compared as a number, a string in the column's collation).
fn cursor_value(value: &My) -> Option<String> {
    match value {
        My::NULL => None,
        My::Int(i) => Some(format!("i:{i}")),
        My::UInt(u) => Some(format!("u:{u}")),
        My::Float(f) => Some(format!("f:{f}")),
        My::Double(f) => Some(format!("f:{f}")),
        My::Bytes(b) => Some(format!(
            "b:{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
        My::Date(y, mo, d, h, mi, s, us) => Some(format!(
            "s:{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        My::Time(negative, days, h, mi, s, us) => Some(format!(
            "s:{}{}:{mi:02}:{s:02}.{us:06}",
            if *negative { "-" } else { "" },
            u64::from(*days) * 24 + u64::from(*h)
        )),
    }
}

fn parse_cursor_value(text: Option<&str>) -> Option<My> {
    let Some(text) = text else {
        return Some(My::NULL);
    };
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "i" => rest.parse().ok().map(My::Int),
        "u" => rest.parse().ok().map(My::UInt),
        "f" => rest.parse().ok().map(My::Double),
        "s" => Some(My::Bytes(rest.as_bytes().to_vec())),
        "b" => (0..rest.len())
            .step_by(2)
            .map(|i| {
                rest.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .map(My::Bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_values_round_trip_with_their_type() {
        for value in [
            My::Int(-5),
            My::UInt(u64::MAX),
            My::Double(1.5),
            My::Bytes(b"a'b\\c\xff".to_vec()),
        ] {
            let text = cursor_value(&value);
            assert_eq!(parse_cursor_value(text.as_deref()), Some(value));
        }
        assert_eq!(cursor_value(&My::NULL), None);
        assert_eq!(parse_cursor_value(Some("x:1")), None);
    }

    #[test]
    fn composite_key_bounds_spell_out_the_row_comparison() {
        let key = vec!["`a`".to_string(), "`b`".to_string()];
        let values = vec![My::Int(1), My::Int(2)];
        let mut params = Vec::new();
        assert_eq!(
            key_compare(&key, ">", &values, &mut params),
            "((`a` > ?) OR (`a` = ? AND `b` > ?))"
        );
        assert_eq!(
            key_compare(&key, "<=", &values, &mut params),
            "((`a` < ?) OR (`a` = ? AND `b` <= ?))"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(
            key_compare(&key[..1], "<=", &values, &mut Vec::new()),
            "((`a` <= ?))"
        );
    }

    #[test]
    fn binlog_positions_order_across_files() {
        let at = |file: &str, pos| Position::Mysql {
            file: file.into(),
            pos,
            gtid: None,
        };
        let a = stream_order(&at("mariadb-bin.000009", 4_000_000)).unwrap();
        let b = stream_order(&at("mariadb-bin.000010", 4)).unwrap();
        assert!(a < b);
        assert_eq!(stream_order(&at("binlog", 4)), None);
    }

    #[test]
    fn signal_table_names_need_a_database() {
        assert_eq!(signal_table_parts("a.b"), Some(("a", "b")));
        assert_eq!(signal_table_parts("b"), None);
        assert_eq!(signal_table_parts("a.b.c"), None);
    }
}
