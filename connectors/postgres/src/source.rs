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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdc_core::Name;
use cdc_core::{
    EventSender, Lsn, PipelineError, Position, Source, SourceProgress, StateTree, StreamContext,
};
use tokio::sync::watch;

use crate::chunked::PgChunkReaders;
use crate::column_lists;
use crate::errors::classify;
use crate::pgoutput;
use crate::schema::{
    identity_columns, key_indexes, quote_ident, quote_literal, Catalog, Column, Relation,
    TypeCache, SESSION_SETTINGS,
};
use crate::session::Session;
use crate::setup::{
    connect_params, ensure_publication, resolve_tables, slot_info, table_included, wal_level,
    wal_level_error, PostgresConfig, TableRef,
};
use crate::snapshot::SnapshotRun;
use crate::streamed::StreamedTransactions;
use crate::wire::{ConnectParams, Connection};
use cdc_core::chunked::{self, ChunkedSnapshot, SnapshotMethod, WorkerSetup};
use cdc_core::pipeline::durable_stream_order;

/// The first Postgres that streams in-progress transactions (pgoutput protocol 2).
pub(crate) const STREAMING_SINCE: u32 = 140_000;
/// After a SIGKILL the server may take a moment to notice our old walsender is gone.
const SLOT_BUSY_RETRIES: u32 = 10;

pub struct PostgresSource {
    pub(crate) config: PostgresConfig,
    pub(crate) params: ConnectParams,
    pub(crate) db: Name,
    pub(crate) catalog: Catalog,
    pub(crate) types: TypeCache,
    tables: Vec<TableRef>,
    /// Shared with the agent while streaming (set at the start of each `stream`).
    progress: Arc<SourceProgress>,
    shutdown: watch::Receiver<bool>,
    /// Where chunked snapshots keep their requests and progress.
    state: Arc<dyn StateTree>,
    /// The snapshot method in force (never `Auto`).
    method: SnapshotMethod,
    /// Tables published with a column list, by oid: a column added to one with
    /// `exclude_columns` must be added to the list, a list someone removed set again
    /// ([`column_lists::reconcile`]).
    listed: HashMap<u32, TableRef>,
    /// The added columns a re-copy was already asked for, per table (once per run).
    recopied: HashSet<(u32, Vec<String>)>,
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
        let listed = ensure_publication(&mut catalog, &config, &tables)
            .await?
            .into_iter()
            .filter(|(_, choice)| matches!(choice, column_lists::Choice::Server(_)))
            .map(|(table, _)| (table.oid, table))
            .collect();
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
            listed,
            recopied: HashSet::new(),
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
                // state store, after the chunks the sink already holds.
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

