//! The Postgres source: a logical replication slot read with pgoutput over the streaming
//! replication protocol.
//!
//! ```text
//!  prepare: wal_level, tables, publication
//!  stream:  replication connection ─▶ slot (create + snapshot when new) ─▶ START_REPLICATION
//!           XLogData ─▶ pgoutput::decode ─▶ relation cache ─▶ ChangeEvent ─▶ EventSender
//!           keepalive ─▶ Progress (nothing in flight) / reply
//!           every second ─▶ standby status update with the *confirmed* (durable) position
//! ```
//!
//! Only the checkpointer's confirmed position is ever sent as flushed, so the slot keeps every
//! change the sink has not made durable.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cdc_core::Name;
use cdc_core::{
    ChangeEvent, EventSender, Lsn, Op, PipelineError, Position, Row, Source, SourceKind,
    SourceMessage, SourceMeta, SourceProgress, StateTree, StreamContext, Value,
};
use tokio::sync::watch;

use crate::chunked::{PgChunkReaders, WATERMARK_PREFIX};
use crate::errors::classify;
use crate::pgoutput::{self, Message, OldKind, Tuple, TupleValue};
use crate::schema::{
    identity_columns, key_indexes, quote_ident, quote_literal, Catalog, Column, Relation,
    TypeCache, SESSION_SETTINGS,
};
use crate::setup::{
    connect_params, ensure_publication, resolve_tables, slot_info, table_included, wal_level,
    wal_level_error, PostgresConfig, TableRef,
};
use crate::snapshot::SnapshotRun;
use crate::values::decode_text;
use crate::wire::{ConnectParams, Connection};
use cdc_core::chunked::{self, ChunkedSnapshot, SnapshotMethod, WorkerSetup};

/// How often the standby status update goes out; well under any sane wal_sender_timeout.
const FEEDBACK_INTERVAL: Duration = Duration::from_secs(1);
/// After a SIGKILL the server may take a moment to notice our old walsender is gone.
const SLOT_BUSY_RETRIES: u32 = 10;
/// How long a shutdown waits for the sink to make the last transactions durable.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

pub struct PostgresSource {
    config: PostgresConfig,
    params: ConnectParams,
    db: Name,
    catalog: Catalog,
    types: TypeCache,
    tables: Vec<TableRef>,
    /// Shared with the agent while streaming (set at the start of each `stream`).
    progress: Arc<SourceProgress>,
    shutdown: watch::Receiver<bool>,
    /// Where chunked snapshots keep their requests and progress.
    state: Arc<dyn StateTree>,
    /// The snapshot method in force (never `Auto`).
    method: SnapshotMethod,
}

/// The transaction being decoded.
struct OpenTransaction {
    position: Position,
    xid: u32,
    commit_ts: Arc<str>,
    seq: u64,
}

impl PostgresSource {
    /// Checks the server and the tables and makes sure the publication exists. Errors here are
    /// the operator's to fix (or transient, if the server is not reachable).
    pub async fn prepare(
        config: PostgresConfig,
        state: Arc<dyn StateTree>,
    ) -> Result<Self, PipelineError> {
        let params = connect_params(&config)?;
        let mut catalog = Catalog::new(params.clone());
        let level = wal_level(&mut catalog).await?;
        if level != "logical" {
            return Err(wal_level_error(&level));
        }
        let (tables, problems) = resolve_tables(&mut catalog, &config).await?;
        if !problems.is_empty() {
            let (first, rest) = problems.split_at(1);
            let mut error = PipelineError::definite("config", first.join(""));
            if !rest.is_empty() {
                error
                    .message
                    .push_str(&format!("; and {} more: {}", rest.len(), rest.join("; ")));
            }
            return Err(error);
        }
        ensure_publication(&mut catalog, &config, &tables).await?;
        let method = match config.snapshot_method {
            SnapshotMethod::Auto => {
                // A watermark is a logical message: a source that refuses one gets the
                // one-transaction copy. The probe is non-transactional: it reaches the stream
                // outside any transaction, so it moves no target's recorded position.
                match catalog
                    .query("SELECT pg_logical_emit_message(false, 'cdc-agent-probe', '')")
                    .await
                {
                    Ok(_) => SnapshotMethod::Watermark,
                    Err(e) => {
                        tracing::warn!(error = %e, "the source takes no watermarks: snapshots run in one transaction and cannot resume mid-table");
                        SnapshotMethod::Transaction
                    }
                }
            }
            other => other,
        };
        Ok(PostgresSource {
            state,
            method,
            db: Name::new(params.dbname.as_str()),
            params,
            config,
            catalog,
            types: TypeCache::default(),
            tables,
            progress: Arc::default(),
            shutdown: watch::channel(false).1,
        })
    }

