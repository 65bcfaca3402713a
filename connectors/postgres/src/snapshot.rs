//! The initial snapshot: existing rows, read in the snapshot the slot exported when it was created,
//! so that streaming from the slot's consistent point continues exactly where the copy ends.
//!
//! ```text
//!  CREATE_REPLICATION_SLOT .. EXPORT_SNAPSHOT ─▶ (other connection) SET TRANSACTION SNAPSHOT
//!      ─▶ cursor per table ─▶ inserts marked `snapshot` ─▶ Commit ─▶ START_REPLICATION at the
//!         consistent point
//! ```
//!
//! A snapshot interrupted by a crash cannot be resumed (the exported snapshot is gone); the
//! source then recreates the slot and copies again.

use std::sync::Arc;

use cdc_core::Name;
use cdc_core::{
    ChangeEvent, EventSender, Lsn, Op, PipelineError, Position, Row, SourceKind, SourceMeta,
};

use tokio::sync::watch;

use crate::errors::classify;
use crate::schema::{quote_literal, Catalog, Column, Relation, TypeCache, SESSION_SETTINGS};
use crate::setup::TableRef;
use crate::values::decode_text;
use crate::wire::{ConnectParams, Connection, RowFields, WireError};

/// Rows fetched per round trip, before adapting to the row size.
const FETCH_ROWS: usize = 2000;
/// Bytes of rows to hold per fetch: keeps memory bounded for wide rows.
const FETCH_BYTES: usize = 8 << 20;

pub struct SnapshotRun<'a> {
    pub params: &'a ConnectParams,
    pub catalog: &'a mut Catalog,
    pub types: &'a mut TypeCache,
    pub db: Name,
    pub snapshot_name: &'a str,
    /// Snapshot rows sort before every streamed transaction: they carry the position just before
    /// the consistent point, where the first streamed commit may already sit.
    pub position: Lsn,
    /// Turns true on shutdown: the copy stops between fetches.
    pub shutdown: watch::Receiver<bool>,
    /// Where the rows each table expects are reported (status: estimate, rate, ETA).
    pub progress: Arc<cdc_core::SourceProgress>,
}

impl SnapshotRun<'_> {
    /// Copies every table, then sends the snapshot's commit. Returns the rows copied, or `None`
    /// when a shutdown interrupted the copy (nothing is committed; the next start copies again).
    pub async fn copy(
        &mut self,
        tables: &[TableRef],
        out: &mut EventSender,
        resume_from: Lsn,
    ) -> Result<Option<u64>, PipelineError> {
        let user = self.params.user.clone();
        let mut conn = Connection::connect(self.params, false, SESSION_SETTINGS)
            .await
            .map_err(|e| classify(e, "connecting for the snapshot", &user))?;
        let begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(self.snapshot_name)
        );
        conn.simple_query(&begin)
            .await
            .map_err(|e| classify(e, "opening the snapshot transaction", &user))?;
        let mut seq = 0u64;
        for table in tables {
            let relation = describe_table(self.catalog, self.types, table).await?;
            let estimate = conn
                .simple_query(&estimate_sql(table))
                .await
                .map_err(|e| classify(e, "estimating a table's rows", &user))?;
            if let Some(rows) = parse_estimate(&estimate) {
                self.progress.set_snapshot_estimate(table.qualified(), rows);
            }
            let Some(rows) = copy_table(
                &mut conn,
                &relation,
                &self.db,
                self.position,
                &mut seq,
                out,
                &user,
                &self.shutdown,
            )
            .await?
            else {
                tracing::info!(table = %table.qualified(), "snapshot interrupted by shutdown");
                let _ = conn.close().await;
                return Ok(None);
            };
            tracing::info!(table = %table.qualified(), rows, "snapshot of table done");
        }
        conn.simple_query("COMMIT")
            .await
            .map_err(|e| classify(e, "closing the snapshot transaction", &user))?;
        let _ = conn.close().await;
        out.send(cdc_core::SourceMessage::Commit {
            position: Position::Postgres { lsn: self.position },
            resume_from: Position::Postgres { lsn: resume_from },
            commit_ts: None,
        })
        .await?;
        Ok(Some(seq))
    }
}

