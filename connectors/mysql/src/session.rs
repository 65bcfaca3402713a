//! One binlog connection's streaming session: each event read turned into changes, commits and
//! schema versions (see the source's module documentation for the event flow).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::chunked::ChunkedSnapshot;
use cdc_core::time::format_utc_micros_short;
use cdc_core::Name;
use cdc_core::{
    ChangeEvent, EventSender, Op, PipelineError, Position, Row, SourceKind, SourceMessage,
    SourceMeta, StreamContext,
};
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::Conn;

use crate::chunked::{signal_marks, stream_order};
use crate::errors::decode_error;
use crate::rows::{build_row, decode_rows, ColumnTypes};
use crate::schema::{from_table_map, map_column_names, read_table, DecodedTable};
use crate::setup::connect;
use crate::source::MysqlSource;

/// Transactions that touch no replicated table still move the checkpoint, at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

// MariaDB event type codes (mysql_common does not know them).
const MARIA_ANNOTATE_ROWS: u8 = 0xa0;
const MARIA_BINLOG_CHECKPOINT: u8 = 0xa1;
const MARIA_GTID: u8 = 0xa2;
const MARIA_GTID_LIST: u8 = 0xa3;
const MARIA_START_ENCRYPTION: u8 = 0xa4;
/// An event the server says a replica may skip if it does not know it.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;

/// The transaction being read.
struct OpenTransaction {
    position: Position,
    commit_ts: Arc<str>,
    seq: u64,
    /// Opened by a GTID event (a BEGIN that follows belongs to it).
    by_gtid: bool,
}

/// A table id of the current binlog file: its map, and for a replicated table its columns and
/// the map's column types.
struct MappedTable {
    map: TableMapEvent<'static>,
    decoded: Option<(Arc<DecodedTable>, Arc<ColumnTypes>)>,
    /// The snapshot's signal table: its inserted rows are watermarks.
    signal: bool,
}

/// One binlog connection's worth of state.
pub(crate) struct Session {
    /// The binlog file being read.
    file: Arc<str>,
    /// Replicated tables by `db.table`, with the columns in force at the current position.
    tables: HashMap<String, Arc<DecodedTable>>,
    /// Table ids of the current binlog, with their map event and (if replicated) columns.
    table_maps: HashMap<u64, MappedTable>,
    open: Option<OpenTransaction>,
    /// A second connection for `information_schema` while the first streams.
    pub(crate) meta_conn: Option<Conn>,
    last_progress: Instant,
    db_name: Name,
    /// Tables a DDL named, with the offset after it: their columns are read at the next map.
    stale: HashMap<String, Position>,
    /// A format description event has been read (the reader knows the checksum algorithm).
    format_seen: bool,
    /// The server ends every event with a CRC32.
    checksums: bool,
    /// The chunked snapshot's workers and windows (watermark method only).
    pub(crate) snapshot: Option<ChunkedSnapshot>,
    /// `database.table` whose rows are watermarks.
    signal_table: String,
}

fn position(file: &Arc<str>, pos: u64, gtid: Option<Arc<str>>) -> Position {
    Position::Mysql {
        file: Arc::clone(file),
        pos,
        gtid,
    }
}

impl Session {
    pub(crate) fn new(
        file: Arc<str>,
        tables: HashMap<String, Arc<DecodedTable>>,
        checksums: bool,
        snapshot: Option<ChunkedSnapshot>,
        signal_table: &str,
    ) -> Self {
        Session {
            file,
            tables,
            table_maps: HashMap::new(),
            open: None,
            meta_conn: None,
            last_progress: Instant::now(),
            db_name: Name::new(""),
            format_seen: false,
            checksums,
            stale: HashMap::new(),
            snapshot,
            signal_table: signal_table.to_string(),
        }
    }