    async fn connect_replication(&self) -> Result<Connection, PipelineError> {
        Connection::connect(&self.params, true, SESSION_SETTINGS)
            .await
            .map_err(|e| classify(e, "opening the replication connection", &self.params.user))
    }

    /// Creates the slot; with `snapshot`, copies the existing rows in its exported snapshot.
    /// Returns the LSN to stream from.
    async fn create_slot(
        &mut self,
        repl: &mut Connection,
        snapshot: bool,
        out: &mut EventSender,
    ) -> Result<Option<Lsn>, PipelineError> {
        if self.method == SnapshotMethod::Watermark {
            // The copy runs in chunks once streaming has started.
            let sql = format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                quote_ident(&self.config.slot)
            );
            let start = self.create_slot_with(repl, &sql, false, out).await?;
            if snapshot {
                self.request_initial_snapshot()?;
            }
            return Ok(start);
        }
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}",
            quote_ident(&self.config.slot),
            if snapshot {
                "EXPORT_SNAPSHOT"
            } else {
                "NOEXPORT_SNAPSHOT"
            }
        );
        self.create_slot_with(repl, &sql, snapshot, out).await
    }

    /// `snapshot = "initial_only"`: a copy in the snapshot of a temporary slot, which the server
    /// drops with the connection, so nothing keeps WAL for a pipeline that will not stream.
    async fn copy_only(&mut self, out: &mut EventSender) -> Result<(), PipelineError> {
        let mut repl = self.connect_replication().await?;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(&format!("{}_copy", self.config.slot))
        );
        self.create_slot_with(&mut repl, &sql, true, out).await?;
        let _ = repl.close().await;
        Ok(())
    }

    async fn create_slot_with(
        &mut self,
        repl: &mut Connection,
        sql: &str,
        snapshot: bool,
        out: &mut EventSender,
    ) -> Result<Option<Lsn>, PipelineError> {
        let user = self.params.user.clone();
        let created = repl
            .simple_query(sql)
            .await
            .map_err(|e| classify(e, "creating the replication slot", &user))?;
        let consistent: Lsn = created
            .get(0, "consistent_point")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                PipelineError::transient(
                    "source",
                    "CREATE_REPLICATION_SLOT returned no consistent point",
                )
            })?;
        tracing::info!(slot = %self.config.slot, consistent_point = %consistent, "created replication slot");
        if snapshot {
            let name = created
                .get(0, "snapshot_name")
                .unwrap_or_default()
                .to_string();
            let tables = self.tables.clone();
            let mut run = SnapshotRun {
                params: &self.params,
                catalog: &mut self.catalog,
                types: &mut self.types,
                db: self.db,
                snapshot_name: &name,
                position: Lsn(consistent.0.saturating_sub(1)),
                shutdown: self.shutdown.clone(),
                progress: Arc::clone(&self.progress),
            };
            self.progress.set_snapshotting(true);
            let copied = run.copy(&tables, out, consistent).await;
            self.progress.set_snapshotting(false);
            let Some(rows) = copied? else {
                return Ok(None);
            };
            tracing::info!(
                rows,
                tables = tables.len(),
                "initial snapshot sent; streaming from the consistent point"
            );
        }
        Ok(Some(consistent))
    }

    /// Asks for the initial copy of every table (once: a restart before the first checkpoint
    /// keeps the request).
    fn request_initial_snapshot(&self) -> Result<(), PipelineError> {
        let tables: Vec<String> = self.tables.iter().map(TableRef::qualified).collect();
        chunked::request_initial(self.state.as_ref(), &tables)
    }

    async fn drop_slot(&mut self) -> Result<(), PipelineError> {
        self.catalog
            .query(&format!(
                "SELECT pg_drop_replication_slot({})",
                quote_literal(&self.config.slot)
            ))
            .await
            .map(|_| ())
    }

    /// Where to start: the checkpoint, or a new slot (and snapshot) when there is none.
    async fn start_position(
        &mut self,
        repl: &mut Connection,
        resume_from: Option<Position>,
        out: &mut EventSender,
    ) -> Result<Option<Lsn>, PipelineError> {
        let checkpoint = match resume_from {
            Some(Position::Postgres { lsn }) => Some(lsn),
            Some(other) => {
                return Err(PipelineError::definite(
                    "config",
                    format!(
                        "the stored checkpoint is a {} position, but the source is postgres",
                        other.source_name()
                    ),
                )
                .with_hint("run `cdc-agent reset --yes` to start this pipeline over"))
            }
            None => None,
        };
        let slot = slot_info(&mut self.catalog, &self.config.slot).await?;
        if let Some(info) = &slot {
            if info.plugin != "pgoutput" || info.database != self.params.dbname {
                return Err(PipelineError::definite(
                    "slot",
                    format!(
                        "replication slot {} exists for plugin {} in database {}",
                        self.config.slot, info.plugin, info.database
                    ),
                )
                .with_hint("set source.slot to a name of this pipeline's own"));
            }
        }
        match (checkpoint, slot) {
            (Some(lsn), Some(_)) => Ok(Some(lsn)),
            (Some(lsn), None) => Err(PipelineError::definite(
                "slot",
                format!("replication slot {} is gone, but the checkpoint ({lsn}) needs it: the changes since then are lost to this pipeline", self.config.slot),
            )
            .with_hint("run `cdc-agent reset --yes` and start again with a new snapshot")),
            (None, Some(_)) if self.config.initial_snapshot && self.method == SnapshotMethod::Watermark => {
                // The slot keeps every change since it was made; the copy resumes from the
                // state store (from the start: no chunk is durable without a checkpoint).
                self.request_initial_snapshot()?;
                Ok(Some(Lsn(0)))
            }
            (None, Some(_)) if self.config.initial_snapshot => {
                // A slot without a checkpoint: the snapshot never completed (or the state store
                // was lost). The exported snapshot is gone, so start over consistently.
                tracing::warn!(slot = %self.config.slot, "slot exists but no snapshot was completed; recreating it and copying again");
                self.drop_slot().await?;
                self.create_slot(repl, true, out).await
            }
            (None, Some(_)) => Ok(Some(Lsn(0))),
            (None, None) => self.create_slot(repl, self.config.initial_snapshot, out).await,
        }
    }

    async fn start_replication(
        &mut self,
        mut repl: Connection,
        start: Lsn,
    ) -> Result<Connection, PipelineError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {}, messages 'true')",
            quote_ident(&self.config.slot),
            quote_literal(&quote_ident(&self.config.publication))
        );
        let mut attempt = 0;
        loop {
            match repl.start_copy_both(&sql).await {
                Ok(()) => return Ok(repl),
                Err(e) if e.sqlstate() == Some("55006") && attempt < SLOT_BUSY_RETRIES => {
                    attempt += 1;
                    tracing::warn!(slot = %self.config.slot, attempt, "replication slot is busy; waiting for the other connection to end");
                    let _ = repl.close().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    repl = self.connect_replication().await?;
                }
                Err(e) => return Err(classify(e, "starting replication", &self.params.user)),
            }
        }
    }

    async fn relation(
        &mut self,
        oid: u32,
        namespace: &str,
        name: &str,
        columns: Vec<pgoutput::RelationColumn<'_>>,
    ) -> Result<Relation, PipelineError> {
        let mut resolved = Vec::with_capacity(columns.len());
        for c in &columns {
            resolved.push(Column {
                name: Name::new(c.name),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                kind: self.types.resolve(c.type_oid, &mut self.catalog).await?,
                identity: c.is_key,
            });
        }
        let included = table_included(&self.config.tables, namespace, name);
        let key_names = if included {
            identity_columns(&mut self.catalog, oid).await?
        } else {
            vec![]
        };
        let key = key_indexes(&resolved, &key_names);
        Relation::build(
            &mut self.catalog,
            oid,
            namespace,
            name,
            resolved,
            key,
            !key_names.is_empty(),
            included,
        )
        .await
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn stream(
        &mut self,
        resume_from: Option<Position>,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        self.progress = Arc::clone(&context.progress);
        self.shutdown = context.shutdown.clone();
        self.progress
            .set_snapshot_resumable(self.method == SnapshotMethod::Watermark);
        if self.config.snapshot_only {
            if resume_from.is_some() {
                tracing::info!(
                    "snapshot = \"initial_only\" and the copy is already done: nothing to do"
                );
            } else {
                self.copy_only(out).await?;
            }
            return Ok(());
        }
        // Snapshot progress counts only up to what the checkpoint made durable.
        let durable = match &resume_from {
            Some(Position::Postgres { lsn }) => Some(*lsn),
            _ => None,
        };
        let mut repl = self.connect_replication().await?;
        let Some(start) = self.start_position(&mut repl, resume_from, out).await? else {
            // A shutdown interrupted the initial snapshot: nothing was committed.
            let _ = repl.close().await;
            return Ok(());
        };
        let repl = self.start_replication(repl, start).await?;
        tracing::info!(slot = %self.config.slot, from = %start, "streaming changes");
        let snapshot = if self.method == SnapshotMethod::Watermark {
            let mut snapshot = ChunkedSnapshot::new(
                WorkerSetup {
                    readers: Box::new(PgChunkReaders {
                        params: self.params.clone(),
                        db: self.db,
                        tables: self.tables.clone(),
                    }),
                    tables: self.tables.iter().map(TableRef::qualified).collect(),
                    chunk_rows: self.config.snapshot_chunk_rows,
                    progress: Arc::clone(&self.progress),
                    state: Arc::clone(&self.state),
                },
                self.config.snapshot_workers,
            );
            snapshot.resume(durable.map(|lsn| lsn.0))?;
            Some(snapshot)
        } else {
            None
        };
        // After the copies are queued: `status` never shows "streaming" before "snapshotting".
        context.progress.set_streaming(true);
        let mut session = Session {
            snapshot,
            repl,
            relations: HashMap::new(),
            open: None,
            received: start,
            forwarded: start,
            confirmed: context.confirmed.clone(),
        };
        let result = session.run(self, out, context).await;
        context.progress.set_streaming(false);
        result
    }
}

