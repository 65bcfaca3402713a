//! MySQL/MariaDB warehouse sink: the target tables equal the source tables, continuously.
//!
//! ```text
//!  write(changes) ─▶ per-table net effect (cdc_core::batch) ─▶ [barrier: schema change, truncate,
//!                     or too many buffered changes] ─▶ apply into the open target transaction
//!  flush()        ─▶ apply the rest ─▶ upsert _cdc_state (same transaction) ─▶ COMMIT
//!  open()         ─▶ read _cdc_state: every change at or before it is skipped
//! ```
//!
//! The twin of the postgres sink, with what MySQL changes about it:
//!
//! * **Two connections.** Data and the state row go through one connection, in explicit
//!   transactions. MySQL commits implicitly before any DDL, so `CREATE`/`ALTER TABLE` and the
//!   reads of `information_schema` go through a second, autocommit connection and never touch
//!   the open data transaction.
//! * **DDL needs the table free.** An `ALTER TABLE` waits for the metadata lock that the open
//!   data transaction holds on a table it wrote. Before altering such a table the sink commits
//!   what it has, recording how far it got: the position of the source transaction and, when the
//!   schema change comes in the middle of one, the ordinal (`seq`) of its last change applied.
//!   `open()` returns that point, and the pipeline skips exactly the changes at or before it, so
//!   the effect stays exactly once. Otherwise a source transaction is never split across target
//!   commits (the runtime flushes only at transaction boundaries).
//! * **Truncate is `DELETE FROM`**, because `TRUNCATE TABLE` also commits implicitly.
//!
//! Exactly once: the source position a target transaction reaches is written in that
//! transaction, so after any crash the target says itself where it stands. A large source
//! transaction is applied in pieces into one open target transaction, so memory stays bounded.
//! See [`ddl`] for the type mapping.
//!
//! Poison changes, as in the postgres sink: each table's changes go in under a savepoint; a
//! change the target refuses is found by bisection, the rest applied, and the change set aside in
//! the dead-letter store (durably, before the commit) or the pipeline stops naming it.

mod apply;
mod check;
pub mod ddl;
mod errors;
mod values;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use cdc_core::batch::{NetChange, TableBatch};
use cdc_core::dead_letter::bisect::{apply_or_search, ApplyPart, Refusals};
use cdc_core::dead_letter::{self, DeadLetterHandle};
use cdc_core::{Op, PipelineError, Position, ResumePoint, Sink, SourceMessage, TableSchema};
use cdc_tls::mysql::MysqlTls;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

pub use check::check;
pub use ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
pub(crate) use errors::sink_error;

/// Changes buffered (after collapsing) before they are applied into the open transaction.
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 20_000;

/// Session settings of both connections: errors instead of silent truncation, UTC for
/// `NOW()`, full Unicode.
const SESSION_SETUP: &[&str] = &[
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'",
];
/// Seconds a DDL statement waits for a metadata lock before it fails (transiently).
const DDL_LOCK_WAIT_SECONDS: u32 = 60;

pub use cdc_core::warehouse::{DeleteMode, TruncateMode};

#[derive(Clone, Debug)]
pub struct MysqlSinkConfig {
    /// `mysql://user:password@host:port[/database]`.
    pub url: String,
    /// Target database, created if missing.
    pub database: String,
    /// The pipeline's name: its row in the state table.
    pub pipeline: String,
    pub delete_mode: DeleteMode,
    /// Add `_cdc_position` and `_cdc_commit_ts` to every target table.
    pub metadata_columns: bool,
    pub truncate: TruncateMode,
    pub max_batch_changes: usize,
    /// The dead-letter store: where refused changes go, and which keys it holds.
    pub dead_letters: DeadLetterHandle,
    /// Record the position in `_cdc_state` at each commit (off for a replay of the dead-letter
    /// store, which applies old changes and must not move the position).
    pub record_position: bool,
}