    pub(crate) async fn handle(
        &mut self,
        event: &Event,
        source: &mut MysqlSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        verify_checksum(event)?;
        let header = event.header();
        let end = u64::from(header.log_pos());
        let start = end.saturating_sub(u64::from(header.event_size()));
        let timestamp = header.timestamp();
        let raw_type = header.event_type_raw();
        if end > 0 {
            context.progress.set_head(position(&self.file, end, None));
        }
        let data = event.read_data().map_err(decode_error)?;
        let Some(data) = data else {
            return self
                .mariadb_event(event, raw_type, start, timestamp)
                .map(|_| ());
        };
        match data {
            EventData::RotateEvent(rotate) => {
                let mut name = rotate.name_raw();
                // The rotate that opens the stream comes before any format description, so the
                // reader cannot know the event ends in a checksum: it is left on the name.
                if !self.format_seen && self.checksums && name.len() > 4 {
                    name = &name[..name.len() - 4];
                }
                self.file = Arc::from(String::from_utf8_lossy(name));
                // Table ids are per binlog file.
                self.table_maps.clear();
                if self.open.is_none() {
                    self.progress(out, rotate.position(), true).await?;
                }
            }
            EventData::GtidEvent(gtid) => {
                let sid = gtid.sid();
                let uuid = format!(
                    "{}-{}-{}-{}-{}",
                    hex(&sid[0..4]),
                    hex(&sid[4..6]),
                    hex(&sid[6..8]),
                    hex(&sid[8..10]),
                    hex(&sid[10..16])
                );
                self.begin(start, Some(format!("{uuid}:{}", gtid.gno())), timestamp, true);
            }
            EventData::AnonymousGtidEvent(_) => self.begin(start, None, timestamp, true),
            EventData::QueryEvent(query) => {
                let text = query.query();
                let statement = text.trim();
                let upper = statement
                    .get(..statement.len().min(16))
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if upper == "BEGIN" || upper.starts_with("XA START") {
                    if !self.open.as_ref().is_some_and(|t| t.by_gtid) {
                        self.begin(start, None, timestamp, false);
                    }
                } else if upper == "COMMIT" || upper == "ROLLBACK" || upper.starts_with("XA COMMIT")
                {
                    // A ROLLBACK is logged only when a non-transactional table already changed.
                    self.commit(end, timestamp, out, context).await?;
                } else {
                    let db = query.schema().into_owned();
                    self.ddl(statement, &db, end, timestamp, source, out, context)
                        .await?;
                }
            }
            EventData::FormatDescriptionEvent(_) => self.format_seen = true,
            EventData::XidEvent(_) => self.commit(end, timestamp, out, context).await?,
            EventData::TableMapEvent(map) => self.table_map(map.into_owned(), source).await?,
            EventData::RowsEvent(rows) => self.rows(&rows, out).await?,
            EventData::HeartbeatEvent if self.open.is_none() && end > 0 => {
                self.progress(out, end, true).await?;
            }
            EventData::IncidentEvent(incident) => {
                return Err(PipelineError::definite(
                    "source",
                    format!("the server logged an incident ({incident:?}): the binlog may miss changes from here"),
                )
                .with_hint("check the source server's error log; then `cdc-agent reset --yes` and snapshot again"))
            }
            // Statement-format helpers, file headers, MySQL bookkeeping, compressed-transaction
            // containers (the stream unpacks their events next): nothing to do.
            _ => {}
        }
        Ok(())
    }

    /// MariaDB's own event types; `true` if handled.
    fn mariadb_event(
        &mut self,
        event: &Event,
        raw_type: u8,
        start: u64,
        timestamp: u32,
    ) -> Result<bool, PipelineError> {
        match raw_type {
            MARIA_GTID => {
                let data = event.data();
                if data.len() < 13 {
                    return Err(decode_error("a MariaDB GTID event shorter than 13 bytes"));
                }
                let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                let gtid = format!("{domain}-{}-{seq}", event.header().server_id());
                // A standalone group (flag 0x01: DDL) has no BEGIN either way: the transaction
                // opens here and the DDL's QUERY commits it.
                self.begin(start, Some(gtid), timestamp, true);
                Ok(true)
            }
            MARIA_ANNOTATE_ROWS | MARIA_BINLOG_CHECKPOINT | MARIA_GTID_LIST => Ok(true),
            MARIA_START_ENCRYPTION => Err(PipelineError::definite(
                "source",
                "the binlog is encrypted (encrypt_binlog=ON): its events cannot be read by a replica connection here",
            )
            .with_hint("turn encrypt_binlog off on the source server")),
            0xa5..=0xb0 => Err(PipelineError::definite(
                "source",
                format!("compressed binlog event (type {raw_type:#x}): not supported"),
            )
            .with_hint("SET GLOBAL log_bin_compress = OFF on the source server")),
            _ if event.header().flags_raw() & LOG_EVENT_IGNORABLE_F != 0 => Ok(true),
            other => Err(PipelineError::definite(
                "decode",
                format!("unknown binlog event type {other:#x} that the server does not mark ignorable"),
            )
            .with_hint("report it with the server version; the agent stops rather than guess")),
        }
    }