    /// Starts the stream at `start`: protocol 2 with `streaming 'on'` when `streaming` (the
    /// caller checked the server takes it), else protocol 1.
    async fn start_replication(
        &mut self,
        mut repl: Connection,
        start: Lsn,
        streaming: bool,
    ) -> Result<Connection, PipelineError> {
        let protocol = if streaming {
            "proto_version '2', streaming 'on'"
        } else {
            "proto_version '1'"
        };
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({protocol}, publication_names {}, messages 'true')",
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

    pub(crate) async fn relation(
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

impl PostgresSource {
    /// After a Relation message: if the table is published with a column list and the message
    /// lacks a column the table has now that its rule keeps (one added since the list was set,
    /// to a table with `exclude_columns`), widens the list and asks for a re-copy of the table.
    /// The re-copy's chunks are read after the widening, so they carry the column's values of
    /// the rows changed in between, which the stream sent without it (the watermarks keep the
    /// copy consistent with the stream). Returns whether a re-copy was asked for.
    pub(crate) async fn catch_up_added_columns(
        &mut self,
        relation: &Relation,
    ) -> Result<bool, PipelineError> {
        let Some(table) = self.listed.get(&relation.oid).cloned() else {
            return Ok(false);
        };
        let sent: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
        let added = column_lists::reconcile(&mut self.catalog, &self.config, &table, &sent).await?;
        if added.is_empty() || !self.recopied.insert((relation.oid, added.clone())) {
            return Ok(false);
        }
        let qualified = table.qualified();
        if !self.can_recopy() {
            tracing::warn!(table = %qualified, columns = %added.join(", "), "columns added to a filtered table: the publication's column list now has them, but rows changed before that reached the target without them; run `cdc-agent snapshot {qualified}` to copy them again");
            return Ok(false);
        }
        tracing::info!(table = %qualified, columns = %added.join(", "), "columns added to a filtered table: the publication's column list now has them; re-copying the table for the rows changed before that");
        chunked::request(self.state.as_ref(), &[qualified])?;
        Ok(true)
    }

    /// Puts back into the publication a table with a column list that left it (`DROP COLUMN ..
    /// CASCADE` of a listed column does that), and asks for a re-copy of it: its changes since
    /// were never sent. A delete in that gap is not in the copy: the warning says so. Returns
    /// whether a re-copy was asked for.
    pub(crate) async fn restore_published_tables(&mut self) -> Result<bool, PipelineError> {
        if self.listed.is_empty() {
            return Ok(false);
        }
        let listed: Vec<TableRef> = self.listed.values().cloned().collect();
        let gone = column_lists::restore_dropped(&mut self.catalog, &self.config, &listed).await?;
        let mut requested = false;
        for table in gone {
            let qualified = table.qualified();
            if self.can_recopy() {
                tracing::warn!(table = %qualified, publication = %self.config.publication, "the table left the publication (DROP COLUMN .. CASCADE of a listed column?): added back and re-copied; rows deleted meanwhile may remain in the target (`cdc-agent verify` finds them)");
                chunked::request(self.state.as_ref(), std::slice::from_ref(&qualified))?;
                requested = true;
            } else {
                tracing::warn!(table = %qualified, publication = %self.config.publication, "the table left the publication (DROP COLUMN .. CASCADE of a listed column?): added back; its changes meanwhile were not sent: run `cdc-agent snapshot {qualified}`");
            }
        }
        Ok(requested)
    }

    /// Where transactions streamed before their commit wait for it, when the server streams
    /// them (`source.streaming` and Postgres 14+); the files of an earlier run are removed.
    async fn streamed_transactions(
        &mut self,
    ) -> Result<Option<StreamedTransactions>, PipelineError> {
        if !self.config.streaming
            || column_lists::server_version(&mut self.catalog).await? < STREAMING_SINCE
        {
            return Ok(None);
        }
        let dir = self.config.spill_dir.clone();
        StreamedTransactions::new(dir.clone())
            .map(Some)
            .map_err(|e| {
                PipelineError::definite(
                    "state",
                    format!(
                        "cannot prepare {} for streamed transactions: {e}",
                        dir.display()
                    ),
                )
                .with_hint(
                    "check that agent.state_dir is writable, or set source.streaming = false",
                )
            })
    }

    /// Can a table be copied again while streaming (the watermark method, snapshots wanted)?
    fn can_recopy(&self) -> bool {
        self.config.initial_snapshot && self.method == SnapshotMethod::Watermark
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
        // Snapshot progress counts only up to what the sink has made durable.
        let durable = durable_stream_order(
            resume_from.as_ref(),
            context.sink_resume.as_ref(),
            |position| match position {
                Position::Postgres { lsn } => Some(lsn.0),
                _ => None,
            },
        );
        let mut repl = self.connect_replication().await?;
        let Some(start) = self.start_position(&mut repl, resume_from, out).await? else {
            // A shutdown interrupted the initial snapshot: nothing was committed.
            let _ = repl.close().await;
            return Ok(());
        };
        let streamed = self.streamed_transactions().await?;
        let repl = self
            .start_replication(repl, start, streamed.is_some())
            .await?;
        tracing::info!(slot = %self.config.slot, from = %start, in_progress_transactions = streamed.is_some(), "streaming changes");
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
            snapshot.resume(durable)?;
            Some(snapshot)
        } else {
            None
        };
        // After the copies are queued: `status` never shows "streaming" before "snapshotting".
        context.progress.set_streaming(true);
        let mut session = Session::new(repl, snapshot, streamed, start, context.confirmed.clone());
        let result = session.run(self, out, context).await;
        context.progress.set_streaming(false);
        result
    }
}