/// The database a `mysql://` URL names, if any; an error when it is no valid URL. The message
/// never repeats the URL (it holds a password).
pub fn url_database(url: &str) -> Result<Option<String>, String> {
    cdc_tls::mysql::parse_url(url)
        .map(|u| {
            u.opts
                .db_name()
                .map(str::to_string)
                .filter(|d| !d.is_empty())
        })
        .map_err(|e| e.to_string())
}

/// A target table as the sink knows it.
struct TargetTable {
    /// Quoted `db`.`table`.
    name: String,
    /// `db.table`, for messages.
    label: String,
    /// The source schema it was last reconciled with.
    schema: Arc<TableSchema>,
}

pub struct MysqlSink {
    config: MysqlSinkConfig,
    /// Data and state: explicit transactions.
    conn: Option<Conn>,
    /// `information_schema` reads and DDL: autocommit.
    ddl: Option<Conn>,
    /// The collation of text columns in new tables.
    collation: String,
    tables: HashMap<String, TargetTable>,
    pending: Vec<(String, TableBatch)>,
    pending_changes: usize,
    in_transaction: bool,
    /// Target tables written in the open transaction (it holds their metadata locks).
    touched: HashSet<String>,
    /// The newest source transaction written (not yet committed).
    last_commit: Option<Position>,
    /// The last change written since that transaction (a transaction still open in the source
    /// stream).
    last_change: Option<ResumePoint>,
    /// What the target's state table holds.
    committed: Option<ResumePoint>,
}

pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn not_open() -> PipelineError {
    PipelineError::transient("sink", "the target connection is not open")
}

/// Connects without selecting a database (the target one may not exist yet) and sets the session
/// up.
async fn connect(url: &str, doing: &str) -> Result<Conn, PipelineError> {
    Ok(connect_tls(url, doing).await?.0)
}

/// [`connect`], also saying what the URL asked of TLS (for `check`).
async fn connect_tls(url: &str, doing: &str) -> Result<(Conn, MysqlTls), PipelineError> {
    let url = cdc_tls::mysql::parse_url(url).map_err(|e| {
        PipelineError::definite("config", format!("sink.url: {e}")).with_hint(
            "sink.url must look like mysql://user:password@host:port/database?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem",
        )
    })?;
    // prefer_socket off: connect where the URL says, not to a local socket found on the way.
    let opts = OptsBuilder::from_opts(url.opts)
        .db_name(None::<String>)
        .prefer_socket(false);
    let mut conn = cdc_tls::mysql::connect(opts, &url.tls)
        .await
        .map_err(|e| errors::connect_error(e, &url.tls, doing))?;
    for statement in SESSION_SETUP {
        conn.query_drop(*statement)
            .await
            .map_err(|e| sink_error(e, "setting up the target session"))?;
    }
    Ok((conn, url.tls))
}