/// One replication connection's worth of state.
struct Session {
    repl: Connection,
    /// The chunked snapshot's workers and windows (watermark method only).
    snapshot: Option<ChunkedSnapshot>,
    relations: HashMap<u32, Arc<Relation>>,
    open: Option<OpenTransaction>,
    /// The newest WAL position received from the server.
    received: Lsn,
    /// The newest resume position sent down the pipeline (commit end or keepalive).
    forwarded: Lsn,
    /// What the checkpointer has made durable: the only position confirmed to the server.
    confirmed: watch::Receiver<Option<Position>>,
}

impl Session {
    async fn run(
        &mut self,
        source: &mut PostgresSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        let mut feedback = tokio::time::interval(FEEDBACK_INTERVAL);
        feedback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let user = source.params.user.clone();
        let mut shutdown = context.shutdown.clone();
        let heartbeat_every = source.config.heartbeat_interval;
        let mut heartbeat =
            tokio::time::interval(heartbeat_every.unwrap_or(Duration::from_secs(3600)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_failed = false;
        loop {
            tokio::select! {
                biased;
                _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    return self.drain_and_close(context).await;
                }
                _ = heartbeat.tick(), if heartbeat_every.is_some() => {
                    // WAL of our own in this database: its keepalive then lets the slot advance
                    // even when nothing else is written here. Not fatal (a standby cannot write).
                    let sent = source
                        .catalog
                        .query("SELECT pg_logical_emit_message(false, 'cdc-agent-heartbeat', '')")
                        .await;
                    match sent {
                        Ok(_) => heartbeat_failed = false,
                        Err(e) if !heartbeat_failed => {
                            heartbeat_failed = true;
                            tracing::warn!(error = %e, "heartbeat write failed; the slot advances only with other writes");
                        }
                        Err(_) => {}
                    }
                }
                report = ChunkedSnapshot::next_report(&mut self.snapshot) => {
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.on_report(report)?;
                    }
                }
                _ = feedback.tick() => {
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.poll_requests()?;
                    }
                    // Asking for a reply gets a keepalive back at once: its WAL end lets an idle
                    // pipeline confirm (and the slot release WAL) every second.
                    self.send_feedback(true).await?;
                }
                data = self.repl.read_copy_data() => {
                    let data = data.map_err(|e| classify(e, "reading the replication stream", &user))?;
                    let Some(data) = data else {
                        return Err(PipelineError::transient("connection", "the server ended the replication stream"));
                    };
                    self.handle(data, source, out, context).await?;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        data: Bytes,
        source: &mut PostgresSource,
        out: &mut EventSender,
        context: &mut StreamContext,
    ) -> Result<(), PipelineError> {
        match data.first() {
            Some(b'w') if data.len() >= 25 => {
                // The server's WAL end, for lag: once per transaction (at its commit) is enough.
                if data.get(25) == Some(&b'C') {
                    let wal_end = u64::from_be_bytes(data[9..17].try_into().unwrap_or_default());
                    context
                        .progress
                        .set_head(Position::Postgres { lsn: Lsn(wal_end) });
                }
                let start = u64::from_be_bytes(data[1..9].try_into().unwrap_or_default());
                self.received = self.received.max(Lsn(start));
                self.apply(&data[25..], source, out, &context.progress)
                    .await
            }
            Some(b'k') if data.len() >= 18 => {
                let wal_end = Lsn(u64::from_be_bytes(
                    data[1..9].try_into().unwrap_or_default(),
                ));
                let reply = data[17] == 1;
                context
                    .progress
                    .set_head(Position::Postgres { lsn: wal_end });
                self.received = self.received.max(wal_end);
                // Nothing is in flight between transactions: everything before the server's WAL
                // end has been sent, so it may be confirmed once what came before is durable.
                if self.open.is_none() && wal_end > self.forwarded {
                    self.forwarded = wal_end;
                    self.forward(
                        out,
                        SourceMessage::Progress {
                            resume_from: Position::Postgres { lsn: wal_end },
                        },
                    )
                    .await?;
                }
                if reply {
                    self.send_feedback(false).await?;
                }
                Ok(())
            }
            other => Err(PipelineError::transient(
                "decode",
                format!(
                    "unexpected replication message {:?} ({} bytes)",
                    other.map(|b| *b as char),
                    data.len()
                ),
            )),
        }
    }

    async fn apply(
        &mut self,
        payload: &[u8],
        source: &mut PostgresSource,
        out: &mut EventSender,
        progress: &SourceProgress,
    ) -> Result<(), PipelineError> {
        let message = pgoutput::decode(payload)
            .map_err(|e| PipelineError::definite("decode", e.to_string()))?;
        match message {
            Message::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                self.open = Some(OpenTransaction {
                    position: Position::Postgres {
                        lsn: Lsn(final_lsn),
                    },
                    xid,
                    commit_ts: Arc::from(cdc_core::time::format_utc_micros(
                        commit_ts + PG_EPOCH_OFFSET_MICROS,
                    )),
                    seq: 0,
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                let open = self.open.take();
                self.forwarded = self.forwarded.max(Lsn(end_lsn));
                progress.set_last_commit_sent(Position::Postgres {
                    lsn: Lsn(commit_lsn),
                });
                self.forward(
                    out,
                    SourceMessage::Commit {
                        position: Position::Postgres {
                            lsn: Lsn(commit_lsn),
                        },
                        resume_from: Position::Postgres { lsn: Lsn(end_lsn) },
                        commit_ts: open.map(|o| o.commit_ts),
                    },
                )
                .await?;
            }
            Message::Relation {
                oid,
                namespace,
                name,
                columns,
                ..
            } => {
                let relation = source.relation(oid, namespace, name, columns).await?;
                self.relations.insert(oid, Arc::new(relation));
            }
            Message::Type { oid, .. } => source.types.forget(oid),
            Message::Insert { relation, new } => {
                self.change(relation, Op::Insert, None, Some(new), &source.db, out)
                    .await?;
            }
            Message::Update { relation, old, new } => {
                self.change(relation, Op::Update, old, Some(new), &source.db, out)
                    .await?;
            }
            Message::Delete { relation, old } => {
                self.change(relation, Op::Delete, Some(old), None, &source.db, out)
                    .await?;
            }
            Message::Truncate { relations, .. } => {
                for oid in relations {
                    let rel = self.relation_for(oid)?;
                    if let Some(snapshot) = self.snapshot.as_mut() {
                        snapshot.observe_truncate(&rel.qualified());
                    }
                    if rel.included {
                        let event =
                            self.event(&rel, Op::Truncate, None, None, None, vec![], &source.db)?;
                        self.forward(out, SourceMessage::Change(event)).await?;
                    }
                }
            }
            Message::Message {
                prefix, content, ..
            } if prefix == WATERMARK_PREFIX => {
                self.watermark(&String::from_utf8_lossy(content), out)
                    .await?;
            }
            // Origins matter for bidirectional setups, other logical messages (heartbeats) are
            // not row changes.
            Message::Origin { .. } | Message::Message { .. } => {}
        }
        Ok(())
    }

    /// A watermark of the chunked snapshot: at a high one, the chunk's rows go out as snapshot
    /// inserts in the watermark's own transaction, and the table's progress is recorded at its
    /// position.
    async fn watermark(&mut self, text: &str, out: &mut EventSender) -> Result<(), PipelineError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(());
        };
        let Some((plan, events)) = snapshot.on_watermark(text)? else {
            return Ok(());
        };
        let open = self.open.as_mut().ok_or_else(|| {
            PipelineError::transient("decode", "a snapshot watermark outside a transaction")
        })?;
        let position = open.position.clone();
        let Position::Postgres { lsn } = position else {
            return Ok(());
        };
        let first_seq = open.seq;
        open.seq += events.len() as u64;
        for (seq, mut event) in (first_seq..).zip(events) {
            event.source.position = position.clone();
            event.source.seq = seq;
            self.forward(out, SourceMessage::Change(event)).await?;
        }
        match self.snapshot.as_ref() {
            Some(snapshot) => snapshot.chunk_sent(&plan, lsn.0),
            None => Ok(()),
        }
    }

    fn relation_for(&self, oid: u32) -> Result<Arc<Relation>, PipelineError> {
        self.relations.get(&oid).cloned().ok_or_else(|| {
            PipelineError::transient(
                "decode",
                format!("change for relation {oid} before its Relation message"),
            )
        })
    }

    async fn change(
        &mut self,
        oid: u32,
        op: Op,
        old: Option<(OldKind, Tuple<'_>)>,
        new: Option<Tuple<'_>>,
        db: &Name,
        out: &mut EventSender,
    ) -> Result<(), PipelineError> {
        let rel = self.relation_for(oid)?;
        if !rel.included {
            return Ok(());
        }
        let (after, unchanged) = match &new {
            Some(tuple) => {
                let (row, unchanged) = build_row(&rel, tuple, false)?;
                (Some(row), unchanged)
            }
            None => (None, vec![]),
        };
        let before = match &old {
            Some((OldKind::Full, tuple)) => Some(build_row(&rel, tuple, false)?.0),
            Some((OldKind::Key, tuple)) => Some(build_row(&rel, tuple, true)?.0),
            // An update that kept its key, without full identity: the old key is the new key.
            None if op == Op::Update => after.as_ref().map(|a| key_of(&rel, a)),
            None => None,
        };
        let key = match (&after, &before) {
            (Some(a), _) => Some(key_of(&rel, a)),
            (None, Some(b)) => Some(key_of(&rel, b)),
            (None, None) => None,
        };
        if let Some(snapshot) = self.snapshot.as_mut().filter(|s| s.watching()) {
            // A chunk being read must not overwrite this change, under its new key or its old.
            let old_key = before.as_ref().map(|b| key_of(&rel, b));
            let keys: Vec<&Row> = key.iter().chain(old_key.iter()).collect();
            snapshot.observe(&rel.qualified(), &keys);
        }
        let event = self.event(&rel, op, key, before, after, unchanged, db)?;
        self.forward(out, SourceMessage::Change(event)).await
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        rel: &Relation,
        op: Op,
        key: Option<Row>,
        before: Option<Row>,
        after: Option<Row>,
        unchanged: Vec<Name>,
        db: &Name,
    ) -> Result<ChangeEvent, PipelineError> {
        let open = self.open.as_mut().ok_or_else(|| {
            PipelineError::transient("decode", "a row change outside a transaction")
        })?;
        let seq = open.seq;
        open.seq += 1;
        Ok(ChangeEvent {
            op,
            source: SourceMeta {
                kind: SourceKind::Postgres,
                db: *db,
                schema: rel.schema,
                table: rel.name,
                position: open.position.clone(),
                tx_id: Some(open.xid as u64),
                commit_ts: Some(Arc::clone(&open.commit_ts)),
                seq,
                snapshot: false,
            },
            key,
            before,
            after,
            unchanged,
            table_schema: Some(Arc::clone(&rel.table_schema)),
        })
    }

    /// Sends down the pipeline. While the sink is behind (the send waits), standby status updates
    /// keep going out, so the server does not take a slow sink for a dead client.
    async fn forward(
        &mut self,
        out: &mut EventSender,
        message: SourceMessage,
    ) -> Result<(), PipelineError> {
        let send = out.send(message);
        tokio::pin!(send);
        // Most sends complete at once (the batch is not full yet): no timer for those.
        if let Poll::Ready(result) =
            std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await
        {
            return result;
        }
        loop {
            tokio::select! {
                biased;
                result = &mut send => return result,
                _ = tokio::time::sleep(FEEDBACK_INTERVAL) => self.send_feedback(false).await?,
            }
        }
    }

    /// Standby status update: written up to what was received, flushed and applied only up to
    /// what the checkpointer has made durable.
    async fn send_feedback(&mut self, reply: bool) -> Result<(), PipelineError> {
        let confirmed = match &*self.confirmed.borrow() {
            Some(Position::Postgres { lsn }) => *lsn,
            _ => Lsn(0),
        };
        let now = cdc_core::time::now_micros() - PG_EPOCH_OFFSET_MICROS;
        let mut msg = Vec::with_capacity(34);
        msg.push(b'r');
        msg.extend_from_slice(&self.received.max(confirmed).0.to_be_bytes());
        msg.extend_from_slice(&confirmed.0.to_be_bytes());
        msg.extend_from_slice(&confirmed.0.to_be_bytes());
        msg.extend_from_slice(&now.to_be_bytes());
        msg.push(u8::from(reply));
        self.repl.queue_copy_data(&msg);
        self.repl
            .flush()
            .await
            .map_err(|e| classify(e, "sending standby status", "agent"))
    }

    /// On shutdown: stop reading, wait (bounded) until the sink has made everything sent durable,
    /// confirm it to the server, and close.
    async fn drain_and_close(&mut self, context: &mut StreamContext) -> Result<(), PipelineError> {
        let target = self.forwarded;
        let mut confirmed = context.confirmed.clone();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async move {
            confirmed
                .wait_for(|c| match c {
                    Some(Position::Postgres { lsn }) => *lsn >= target,
                    _ => target == Lsn(0),
                })
                .await
                .map(|_| ())
        })
        .await;
        if drained.is_err() {
            tracing::warn!(target = %target, "sink did not confirm everything in time; the next run resumes from the last checkpoint");
        }
        self.send_feedback(false).await?;
        Ok(())
    }
}

/// The key of a row: of a whole row by position, of an old-key tuple (identity columns only)
/// by name.
fn key_of(rel: &Relation, row: &Row) -> Row {
    if row.0.len() == rel.columns.len() {
        return Row(rel
            .key
            .iter()
            .filter_map(|&i| row.0.get(i).cloned())
            .collect());
    }
    Row(rel
        .key
        .iter()
        .filter_map(|&i| rel.columns.get(i))
        .filter_map(|c| row.0.iter().find(|(name, _)| *name == c.name).cloned())
        .collect())
}

/// Builds a row from a tuple. `identity_only`: an old-key tuple, whose other columns are null.
fn build_row(
    rel: &Relation,
    tuple: &Tuple<'_>,
    identity_only: bool,
) -> Result<(Row, Vec<Name>), PipelineError> {
    if tuple.len() != rel.columns.len() {
        return Err(PipelineError::transient(
            "decode",
            format!(
                "a change to {} has {} columns, its relation {}",
                rel.qualified(),
                tuple.len(),
                rel.columns.len()
            ),
        ));
    }
    let mut values = Vec::with_capacity(tuple.len());
    let mut unchanged = Vec::new();
    for (column, value) in rel.columns.iter().zip(tuple) {
        if identity_only && !column.identity {
            continue;
        }
        let value = match value {
            TupleValue::Null => Value::Null,
            TupleValue::Unchanged => {
                unchanged.push(column.name);
                continue;
            }
            TupleValue::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => decode_text(&column.kind, text),
                Err(_) => decode_text(&column.kind, &String::from_utf8_lossy(bytes)),
            },
        };
        values.push((column.name, value));
    }
    Ok((Row(values), unchanged))
}