    fn begin(&mut self, start: u64, gtid: Option<String>, timestamp: u32, by_gtid: bool) {
        self.open = Some(OpenTransaction {
            position: position(&self.file, start, gtid.map(Arc::from)),
            commit_ts: Arc::from(format_utc_micros_short(i64::from(timestamp) * 1_000_000)),
            seq: 0,
            by_gtid,
        });
    }

    async fn commit(
        &mut self,
        end: u64,
        timestamp: u32,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.seq == 0 {
            // Nothing replicated in it: only the checkpoint moves.
            return self.progress(out, end, false).await;
        }
        let Position::Mysql { gtid, .. } = &open.position else {
            unreachable!()
        };
        let resume_from = position(&self.file, end, gtid.clone());
        context.progress.set_last_commit_sent(open.position.clone());
        self.last_progress = Instant::now();
        out.send(SourceMessage::Commit {
            position: open.position,
            resume_from,
            commit_ts: Some(Arc::from(format_utc_micros_short(
                i64::from(timestamp) * 1_000_000,
            ))),
        })
        .await
    }

    /// Between transactions everything up to `end` has been sent: the checkpoint may move there.
    async fn progress(
        &mut self,
        out: &mut EventSender,
        end: u64,
        always: bool,
    ) -> Result<(), PipelineError> {
        if !always && self.last_progress.elapsed() < PROGRESS_EVERY {
            return Ok(());
        }
        self.last_progress = Instant::now();
        out.send(SourceMessage::Progress {
            resume_from: position(&self.file, end, None),
        })
        .await
    }

    async fn meta_conn(&mut self, source: &MysqlSource) -> Result<&mut Conn, PipelineError> {
        if self.meta_conn.is_none() {
            self.meta_conn = Some(connect(&source.config).await?);
        }
        self.meta_conn
            .as_mut()
            .ok_or_else(|| PipelineError::transient("connection", "no metadata connection"))
    }

    /// A statement in the binlog that is not a transaction bracket: DDL. A replicated table it
    /// names gets its columns re-read at its next table map (not now: the agent may be behind
    /// and the server already past further changes), unless the history has the version stored
    /// at this very offset (a DDL seen before, replayed).
    #[allow(clippy::too_many_arguments)]
    async fn ddl(
        &mut self,
        statement: &str,
        default_db: &str,
        end: u64,
        timestamp: u32,
        source: &mut MysqlSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        if self.open.is_none() {
            self.begin(end, None, timestamp, false);
        }
        let at = position(&self.file, end, None);
        let words: Vec<String> = statement
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let schema_change = words.first().is_some_and(|w| {
            matches!(
                w.as_str(),
                "alter" | "create" | "drop" | "rename" | "truncate"
            )
        });
        if schema_change {
            let named: Vec<String> = self
                .tables
                .keys()
                .filter(|name| {
                    let table = name.rsplit('.').next().unwrap_or(name).to_lowercase();
                    words.contains(&table)
                })
                .cloned()
                .collect();
            for name in named {
                match source.history.at(&name, &at) {
                    Some(known) if source.history.has_version_at(&name, &at) => {
                        self.tables.insert(name, known);
                    }
                    _ => {
                        self.stale.insert(name, at.clone());
                    }
                }
            }
        }
        if let Some(table) = truncated_table(statement, default_db) {
            if let Some(snapshot) = self.snapshot.as_mut() {
                snapshot.observe_truncate(&table);
            }
            if let Some(decoded) = self.tables.get(&table).cloned() {
                self.emit(&decoded, Op::Truncate, None, None, None, Vec::new(), out)
                    .await?;
            }
        }
        // DDL commits implicitly: whatever it belongs to ends here.
        self.commit(end, timestamp, out, context).await
    }