impl MysqlSink {
    pub fn new(config: MysqlSinkConfig) -> Self {
        MysqlSink {
            config,
            conn: None,
            ddl: None,
            collation: "utf8mb4_bin".into(),
            tables: HashMap::new(),
            pending: Vec::new(),
            pending_changes: 0,
            in_transaction: false,
            touched: HashSet::new(),
            last_commit: None,
            last_change: None,
            committed: None,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, PipelineError> {
        self.conn.as_mut().ok_or_else(not_open)
    }

    fn ddl(&mut self) -> Result<&mut Conn, PipelineError> {
        self.ddl.as_mut().ok_or_else(not_open)
    }

    fn state_table(&self) -> String {
        format!("{}.`_cdc_state`", quote_ident(&self.config.database))
    }

    async fn begin(&mut self) -> Result<(), PipelineError> {
        if !self.in_transaction {
            self.conn()?
                .query_drop("START TRANSACTION")
                .await
                .map_err(|e| sink_error(e, "starting a target transaction"))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// How far the written changes go: the last change of a source transaction still open,
    /// else the last source transaction.
    fn progress(&self) -> Option<ResumePoint> {
        self.last_change.clone().or_else(|| {
            self.last_commit.clone().map(|position| ResumePoint {
                position,
                seq: None,
            })
        })
    }

    /// Applies what is buffered, records the progress in the state table and commits.
    async fn commit(&mut self) -> Result<(), PipelineError> {
        self.apply_pending().await?;
        let point = self.progress();
        if !self.in_transaction && (point.is_none() || point == self.committed) {
            return Ok(());
        }
        self.begin().await?;
        if let (true, Some(point)) = (self.config.record_position, &point) {
            let json = serde_json::to_string(&point.position).map_err(|e| {
                PipelineError::definite("sink", format!("encoding the position: {e}"))
            })?;
            let sql = format!(
                "INSERT INTO {} (pipeline, position, seq, updated_at) VALUES (?, ?, ?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE position = VALUES(position), seq = VALUES(seq), updated_at = VALUES(updated_at)",
                self.state_table()
            );
            let pipeline = self.config.pipeline.clone();
            self.conn()?
                .exec_drop(sql, (pipeline, json, point.seq))
                .await
                .map_err(|e| sink_error(e, "recording the position in the target"))?;
        }
        self.conn()?
            .query_drop("COMMIT")
            .await
            .map_err(|e| sink_error(e, "committing the target transaction"))?;
        self.in_transaction = false;
        self.touched.clear();
        self.committed = point;
        Ok(())
    }

    /// Makes sure the target table exists and matches `schema`; applies what changed.
    async fn reconcile(&mut self, schema: &Arc<TableSchema>) -> Result<(), PipelineError> {
        let source_name = format!("{}.{}", schema.schema, schema.table);
        if let Some(known) = self.tables.get(&source_name) {
            if Arc::ptr_eq(&known.schema, schema) || known.schema.columns == schema.columns {
                return Ok(());
            }
        }
        let database = self.config.database.clone();
        let target = format!("{}.{}", quote_ident(&database), quote_ident(&schema.table));
        let have = apply::target_columns(self.ddl()?, &database, &schema.table).await?;
        if have.is_empty() {
            let sql = ddl::create_table_sql(
                &target,
                schema,
                self.config.delete_mode == DeleteMode::Soft,
                self.config.metadata_columns,
                &self.collation,
            )?;
            tracing::info!(table = %target, "creating target table");
            self.ddl()?
                .query_drop(sql)
                .await
                .map_err(|e| sink_error(e, &format!("creating {target}")))?;
        } else {
            let statements = ddl::plan_changes(&target, &have, schema)?;
            if !statements.is_empty() && self.touched.contains(&target) {
                // The open transaction holds the table's metadata lock: commit first, recording
                // exactly how far it got.
                self.commit().await?;
            }
            for statement in statements {
                tracing::info!(table = %target, statement = %statement, "applying a source schema change");
                self.ddl()?
                    .query_drop(&statement)
                    .await
                    .map_err(|e| sink_error(e, &format!("altering {target}")))?;
            }
        }
        self.tables.insert(
            source_name,
            TargetTable {
                name: target,
                label: format!("{database}.{}", schema.table),
                schema: Arc::clone(schema),
            },
        );
        Ok(())
    }

    /// Applies the buffered net changes into the open transaction; sets aside (durably) what
    /// the target refuses and what the dead-letter store holds.
    async fn apply_pending(&mut self) -> Result<(), PipelineError> {
        if self.pending_changes == 0 {
            return Ok(());
        }
        self.begin().await?;
        let pending = std::mem::take(&mut self.pending);
        self.pending_changes = 0;
        let mut letters = Vec::new();
        for (source_name, mut batch) in pending {
            let Some(table) = self.tables.get(&source_name) else {
                continue;
            };
            let (mut changes, upserts) = batch.drain();
            changes.extend(upserts);
            let schema = &batch.schema;
            if let Some(store) = &self.config.dead_letters {
                dead_letter::hold_back(
                    store.as_ref(),
                    &source_name,
                    schema,
                    &mut changes,
                    &mut letters,
                );
            }
            if changes.is_empty() {
                continue;
            }
            self.touched.insert(table.name.clone());
            let conn = self.conn.as_mut().ok_or_else(not_open)?;
            let mut applier = PartApplier {
                conn,
                target: apply::Target {
                    name: &table.name,
                    label: &table.label,
                    schema,
                    soft_delete: self.config.delete_mode == DeleteMode::Soft,
                    metadata: self.config.metadata_columns,
                },
                failed_at: None,
            };
            let set_aside = self
                .config
                .dead_letters
                .as_ref()
                .is_some_and(|d| d.sets_aside_poison());
            let refused = apply_or_search(&mut applier, &changes, !set_aside).await?;
            dead_letter::collect_refusals(
                &source_name,
                schema,
                &changes,
                refused,
                set_aside,
                &mut letters,
            )?;
        }
        if let (false, Some(store)) = (letters.is_empty(), &self.config.dead_letters) {
            store.set_aside(letters)?;
        }
        Ok(())
    }

    async fn truncate(&mut self, schema: &Arc<TableSchema>) -> Result<(), PipelineError> {
        if self.config.truncate == TruncateMode::Ignore {
            return Ok(());
        }
        self.apply_pending().await?;
        self.reconcile(schema).await?;
        let source_name = format!("{}.{}", schema.schema, schema.table);
        let Some(table) = self.tables.get(&source_name) else {
            return Ok(());
        };
        let name = table.name.clone();
        // Not TRUNCATE TABLE: it would commit the open transaction implicitly.
        let sql = match self.config.delete_mode {
            DeleteMode::Hard => format!("DELETE FROM {name}"),
            DeleteMode::Soft => format!("UPDATE {name} SET {} = 1", quote_ident(DELETED_COLUMN)),
        };
        self.begin().await?;
        self.touched.insert(name);
        self.conn()?
            .query_drop(sql)
            .await
            .map_err(|e| sink_error(e, "truncating the target table"))?;
        match &self.config.dead_letters {
            Some(store) => store.discard_table(&source_name),
            None => Ok(()),
        }
    }

    fn batch_for(&mut self, schema: &Arc<TableSchema>) -> &mut TableBatch {
        let source_name = format!("{}.{}", schema.schema, schema.table);
        let index = match self
            .pending
            .iter()
            .position(|(name, _)| name == &source_name)
        {
            Some(i) => i,
            None => {
                self.pending
                    .push((source_name, TableBatch::new(Arc::clone(schema))));
                self.pending.len() - 1
            }
        };
        &mut self.pending[index].1
    }

    /// The collation for text columns: binary and without trailing-space padding where the
    /// server has one, so keys compare like the source's.
    async fn pick_collation(&mut self) -> Result<String, PipelineError> {
        let rows: Vec<mysql_async::Row> = self
            .ddl()?
            .query(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
                 WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin') ORDER BY 1",
            )
            .await
            .map_err(|e| sink_error(e, "reading the target's collations"))?;
        Ok(rows
            .first()
            .and_then(|r| apply::text_at(r, 0))
            .unwrap_or_else(|| "utf8mb4_bin".into()))
    }
}

/// Applies parts of one table's changes, each under a savepoint, for the dead-letter search.
struct PartApplier<'a> {
    conn: &'a mut Conn,
    target: apply::Target<'a>,
    failed_at: Option<usize>,
}

#[async_trait]
impl ApplyPart<NetChange> for PartApplier<'_> {
    async fn apply_part(&mut self, part: &[NetChange]) -> Result<Refusals, PipelineError> {
        self.failed_at = None;
        let context = |e| sink_error(e, "setting a savepoint in the target transaction");
        self.conn
            .query_drop("SAVEPOINT cdc_part")
            .await
            .map_err(context)?;
        match apply::changes(self.conn, &self.target, part).await {
            Ok(()) => {
                self.conn
                    .query_drop("RELEASE SAVEPOINT cdc_part")
                    .await
                    .map_err(context)?;
                Ok(Refusals::new())
            }
            Err(refused) if refused.error.is_poison() => {
                self.conn
                    .query_drop("ROLLBACK TO SAVEPOINT cdc_part")
                    .await
                    .map_err(context)?;
                self.conn
                    .query_drop("RELEASE SAVEPOINT cdc_part")
                    .await
                    .map_err(context)?;
                self.failed_at = refused.at;
                Err(refused.error)
            }
            Err(refused) => Err(refused.error),
        }
    }

    fn failed_at(&mut self) -> Option<usize> {
        self.failed_at.take()
    }
}

#[async_trait]
impl Sink for MysqlSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        self.conn = Some(connect(&self.config.url, "connecting to the target").await?);
        self.ddl = Some(connect(&self.config.url, "connecting to the target").await?);
        self.tables.clear();
        self.pending.clear();
        self.pending_changes = 0;
        self.in_transaction = false;
        self.touched.clear();
        self.last_change = None;
        let lock_wait = format!("SET SESSION lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS}");
        let database = quote_ident(&self.config.database);
        let state = self.state_table();
        let ddl = self.ddl()?;
        for statement in [
            lock_wait,
            format!("CREATE DATABASE IF NOT EXISTS {database} CHARACTER SET utf8mb4"),
            format!(
                "CREATE TABLE IF NOT EXISTS {state} (pipeline VARCHAR(255) NOT NULL PRIMARY KEY, \
                 position JSON NOT NULL, seq BIGINT UNSIGNED NULL, \
                 updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
        ] {
            ddl.query_drop(statement)
                .await
                .map_err(|e| sink_error(e, "preparing the target database and state table"))?;
        }
        self.collation = self.pick_collation().await?;
        let pipeline = self.config.pipeline.clone();
        let row: Option<mysql_async::Row> = self
            .conn()?
            .exec_first(
                format!("SELECT CAST(position AS CHAR), seq FROM {state} WHERE pipeline = ?"),
                (pipeline,),
            )
            .await
            .map_err(|e| sink_error(e, "reading the target's position"))?;
        self.committed = match row {
            None => None,
            Some(row) => {
                let unreadable = |why: String| {
                    PipelineError::definite(
                        "sink",
                        format!("the target's state table holds an unreadable position ({why})"),
                    )
                    .with_hint("delete this pipeline's row from _cdc_state to start over")
                };
                let text = apply::text_at(&row, 0).unwrap_or_default();
                let position: Position =
                    serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
                let seq = match apply::text_at(&row, 1) {
                    None => None,
                    Some(s) => Some(s.parse::<u64>().map_err(|e| unreadable(e.to_string()))?),
                };
                Some(ResumePoint { position, seq })
            }
        };
        // A point inside a source transaction names no whole transaction yet.
        self.last_commit = self
            .committed
            .as_ref()
            .filter(|p| p.seq.is_none())
            .map(|p| p.position.clone());
        if let Some(p) = &self.committed {
            tracing::info!(position = %p.position, seq = ?p.seq, "target is at this position; earlier changes are skipped");
        }
        Ok(self.committed.clone())
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        for message in messages {
            match message {
                SourceMessage::Change(event) => {
                    let schema = event.table_schema.clone().ok_or_else(|| {
                        PipelineError::definite(
                            "schema",
                            format!(
                                "a change to {} came without its table schema",
                                event.table_name()
                            ),
                        )
                    })?;
                    if event.op == Op::Truncate {
                        self.truncate(&schema).await?;
                        self.last_change = Some(event.resume_point());
                        continue;
                    }
                    let source_name = format!("{}.{}", schema.schema, schema.table);
                    let known = self.tables.get(&source_name).is_some_and(|t| {
                        Arc::ptr_eq(&t.schema, &schema) || t.schema.columns == schema.columns
                    });
                    if !known {
                        // A schema change is a barrier: rows decoded with the old schema go first.
                        self.apply_pending().await?;
                        self.reconcile(&schema).await?;
                    }
                    self.batch_for(&schema).add(event);
                    self.pending_changes += 1;
                    self.last_change = Some(event.resume_point());
                    if self.pending_changes >= self.config.max_batch_changes {
                        self.apply_pending().await?;
                    }
                }
                SourceMessage::Commit { position, .. } => {
                    self.last_commit = Some(position.clone());
                    self.last_change = None;
                }
                SourceMessage::Progress { .. } => {}
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        self.commit().await
    }
}
