//! The MySQL/MariaDB source: registers as a replica and turns binlog row events into changes.
//!
//! ```text
//!  GTID / BEGIN ─▶ open a transaction at this event's offset (its position, with the GTID)
//!  TABLE_MAP    ─▶ table id → the table's columns valid here (schema history), checked
//!  *_ROWS       ─▶ one change per row, decoded with those columns
//!  XID / COMMIT ─▶ Commit { position, resume_from: the offset after this event }
//!  DDL (QUERY)  ─▶ a new schema version stored at the offset after it; TRUNCATE as a change
//!  HEARTBEAT / ROTATE between transactions ─▶ Progress (the checkpoint may move on)
//! ```
//!
//! Changes carry the position of their transaction's *first* event: it is known before the rows
//! arrive, so nothing waits for a whole transaction in memory, and it orders transactions as the
//! binlog does. The position the stream restarts from is only ever a transaction boundary.
//!
//! MariaDB's own events (GTID, GTID list, binlog checkpoint, annotate rows) are unknown to
//! `mysql_common`: they are matched by type code here, each handled or skipped on purpose; an
//! unknown event that the server does not mark ignorable stops the pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdc_core::chunked::{self, ChunkedSnapshot, SnapshotMethod, WorkerSetup};
use cdc_core::pipeline::durable_stream_order;
use cdc_core::{EventSender, PipelineError, Position, Source, StateTree, StreamContext};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};

use crate::chunked::{resolve_method, stream_order, MyChunkReaders};
use crate::errors::classify;
use crate::schema::{read_table, DecodedTable, SchemaHistory};
use crate::session::Session;
use crate::setup::{
    binlog_files, binlog_settings, connect, current_position, purged_error, settings_errors,
    MysqlConfig,
};
use crate::snapshot;

/// How often the server sends a heartbeat when it has nothing else to send.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// No event and no heartbeat for this long: the connection is dead, not the server quiet.
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

pub struct MysqlSource {
    pub(crate) config: MysqlConfig,
    pub(crate) patterns: Vec<String>,
    pub(crate) history: SchemaHistory,
    /// Where chunked snapshots keep their requests and progress.
    state: Arc<dyn StateTree>,
    /// `Auto` resolved: watermarks if the agent may write the signal table.
    method: SnapshotMethod,
}

impl MysqlSource {
    /// Connects once to check the server's binlog settings (a wrong one is a definite error with
    /// its fix) and loads the schema history.
    pub async fn prepare(
        config: MysqlConfig,
        state: Arc<dyn StateTree>,
    ) -> Result<Self, PipelineError> {
        let mut conn = connect(&config).await?;
        let settings = binlog_settings(&mut conn).await?;
        if let Some(e) = settings_errors(&settings).into_iter().next() {
            let _ = conn.disconnect().await;
            return Err(e);
        }
        let method = resolve_method(&config, &mut conn).await;
        let _ = conn.disconnect().await;
        Ok(MysqlSource {
            patterns: config.patterns(),
            config,
            history: SchemaHistory::load(Arc::clone(&state))?,
            state,
            method: method?,
        })
    }

    pub(crate) fn includes(&self, db: &str, table: &str) -> bool {
        self.config.includes(&self.patterns, db, table)
    }