    /// A watermark of the chunked snapshot: at a high one, the chunk's rows go out as snapshot
    /// inserts in the watermark's own transaction, and the table's progress is recorded at its
    /// position.
    async fn watermark(&mut self, text: &str, out: &mut EventSender) -> Result<(), PipelineError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(());
        };
        let Some((span, events)) = snapshot.on_watermark(text)? else {
            return Ok(());
        };
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| decode_error("a snapshot watermark outside a transaction"))?;
        let at = stream_order(&open.position).ok_or_else(|| {
            decode_error(format!(
                "binlog file of {} has no sequence number",
                open.position
            ))
        })?;
        // Stored (and flushed) before the rows go out: a sink never holds rows of a chunk the
        // store does not know was sent (see the Postgres session).
        snapshot.chunk_sent(&span, at)?;
        for mut event in events {
            event.source.position = open.position.clone();
            event.source.seq = open.seq;
            open.seq += 1;
            out.send(SourceMessage::Change(event)).await?;
        }
        Ok(())
    }

    async fn table_map(
        &mut self,
        map: TableMapEvent<'static>,
        source: &mut MysqlSource,
    ) -> Result<(), PipelineError> {
        let db = map.database_name().into_owned();
        let table = map.table_name().into_owned();
        let name = format!("{db}.{table}");
        if !source.includes(&db, &table) {
            let signal = name == self.signal_table;
            self.table_maps.insert(
                map.table_id(),
                MappedTable {
                    map,
                    decoded: None,
                    signal,
                },
            );
            return Ok(());
        }
        let names = map_column_names(&map);
        let fits = |d: &DecodedTable| {
            d.info.columns.len() as u64 == map.columns_count()
                && names.as_ref().is_none_or(|names| {
                    names
                        .iter()
                        .zip(&d.info.columns)
                        .all(|(n, c)| n.eq_ignore_ascii_case(&c.name))
                })
        };
        let current = self.tables.get(&name).cloned();
        let stale = self.stale.remove(&name);
        let decoded = match current {
            Some(d) if stale.is_none() && fits(&d) => d,
            _ => {
                // From where the new columns hold: the DDL's end, else this transaction.
                let at = stale.unwrap_or_else(|| {
                    self.open
                        .as_ref()
                        .map(|t| t.position.clone())
                        .unwrap_or_else(|| position(&self.file, 4, None))
                });
                let now = read_table(self.meta_conn(source).await?, &db, &table).await?;
                let info = match now {
                    Some(info) if fits(&DecodedTable::new(info.clone())) => info,
                    // The server is already past further changes: with the table map's own
                    // column names (binlog_row_metadata=FULL) the columns here are still known.
                    now => match &names {
                        Some(names) => from_table_map(&map, names, now.as_ref(), &db, &table),
                        None => {
                            return Err(PipelineError::definite(
                                "schema",
                                format!(
                                    "the binlog at {at} has {} columns for {name}, but the server's table now has \
                                     others: the columns valid at this position are unknown",
                                    map.columns_count()
                                ),
                            )
                            .with_hint("set binlog_row_metadata=FULL on the server (the binlog then names its columns), \
                                        or `cdc-agent reset --yes` and snapshot again"))
                        }
                    },
                };
                let decoded = source.history.record(info, &at)?;
                tracing::info!(table = %name, at = %at, columns = decoded.info.columns.len(), "table columns in force");
                decoded
            }
        };
        self.tables.insert(name, Arc::clone(&decoded));
        let types = Arc::new(ColumnTypes::of(&map)?);
        self.table_maps.insert(
            map.table_id(),
            MappedTable {
                map,
                decoded: Some((decoded, types)),
                signal: false,
            },
        );
        Ok(())
    }

    async fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        out: &mut EventSender,
    ) -> Result<(), PipelineError> {
        let Some(mapped) = self.table_maps.get(&rows.table_id()) else {
            return Err(decode_error(format!(
                "a rows event for table id {} without its table map",
                rows.table_id()
            )));
        };
        if mapped.signal {
            let marks = signal_marks(rows, &mapped.map)?;
            for mark in marks {
                self.watermark(&mark, out).await?;
            }
            return Ok(());
        }
        let Some((decoded, types)) = mapped.decoded.clone() else {
            return Ok(());
        };
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
            _ => Op::Update,
        };
        let changes = if let RowsEventData::PartialUpdateRowsEvent(_) = rows {
            // MySQL's partial JSON updates carry a shared image: mysql_common's own reader.
            let mut changes = Vec::new();
            for row in rows.rows(&mapped.map) {
                let (before, after) = row.map_err(decode_error)?;
                let before = before.map(|r| build_row(&decoded, r)).transpose()?;
                let after = after.map(|r| build_row(&decoded, r)).transpose()?;
                changes.push((before, after));
            }
            changes
        } else {
            decode_rows(rows, &types, &decoded)?
        };
        for (before, after) in changes {
            let (before, after_row, unchanged) = match (op, before, after) {
                (Op::Delete, before, _) => (before, None, Vec::new()),
                (_, before, Some((row, missing))) => (before, Some(row), missing),
                (_, before, None) => (before, None, Vec::new()),
            };
            let before = before.map(|(row, _)| row);
            let key_from = after_row.as_ref().or(before.as_ref());
            let key = key_from.map(|row| key_of(&decoded, row));
            if let Some(snapshot) = self.snapshot.as_mut().filter(|s| s.watching()) {
                // Both keys of a key change: the chunk must not bring back the old one either.
                let keys: Vec<Row> = [before.as_ref(), after_row.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(|row| key_of(&decoded, row))
                    .collect();
                snapshot.observe(&decoded.info.qualified(), &keys.iter().collect::<Vec<_>>());
            }
            self.emit(&decoded, op, key, before, after_row, unchanged, out)
                .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &mut self,
        decoded: &Arc<DecodedTable>,
        op: Op,
        key: Option<Row>,
        before: Option<Row>,
        after: Option<Row>,
        unchanged: Vec<Name>,
        out: &mut EventSender,
    ) -> Result<(), PipelineError> {
        let Some(open) = self.open.as_mut() else {
            return Err(decode_error("a row change outside a transaction"));
        };
        if self.db_name.as_ref() != decoded.schema.schema.as_ref() {
            self.db_name = decoded.schema.schema;
        }
        let event = ChangeEvent {
            op,
            source: SourceMeta {
                kind: SourceKind::Mysql,
                db: self.db_name,
                schema: decoded.schema.schema,
                table: decoded.schema.table,
                position: open.position.clone(),
                tx_id: None,
                commit_ts: Some(Arc::clone(&open.commit_ts)),
                seq: open.seq,
                snapshot: false,
            },
            key,
            before,
            after,
            unchanged,
            table_schema: Some(Arc::clone(&decoded.schema)),
        };
        open.seq += 1;
        out.send(SourceMessage::Change(event)).await
    }
}

