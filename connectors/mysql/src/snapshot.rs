//! The initial snapshot: every replicated table's rows, read in one consistent transaction whose
//! binlog position is known, so streaming continues from exactly there.
//!
//! MariaDB reports the binlog position of a consistent-snapshot transaction itself
//! (`binlog_snapshot_file` / `binlog_snapshot_position`), so no lock is taken. MySQL does not: a
//! brief `FLUSH TABLES WITH READ LOCK` pins the position while the transaction starts (the RELOAD
//! privilege is needed there).
//!
//! The rows form one transaction whose position sorts just before the snapshot's binlog offset,
//! so the first streamed transaction (which starts at or after that offset) sorts after it.

use std::sync::Arc;

use cdc_core::Name;
use cdc_core::{
    ChangeEvent, EventSender, Op, PipelineError, Position, Row, SourceKind, SourceMessage,
    SourceMeta, StreamContext, Value,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};

use cdc_core::chunked::Cursor;

use crate::errors::query_error;
use crate::schema::{read_table, DecodedTable, ValueKind};
use crate::setup::{binlog_settings, connect, resolve_tables};
use crate::source::MysqlSource;
use crate::values::decode;

/// Copies every replicated table; returns the position streaming starts from, or `None` when a
/// shutdown interrupted the copy (nothing was committed: the next run copies again).
pub async fn copy(
    source: &mut MysqlSource,
    out: &mut EventSender,
    context: &mut StreamContext,
) -> Result<Option<Position>, PipelineError> {
    let mut conn = connect(&source.config).await?;
    let settings = binlog_settings(&mut conn).await?;
    let start = begin_consistent_snapshot(&mut conn, settings.mariadb).await?;
    let Position::Mysql { file, pos, .. } = &start else {
        unreachable!()
    };
    let snapshot_position = Position::Mysql {
        file: file.clone(),
        pos: pos.saturating_sub(1),
        gtid: None,
    };
    tracing::info!(at = %start, "initial snapshot");
    context.progress.set_snapshotting(true);
    let (tables, _) = resolve_tables(&source.config, &mut conn).await?;
    let mut seq = 0u64;
    let shutdown = context.shutdown.clone();
    for (db, table) in tables {
        let Some(info) = read_table(&mut conn, &db, &table).await? else {
            continue;
        };
        let decoded = source.history.record(info, &start)?;
        if let Some(rows) = row_estimate(&mut conn, &db, &table).await {
            context
                .progress
                .set_snapshot_estimate(format!("{db}.{table}"), rows);
        }
        // The whole table: a chunk without a limit.
        let (sql, _) = crate::chunked::chunk_sql(&decoded, &Cursor::Start, None, 0)?;
        let db_name = Name::new(db.as_str());
        let mut result = conn
            .exec_iter(sql.as_str(), ())
            .await
            .map_err(|e| query_error(e, &format!("reading {db}.{table}")))?;
        let mut rows = 0u64;
        while let Some(row) = result
            .next()
            .await
            .map_err(|e| query_error(e, &format!("reading {db}.{table}")))?
        {
            if *shutdown.borrow() {
                context.progress.set_snapshotting(false);
                return Ok(None);
            }
            let mut event = snapshot_event(&decoded, &db_name, row.unwrap())?;
            event.source.position = snapshot_position.clone();
            event.source.seq = seq;
            out.send(SourceMessage::Change(event)).await?;
            seq += 1;
            rows += 1;
        }
        drop(result);
        tracing::info!(table = %format!("{db}.{table}"), rows, "table copied");
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(|e| query_error(e, "ending the snapshot transaction"))?;
    let _ = conn.disconnect().await;
    context.progress.set_snapshotting(false);
    out.send(SourceMessage::Commit {
        position: snapshot_position,
        resume_from: start.clone(),
        commit_ts: None,
    })
    .await?;
    out.flush().await?;
    Ok(Some(start))
}

/// InnoDB's estimate of a table's rows: good enough for a rate and an ETA, and free.
pub async fn row_estimate(conn: &mut Conn, db: &str, table: &str) -> Option<u64> {
    conn.exec_first::<Option<u64>, _, _>(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (db, table),
    )
    .await
    .ok()
    .flatten()
    .flatten()
}

/// A name as a quoted identifier.
pub fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A row read by a query as a snapshot insert (its position and seq are the caller's to set).
pub fn snapshot_event(
    decoded: &DecodedTable,
    db_name: &Name,
    values: Vec<My>,
) -> Result<ChangeEvent, PipelineError> {
    let mut cells = Vec::with_capacity(values.len());
    for ((column, kind), value) in decoded
        .schema
        .columns
        .iter()
        .zip(&decoded.kinds)
        .zip(values)
    {
        let value = snapshot_value(kind, value).map_err(|why| {
            PipelineError::definite(
                "decode",
                format!("{}.{}: {why}", decoded.info.qualified(), column.name),
            )
        })?;
        cells.push((column.name, value));
    }
    let after = Row(cells);
    let key = Row(decoded
        .info
        .key
        .iter()
        .filter_map(|&i| after.0.get(i).cloned())
        .collect());
    Ok(ChangeEvent {
        op: Op::Insert,
        source: SourceMeta {
            kind: SourceKind::Mysql,
            db: *db_name,
            schema: *db_name,
            table: decoded.schema.table,
            position: Position::Mysql {
                file: Arc::from(""),
                pos: 0,
                gtid: None,
            },
            tx_id: None,
            commit_ts: None,
            seq: 0,
            snapshot: true,
        },
        key: Some(key),
        before: None,
        after: Some(after),
        unchanged: Vec::new(),
        table_schema: Some(Arc::clone(&decoded.schema)),
    })
}

/// Sets a reading session up: TIMESTAMP values in UTC (as the binlog has them), and the
/// isolation level of its transactions.
pub async fn prepare_session(conn: &mut Conn, isolation: &str) -> Result<(), PipelineError> {
    for setting in [
        "SET SESSION time_zone = '+00:00'".to_string(),
        format!("SET SESSION TRANSACTION ISOLATION LEVEL {isolation}"),
    ] {
        conn.query_drop(setting)
            .await
            .map_err(|e| query_error(e, "preparing the snapshot session"))?;
    }
    Ok(())
}

/// Starts a consistent-snapshot transaction and returns the binlog position it corresponds to.
async fn begin_consistent_snapshot(
    conn: &mut Conn,
    mariadb: bool,
) -> Result<Position, PipelineError> {
    prepare_session(conn, "REPEATABLE READ").await?;
    if mariadb {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| query_error(e, "starting the snapshot transaction"))?;
        let status: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|e| query_error(e, "reading the snapshot's binlog position"))?;
        let get = |name: &str| {
            status
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        match (
            get("binlog_snapshot_file"),
            get("binlog_snapshot_position").and_then(|p| p.parse().ok()),
        ) {
            (Some(file), Some(pos)) if !file.is_empty() => Ok(Position::Mysql {
                file: file.into(),
                pos,
                gtid: None,
            }),
            _ => Err(PipelineError::definite(
                "source",
                "the server did not report the snapshot's binlog position",
            )
            .with_hint("is the binary log on? (log_bin)")),
        }
    } else {
        conn.query_drop("FLUSH TABLES WITH READ LOCK")
            .await
            .map_err(|e| {
                query_error(
                    e,
                    "locking tables briefly to pin the snapshot's binlog position",
                )
            })?;
        let started = async {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await?;
            let position = crate::setup::current_position(conn).await;
            conn.query_drop("UNLOCK TABLES").await?;
            Ok::<_, mysql_async::Error>(position)
        }
        .await
        .map_err(|e| query_error(e, "starting the snapshot transaction"))?;
        started
    }
}

/// A value read by a query (binary protocol) rather than from the binlog: ENUM and SET arrive as
/// text, TIMESTAMP as a UTC date-time (the session's time zone), text in the connection's UTF-8.
fn snapshot_value(kind: &ValueKind, value: My) -> Result<Value, String> {
    use mysql_async::binlog::value::BinlogValue;
    match (kind, value) {
        (_, My::NULL) => Ok(Value::Null),
        (ValueKind::Enum(_), My::Bytes(b)) => String::from_utf8(b)
            .map(Value::Text)
            .map_err(|e| e.to_string()),
        (ValueKind::Set(_), My::Bytes(b)) => {
            let text = String::from_utf8(b).map_err(|e| e.to_string())?;
            Ok(Value::Array(
                text.split(',')
                    .filter(|m| !m.is_empty())
                    .map(|m| Value::Text(m.to_string()))
                    .collect(),
            ))
        }
        (ValueKind::Timestamp, My::Date(0, 0, 0, ..)) => Ok(Value::Null),
        (ValueKind::Timestamp, My::Date(y, mo, d, h, mi, s, us)) => {
            Ok(Value::TimestampTz(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}Z",
                if us == 0 {
                    String::new()
                } else {
                    format!(".{us:06}")
                }
            )))
        }
        (ValueKind::Year, My::Int(y)) => Ok(Value::Int(y)),
        (ValueKind::Year, My::UInt(y)) => Ok(Value::Int(y as i64)),
        (ValueKind::Text(_), My::Bytes(b)) => String::from_utf8(b)
            .map(Value::Text)
            .map_err(|e| e.to_string()),
        (kind, value) => decode(kind, BinlogValue::Value(value)),
    }
}