    /// Where streaming starts: the checkpoint (if the server still has it), else after an initial
    /// snapshot, else the server's current position. `None`: a shutdown came first.
    async fn start_position(
        &mut self,
        conn: &mut Conn,
        resume_from: Option<Position>,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<Option<Position>, PipelineError> {
        // Killed before its first checkpoint, the agent may have delivered changes already: the
        // sink's last record is where the stream goes on (from "now" would skip what the
        // source wrote in between). The snapshot's requests were stored before any change went
        // out, and its progress counts up to that record.
        // (A one-transaction copy cut short is not resumable: it starts over.)
        let resumable = !self.config.initial_snapshot || self.method == SnapshotMethod::Watermark;
        let resume_from = resume_from.or_else(|| {
            let point = context.sink_resume.as_ref().filter(|_| resumable)?;
            matches!(point.position, Position::Mysql { .. }).then(|| {
                tracing::info!(at = %point.position, "no checkpoint yet: resuming at the sink's last record");
                point.position.clone()
            })
        });
        match resume_from {
            Some(p @ Position::Mysql { .. }) => {
                let Position::Mysql { file, .. } = &p else {
                    unreachable!()
                };
                let files = binlog_files(conn).await?;
                if !files.iter().any(|(f, _)| f.as_str() == &**file) {
                    return Err(purged_error(file, files.first().map(|(f, _)| f.as_str())));
                }
                Ok(Some(p))
            }
            Some(other) => Err(PipelineError::definite(
                "config",
                format!(
                    "the checkpoint is a {} position, the source is MySQL",
                    other.source_name()
                ),
            )
            .with_hint("run `cdc-agent reset --yes` to start this pipeline over")),
            None if self.config.initial_snapshot && self.method == SnapshotMethod::Watermark => {
                // Streaming starts now; the copy runs in chunks alongside it.
                let (tables, _) = crate::setup::resolve_tables(&self.config, conn).await?;
                let names: Vec<String> = tables.iter().map(|(d, t)| format!("{d}.{t}")).collect();
                chunked::request_initial(self.state.as_ref(), &names)?;
                current_position(conn).await.map(Some)
            }
            None if self.config.initial_snapshot => snapshot::copy(self, out, context).await,
            None => current_position(conn).await.map(Some),
        }
    }

    /// The columns of every replicated table valid at `at`: from the history, else read now.
    async fn load_tables(
        &mut self,
        conn: &mut Conn,
        at: &Position,
    ) -> Result<HashMap<String, Arc<DecodedTable>>, PipelineError> {
        let (tables, _) = crate::setup::resolve_tables(&self.config, conn).await?;
        let mut current = HashMap::new();
        for (db, table) in tables {
            let name = format!("{db}.{table}");
            let decoded = match self.history.at(&name, at) {
                Some(known) => known,
                None => match read_table(conn, &db, &table).await? {
                    Some(info) => self.history.record(info, at)?,
                    None => continue,
                },
            };
            current.insert(name, decoded);
        }
        Ok(current)
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn stream(
        &mut self,
        resume_from: Option<Position>,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        context
            .progress
            .set_snapshot_resumable(self.method == SnapshotMethod::Watermark);
        if self.config.snapshot_only && resume_from.is_some() {
            tracing::info!(
                "snapshot = \"initial_only\" and the copy is already done: nothing to do"
            );
            return Ok(());
        }
        let mut conn = connect(&self.config).await?;
        let settings = binlog_settings(&mut conn).await?;
        if let Some(e) = settings_errors(&settings).into_iter().next() {
            return Err(e);
        }
        // Snapshot progress counts only up to what the sink has made durable.
        let durable = durable_stream_order(
            resume_from.as_ref(),
            context.sink_resume.as_ref(),
            stream_order,
        );
        let Some(start) = self
            .start_position(&mut conn, resume_from, out, context)
            .await?
        else {
            return Ok(());
        };
        if self.config.snapshot_only {
            return Ok(());
        }
        let tables = self.load_tables(&mut conn, &start).await?;
        let (names, _) = crate::setup::resolve_tables(&self.config, &mut conn).await?;
        let Position::Mysql { file, pos, .. } = start.clone() else {
            unreachable!("start_position returns MySQL positions")
        };
        let checksum: Option<String> = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(|e| classify(e, "reading binlog_checksum"))?;
        let checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        // Ask for MariaDB's GTID events (not BEGIN stand-ins), and for heartbeats when idle.
        for setting in [
            "SET @mariadb_slave_capability = 4".to_string(),
            format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
        ] {
            conn.query_drop(setting)
                .await
                .map_err(|e| classify(e, "preparing the binlog connection"))?;
        }
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(file.as_bytes())
            .with_pos(pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| classify(e, "requesting the binlog"))?;
        tracing::info!(from = %start, server_id = self.config.server_id, "streaming binlog changes");
        let snapshot = if self.method == SnapshotMethod::Watermark {
            let mut snapshot = ChunkedSnapshot::new(
                WorkerSetup {
                    readers: Box::new(MyChunkReaders {
                        config: self.config.clone(),
                        signal_table: self.config.signal_table.clone(),
                    }),
                    tables: names.iter().map(|(d, t)| format!("{d}.{t}")).collect(),
                    chunk_rows: self.config.snapshot_chunk_rows,
                    progress: Arc::clone(&context.progress),
                    state: Arc::clone(&self.state),
                },
                self.config.snapshot_workers,
            );
            snapshot.resume(durable)?;
            Some(snapshot)
        } else {
            None
        };
        // After the copies are queued: `status` never shows "streaming" before "snapshotting".
        context.progress.set_streaming(true);
        let mut session =
            Session::new(file, tables, checksums, snapshot, &self.config.signal_table);
        let mut shutdown = context.shutdown.clone();
        let mut poll_requests = tokio::time::interval(Duration::from_secs(1));
        poll_requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break Ok(()),
                report = ChunkedSnapshot::next_report(&mut session.snapshot) => {
                    if let Some(snapshot) = session.snapshot.as_mut() {
                        if let Err(e) = snapshot.on_report(report) {
                            break Err(e);
                        }
                    }
                }
                _ = poll_requests.tick() => {
                    if let Some(snapshot) = session.snapshot.as_mut() {
                        if let Err(e) = snapshot.poll_requests() {
                            break Err(e);
                        }
                    }
                }
                next = tokio::time::timeout(SILENCE_LIMIT, stream.next()) => {
                    let event = match next {
                        Err(_) => break Err(PipelineError::transient(
                            "connection",
                            format!("no binlog event or heartbeat for {}s: the connection is presumed dead", SILENCE_LIMIT.as_secs()),
                        )),
                        Ok(None) => break Err(PipelineError::transient("connection", "the server ended the binlog stream")),
                        Ok(Some(Err(e))) => break Err(classify(e, "reading the binlog")),
                        Ok(Some(Ok(event))) => event,
                    };
                    if let Err(e) = session.handle(&event, self, out, context).await {
                        break Err(e);
                    }
                }
            }
        };
        context.progress.set_streaming(false);
        let _ = stream.close().await;
        if let Some(meta) = session.meta_conn.take() {
            let _ = meta.disconnect().await;
        }
        result
    }
}