/// The table's columns, key and portable schema, as the catalog describes them now.
pub(crate) async fn describe_table(
    catalog: &mut Catalog,
    types: &mut TypeCache,
    table: &TableRef,
) -> Result<Relation, PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = {} AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            table.oid
        ))
        .await?;
    let mut columns = Vec::with_capacity(r.rows.len());
    for i in 0..r.rows.len() {
        let type_oid = r
            .get(i, "atttypid")
            .and_then(|s| s.parse().ok())
            .unwrap_or(25);
        columns.push(Column {
            name: Name::new(r.get(i, "attname").unwrap_or_default()),
            type_oid,
            type_modifier: r
                .get(i, "atttypmod")
                .and_then(|s| s.parse().ok())
                .unwrap_or(-1),
            kind: types.resolve(type_oid, catalog).await?,
            identity: false,
        });
    }
    let key_names = crate::schema::identity_columns(catalog, table.oid).await?;
    let key = if key_names.is_empty() {
        // REPLICA IDENTITY FULL without a primary key: the whole row identifies it.
        (0..columns.len()).collect()
    } else {
        crate::schema::key_indexes(&columns, &key_names)
    };
    Relation::build(
        catalog,
        table.oid,
        &table.schema,
        &table.name,
        columns,
        key,
        !key_names.is_empty(),
        true,
    )
    .await
}

/// The planner's estimate of a table's rows, or an exact count for a table never analyzed.
pub(crate) fn estimate_sql(table: &TableRef) -> String {
    format!(
        "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint \
         ELSE (SELECT count(*) FROM ONLY {sql}) END FROM pg_class c WHERE c.oid = {lit}::regclass",
        sql = table.sql_name(),
        lit = quote_literal(&table.sql_name()),
    )
}

pub(crate) fn parse_estimate(result: &crate::wire::QueryResult) -> Option<u64> {
    result
        .rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
}

/// A snapshot read of one row, as an insert marked `snapshot`, decoded straight from the
/// query's fields.
pub(crate) fn snapshot_event(
    relation: &Relation,
    db: &Name,
    mut fields: RowFields<'_>,
    position: Lsn,
    seq: u64,
) -> Result<ChangeEvent, WireError> {
    let mut values = Vec::with_capacity(relation.columns.len());
    for column in relation.columns.iter() {
        let Some(text) = fields.next_field()? else {
            break;
        };
        let value = match text {
            None => cdc_core::Value::Null,
            Some(text) => decode_text(&column.kind, text),
        };
        values.push((column.name, value));
    }
    let after = Row(values);
    let key = Row(relation
        .key
        .iter()
        .filter_map(|&i| after.0.get(i).cloned())
        .collect());
    Ok(ChangeEvent {
        op: Op::Insert,
        source: SourceMeta {
            kind: SourceKind::Postgres,
            db: *db,
            schema: relation.schema,
            table: relation.name,
            position: Position::Postgres { lsn: position },
            tx_id: None,
            commit_ts: None,
            seq,
            snapshot: true,
        },
        key: Some(key),
        before: None,
        after: Some(after),
        unchanged: vec![],
        table_schema: Some(Arc::clone(&relation.table_schema)),
    })
}

#[allow(clippy::too_many_arguments)]
async fn copy_table(
    conn: &mut Connection,
    relation: &Relation,
    db: &Name,
    position: Lsn,
    seq: &mut u64,
    out: &mut EventSender,
    user: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<u64>, PipelineError> {
    let columns: Vec<String> = relation
        .columns
        .iter()
        .map(|c| crate::schema::quote_ident(&c.name))
        .collect();
    let table_sql = format!(
        "{}.{}",
        crate::schema::quote_ident(&relation.schema),
        crate::schema::quote_ident(&relation.name)
    );
    conn.simple_query(&format!(
        "DECLARE cdc_snapshot NO SCROLL CURSOR FOR SELECT {} FROM ONLY {table_sql}",
        if columns.is_empty() {
            "NULL".to_string()
        } else {
            columns.join(", ")
        }
    ))
    .await
    .map_err(|e| classify(e, &format!("reading {}", relation.qualified()), user))?;
    let mut fetch = FETCH_ROWS;
    let mut copied = 0u64;
    loop {
        if *shutdown.borrow() {
            return Ok(None);
        }
        let mut events = Vec::new();
        conn.simple_query_each(&format!("FETCH {fetch} FROM cdc_snapshot"), |fields| {
            events.push(snapshot_event(relation, db, fields, position, 0)?);
            Ok(())
        })
        .await
        .map_err(|e| classify(e, &format!("reading {}", relation.qualified()), user))?;
        if events.is_empty() {
            break;
        }
        let mut bytes = 0usize;
        for mut event in events {
            bytes += event.approx_size();
            event.source.seq = *seq;
            out.send(cdc_core::SourceMessage::Change(event)).await?;
            *seq += 1;
            copied += 1;
        }
        let average = (bytes / fetch.max(1)).max(1);
        fetch = (FETCH_BYTES / average).clamp(1, FETCH_ROWS);
    }
    conn.simple_query("CLOSE cdc_snapshot")
        .await
        .map_err(|e| classify(e, "closing the snapshot cursor", user))?;
    Ok(Some(copied))
}