fn key_of(decoded: &DecodedTable, row: &Row) -> Row {
    let mut key = Vec::with_capacity(decoded.info.key.len());
    key.extend(decoded.info.key.iter().filter_map(|&i| {
        let name = &decoded.schema.columns.get(i)?.name;
        row.get(name).map(|v| (*name, v.clone()))
    }));
    Row(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// CRC32 of every event, where the server writes one.
fn verify_checksum(event: &Event) -> Result<(), PipelineError> {
    let Some(stored) = event.checksum() else {
        return Ok(());
    };
    if let Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) =
        event.footer().get_checksum_alg()
    {
        let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        if computed != u32::from_le_bytes(stored) {
            return Err(PipelineError::transient(
                "decode",
                format!(
                    "binlog event at {} failed its CRC32 check: corrupted in transit",
                    event.header().log_pos()
                ),
            ));
        }
    }
    Ok(())
}

/// `TRUNCATE [TABLE] [db.]t` → `db.t`.
fn truncated_table(statement: &str, default_db: &str) -> Option<String> {
    let mut words = statement.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("truncate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("table") {
        name = words.next()?;
    }
    let name = name.trim_end_matches(';').replace('`', "");
    Some(match name.split_once('.') {
        Some((db, table)) => format!("{db}.{table}"),
        None => format!("{default_db}.{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_statements_name_their_table() {
        assert_eq!(
            truncated_table("TRUNCATE TABLE `t`", "d").as_deref(),
            Some("d.t")
        );
        assert_eq!(truncated_table("truncate x.y", "d").as_deref(), Some("x.y"));
        assert_eq!(truncated_table("ALTER TABLE t ADD c int", "d"), None);
    }
}
