//! DuckDB warehouse sink: the tables of a DuckDB file equal the source tables, continuously.
//!
//! ```text
//!  write(changes) ─▶ per-table net effect (cdc_core::batch) ─▶ [barrier: schema change, truncate,
//!                     or too many buffered changes] ─▶ apply into the open DuckDB transaction
//!  flush()        ─▶ apply the rest ─▶ upsert _cdc_state (same transaction) ─▶ COMMIT
//!  open()         ─▶ read _cdc_state: every change at or before it is skipped
//! ```
//!
//! The twin of the Postgres sink (same options, same semantics); see [`ddl`] for the type
//! mapping. Exactly once: the source position a DuckDB transaction reaches is written in that
//! transaction, so after any crash the file says itself where it stands. A source transaction
//! is never split across two commits; a large one is applied in pieces into one open
//! transaction, so memory stays bounded.
//!
//! DuckDB's API is synchronous: every call runs under [`tokio::task::block_in_place`], which
//! hands the runtime's other tasks (the source) to another thread while the database works.
//! The file is held open, and locked against other processes, while the sink runs. Extensions
//! are never downloaded or auto-loaded: the sink uses what the build has compiled in.
//! Readers in the same process (verify run by the agent) borrow a second connection on the
//! open database through [`SharedDatabase`].

mod apply;
mod columnar;
pub mod ddl;
pub mod encode;
mod shared;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use cdc_core::batch::TableBatch;
use cdc_core::{
    CheckOutcome, Op, PipelineError, Position, ResumePoint, Sink, SourceMessage, TableSchema,
};
use duckdb::{AccessMode, Config, Connection};

pub use ddl::{Features, COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};
/// The DuckDB crate this sink is built with, for callers that read the file (tests, tools).
pub use duckdb;
pub use shared::SharedDatabase;

/// Changes buffered (after collapsing) before they are applied into the open transaction.
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 20_000;
/// Target schema when none is configured: DuckDB's own default schema.
pub const DEFAULT_SCHEMA: &str = "main";
/// The state table, in the target schema: one row per pipeline.
pub const STATE_TABLE: &str = "_cdc_state";

pub use cdc_core::warehouse::{DeleteMode, TruncateMode};

#[derive(Clone, Debug)]
pub struct DuckdbSinkConfig {
    /// The database file, created if missing (its directory must exist).
    pub path: String,
    /// Target schema, created if missing.
    pub schema: String,
    /// The pipeline's name: its row in the state table.
    pub pipeline: String,
    pub delete_mode: DeleteMode,
    /// Add `_cdc_position` and `_cdc_commit_ts` to every target table.
    pub metadata_columns: bool,
    pub truncate: TruncateMode,
    pub max_batch_changes: usize,
    /// DuckDB's `memory_limit` in MiB (0: DuckDB's own default, 80% of the machine's memory).
    pub memory_limit_mb: u64,
}

/// The default `memory_limit`: a sidecar must not take most of its host's memory, which is
/// DuckDB's own default.
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 256;

/// A target table as the sink knows it.
struct TargetTable {
    /// Quoted `schema.table`.
    name: String,
    /// The source schema it was last reconciled with.
    schema: Arc<TableSchema>,
    /// Its columns in DuckDB (name, type), after reconciling.
    columns: Vec<(String, String)>,
}

pub struct DuckdbSink {
    config: DuckdbSinkConfig,
    conn: Option<Connection>,
    features: Features,
    tables: HashMap<String, TargetTable>,
    pending: Vec<(String, TableBatch)>,
    pending_changes: usize,
    in_transaction: bool,
    /// The newest source transaction written (not yet committed).
    last_commit: Option<Position>,
    /// The position the state table holds.
    committed: Option<Position>,
    stage_counter: u64,
    /// Source tables (`schema.table`) whose new rows DuckDB refused to take by a direct append:
    /// their changes take the staged upsert until the agent restarts.
    no_direct_append: HashSet<String>,
    /// Where the open database is lent to readers of the same process, and the generation of
    /// the connection published there.
    shared: Option<(SharedDatabase, Option<u64>)>,
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs blocking database work without stalling the async worker: on a multi-thread runtime the
/// worker's other tasks move to another thread meanwhile.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Opens (or creates) the database file with extension downloads and auto-loading off, and
/// DuckDB's memory capped at `memory_limit_mb` (0: uncapped).
fn open_database(
    path: &Path,
    access: AccessMode,
    memory_limit_mb: u64,
) -> Result<Connection, PipelineError> {
    let mut config = Config::default()
        .access_mode(access)
        .and_then(|c| c.enable_autoload_extension(false))
        .and_then(|c| c.with("autoinstall_known_extensions", "false"))
        .map_err(|e| duck_error(e, "configuring DuckDB"))?;
    if memory_limit_mb > 0 {
        config = config
            .max_memory(&format!("{memory_limit_mb}MB"))
            .map_err(|e| duck_error(e, "setting DuckDB's memory_limit"))?;
    }
    Connection::open_with_flags(path, config)
        .map_err(|e| duck_error(e, &format!("opening {}", path.display())))
}

impl DuckdbSink {
    pub fn new(config: DuckdbSinkConfig) -> Self {
        DuckdbSink {
            config,
            conn: None,
            features: Features::default(),
            tables: HashMap::new(),
            pending: Vec::new(),
            pending_changes: 0,
            in_transaction: false,
            last_commit: None,
            committed: None,
            stage_counter: 0,
            no_direct_append: HashSet::new(),
            shared: None,
        }
    }

    /// Lends the open database to readers of this process through `shared` (withdrawn while
    /// the sink reopens the file, and when it is dropped).
    pub fn sharing(mut self, shared: SharedDatabase) -> Self {
        self.shared = Some((shared, None));
        self
    }

    /// Withdraws the connection lent to readers (waiting for a running read to end): before the
    /// sink's own connection closes, so no reader keeps the database instance open.
    fn withdraw(&mut self) {
        if let Some((shared, published)) = &mut self.shared {
            if let Some(generation) = published.take() {
                shared.withdraw(generation);
            }
        }
    }

    fn conn(&self) -> Result<&Connection, PipelineError> {
        self.conn
            .as_ref()
            .ok_or_else(|| PipelineError::transient("sink", "the DuckDB file is not open"))
    }

    fn state_table(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.config.schema),
            quote_ident(STATE_TABLE)
        )
    }

    fn execute(&self, sql: &str, doing: &str) -> Result<(), PipelineError> {
        self.conn()?
            .execute_batch(sql)
            .map_err(|e| duck_error(e, doing))
    }

    fn begin(&mut self) -> Result<(), PipelineError> {
        if !self.in_transaction {
            self.execute("BEGIN TRANSACTION", "starting a transaction")?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn open_sync(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        // A reopen after an error starts from what is committed.
        self.withdraw();
        self.conn = None;
        self.tables.clear();
        self.pending.clear();
        self.pending_changes = 0;
        self.in_transaction = false;
        let path = Path::new(&self.config.path);
        check_path(path)?;
        let conn = open_database(path, AccessMode::ReadWrite, self.config.memory_limit_mb)?;
        // The JSON type exists only if the json extension is compiled in (never downloaded).
        self.features = Features {
            json: conn.execute_batch("SELECT NULL::JSON").is_ok(),
        };
        self.conn = Some(conn);
        self.execute(
            &format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {state} (pipeline VARCHAR PRIMARY KEY, position VARCHAR, updated_at TIMESTAMP WITH TIME ZONE)",
                schema = quote_ident(&self.config.schema),
                state = self.state_table(),
            ),
            "preparing the target schema and state table",
        )?;
        let text: Option<String> = {
            let conn = self.conn()?;
            let mut statement = conn
                .prepare(&format!(
                    "SELECT position FROM {} WHERE pipeline = ?",
                    self.state_table()
                ))
                .map_err(|e| duck_error(e, "reading the target's position"))?;
            let mut rows = statement
                .query([&self.config.pipeline])
                .map_err(|e| duck_error(e, "reading the target's position"))?;
            match rows
                .next()
                .map_err(|e| duck_error(e, "reading the target's position"))?
            {
                Some(row) => row
                    .get::<_, Option<String>>(0)
                    .map_err(|e| duck_error(e, "reading the target's position"))?,
                None => None,
            }
        };
        self.committed = match text {
            None => None,
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                PipelineError::definite(
                    "sink",
                    format!("the target's state table holds an unreadable position ({e})"),
                )
                .with_hint("delete this pipeline's row from _cdc_state to start over")
            })?),
        };
        self.last_commit = self.committed.clone();
        if let Some(p) = &self.committed {
            tracing::info!(position = %p, "DuckDB file is at this position; earlier changes are skipped");
        }
        if let (Some((shared, published)), Some(conn)) = (&mut self.shared, &self.conn) {
            *published = Some(
                shared
                    .publish(conn)
                    .map_err(|e| duck_error(e, "opening a reader connection"))?,
            );
        }
        Ok(self.committed.clone().map(|position| ResumePoint {
            position,
            seq: None,
        }))
    }

    /// The columns a target table has (name, type); empty when it does not exist.
    fn target_columns(&self, table: &str) -> Result<Vec<(String, String)>, PipelineError> {
        let conn = self.conn()?;
        let mut statement = conn
            .prepare_cached(
                "SELECT column_name, data_type FROM duckdb_columns() \
                 WHERE database_name = current_database() AND schema_name = ? AND table_name = ? \
                 ORDER BY column_index",
            )
            .map_err(|e| duck_error(e, "reading the target table's columns"))?;
        let rows = statement
            .query_map([self.config.schema.as_str(), table], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| duck_error(e, "reading the target table's columns"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| duck_error(e, "reading the target table's columns"))
    }

    /// Makes sure the target table exists and matches `schema`; applies what changed.
    fn reconcile(&mut self, schema: &Arc<TableSchema>) -> Result<(), PipelineError> {
        let source_name = format!("{}.{}", schema.schema, schema.table);
        if let Some(known) = self.tables.get(&source_name) {
            if Arc::ptr_eq(&known.schema, schema) || known.schema.columns == schema.columns {
                return Ok(());
            }
        }
        let target = format!(
            "{}.{}",
            quote_ident(&self.config.schema),
            quote_ident(&schema.table)
        );
        self.begin()?;
        let have = self.target_columns(&schema.table)?;
        if have.is_empty() {
            let sql = ddl::create_table_sql(
                &target,
                schema,
                self.config.delete_mode == DeleteMode::Soft,
                self.config.metadata_columns,
                self.features,
            )?;
            tracing::info!(table = %target, "creating target table");
            self.execute(&sql, &format!("creating {target}"))?;
        } else {
            for statement in ddl::plan_changes(&self.config.schema, &have, schema, self.features)? {
                tracing::info!(table = %target, statement = %statement, "applying a source schema change");
                self.execute(&statement, &format!("altering {target}"))?;
            }
        }
        let columns = self.target_columns(&schema.table)?;
        self.tables.insert(
            source_name,
            TargetTable {
                name: target,
                schema: Arc::clone(schema),
                columns,
            },
        );
        Ok(())
    }

    /// Applies the buffered net changes into the open transaction.
    fn apply_pending(&mut self) -> Result<(), PipelineError> {
        if self.pending_changes == 0 {
            return Ok(());
        }
        self.begin()?;
        let pending = std::mem::take(&mut self.pending);
        self.pending_changes = 0;
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| PipelineError::transient("sink", "the DuckDB file is not open"))?;
        for (source_name, mut batch) in pending {
            let Some(table) = self.tables.get(&source_name) else {
                continue;
            };
            let (deletes, upserts) = batch.drain();
            let target = apply::Target {
                name: &table.name,
                schema_name: &self.config.schema,
                table_name: &batch.schema.table,
                schema: &batch.schema,
                columns: &table.columns,
                soft_delete: self.config.delete_mode == DeleteMode::Soft,
                metadata: self.config.metadata_columns,
            };
            apply::deletes(conn, &target, &deletes, &mut self.stage_counter)?;
            let mut direct = !self.no_direct_append.contains(&source_name);
            let applied = apply::upserts(
                conn,
                &target,
                &upserts,
                &mut self.stage_counter,
                &mut direct,
            );
            if !direct {
                self.no_direct_append.insert(source_name);
            }
            applied?;
        }
        Ok(())
    }

    fn truncate(&mut self, schema: &Arc<TableSchema>) -> Result<(), PipelineError> {
        if self.config.truncate == TruncateMode::Ignore {
            return Ok(());
        }
        self.apply_pending()?;
        self.reconcile(schema)?;
        let source_name = format!("{}.{}", schema.schema, schema.table);
        let Some(table) = self.tables.get(&source_name) else {
            return Ok(());
        };
        let sql = match self.config.delete_mode {
            DeleteMode::Hard => format!("DELETE FROM {}", table.name),
            DeleteMode::Soft => format!(
                "UPDATE {} SET {} = true",
                table.name,
                quote_ident(DELETED_COLUMN)
            ),
        };
        self.execute(&sql, "truncating the target table")
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

    fn write_sync(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
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
                        self.truncate(&schema)?;
                        continue;
                    }
                    let source_name = format!("{}.{}", schema.schema, schema.table);
                    let known = self.tables.get(&source_name).is_some_and(|t| {
                        Arc::ptr_eq(&t.schema, &schema) || t.schema.columns == schema.columns
                    });
                    if !known {
                        // A schema change is a barrier: rows decoded with the old schema go first.
                        self.apply_pending()?;
                        self.reconcile(&schema)?;
                    }
                    self.batch_for(&schema).add(event);
                    self.pending_changes += 1;
                    if self.pending_changes >= self.config.max_batch_changes {
                        self.apply_pending()?;
                    }
                }
                SourceMessage::Commit { position, .. } => self.last_commit = Some(position.clone()),
                SourceMessage::Progress { .. } => {}
            }
        }
        Ok(())
    }

    fn flush_sync(&mut self) -> Result<(), PipelineError> {
        if self.last_commit == self.committed && !self.in_transaction && self.pending_changes == 0 {
            return Ok(());
        }
        self.apply_pending()?;
        self.begin()?;
        // A reader's guarded delete (verify --repair) is not overtaken by this commit.
        let shared = self.shared.as_ref().map(|(s, _)| s.clone());
        let _gate = shared.as_ref().map(SharedDatabase::hold_commits);
        let position = self.last_commit.clone();
        if let Some(position) = &position {
            let json = serde_json::to_string(position).map_err(|e| {
                PipelineError::definite("sink", format!("encoding the position: {e}"))
            })?;
            self.conn()?
                .execute(
                    &format!(
                        "INSERT INTO {} (pipeline, position, updated_at) VALUES (?, ?, now())
                         ON CONFLICT (pipeline) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                        self.state_table()
                    ),
                    [self.config.pipeline.as_str(), json.as_str()],
                )
                .map_err(|e| duck_error(e, "recording the position in the target"))?;
        }
        self.execute("COMMIT", "committing the transaction")?;
        self.in_transaction = false;
        self.committed = position;
        if tracing::enabled!(tracing::Level::DEBUG) {
            // DuckDB's own accounting (its buffer pool), apart from the process's memory: what
            // `memory_limit` bounds. For benchmarks; a query per commit only at debug level.
            let used: Option<i64> = self
                .conn()?
                .query_row(
                    "SELECT CAST(sum(memory_usage_bytes) AS BIGINT) FROM duckdb_memory()",
                    [],
                    |row| row.get(0),
                )
                .ok();
            tracing::debug!(duckdb_memory_mib = used.unwrap_or(0) >> 20, "committed");
        }
        Ok(())
    }
}

impl Drop for DuckdbSink {
    fn drop(&mut self) {
        self.withdraw();
    }
}

#[async_trait]
impl Sink for DuckdbSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        blocking(|| self.open_sync())
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        blocking(|| self.write_sync(messages))
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        blocking(|| self.flush_sync())
    }
}

/// Fails definitely, naming the path and the fix, where no retry can help: `sink.path` is a
/// directory, or its directory is missing or not one.
fn check_path(path: &Path) -> Result<(), PipelineError> {
    let doing = |what: &str| format!("cannot open the DuckDB file {}: {what}", path.display());
    if path.is_dir() {
        let e = std::io::Error::from(std::io::ErrorKind::IsADirectory);
        return Err(cdc_core::error::file_error(
            "sink",
            "sink.path",
            doing("it is a directory"),
            &e,
        ));
    }
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let e = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::io::Error::from(std::io::ErrorKind::NotADirectory),
        Err(e) => e,
    };
    Err(cdc_core::error::file_error(
        "sink",
        "sink.path",
        doing(&format!("directory {}: {e}", dir.display())),
        &e,
    ))
}

/// Classifies a DuckDB error. A file locked by another process, an interrupted or conflicting
/// transaction, memory pressure and I/O trouble are transient (the retry reopens the file);
/// bad values, catalog and constraint errors need the operator.
pub(crate) fn duck_error(e: duckdb::Error, doing: &str) -> PipelineError {
    let text = e.to_string();
    let message = format!("{doing}: {text}");
    let lower = text.to_ascii_lowercase();
    if is_locked(&lower) {
        return PipelineError::transient("sink", message).with_hint(
            "another process has the DuckDB file open (a DuckDB shell?); close it and the agent continues",
        );
    }
    if [
        "permission denied",
        "read-only file system",
        "no such file",
        "is a directory",
        "not a directory",
        "file name too long",
    ]
    .iter()
    .any(|t| lower.contains(t))
    {
        return PipelineError::definite("sink", message)
            .with_hint("make sink.path a file the agent can create and write");
    }
    let transient = [
        "io error",
        "out of memory",
        "transactioncontext error",
        "interrupt",
        "database has been invalidated",
        "fatal error",
    ];
    if transient.iter().any(|t| lower.contains(t)) {
        return PipelineError::transient("sink", message);
    }
    if lower.contains("conversion error") || lower.contains("out of range") {
        return PipelineError::definite("sink", message).with_hint(
            "a value does not fit its DuckDB column: alter the column (e.g. to VARCHAR) in the DuckDB file, then restart",
        );
    }
    if lower.contains("catalog error") || lower.contains("binder error") {
        return PipelineError::definite("sink", message).with_hint(
            "the DuckDB file's tables do not match what the sink expects (changed by hand?)",
        );
    }
    PipelineError::definite("sink", message)
}

/// DuckDB's message for a file another process holds open.
fn is_locked(lower_message: &str) -> bool {
    lower_message.contains("could not set lock") || lower_message.contains("conflicting lock")
}

/// `cdc-agent check` for the duckdb sink, read-only: the file's directory is writable and the
/// file, if it exists, opens as a DuckDB database.
pub fn check(config: &DuckdbSinkConfig) -> CheckOutcome {
    let path = Path::new(&config.path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir_writable =
        std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    if !dir_writable {
        return CheckOutcome::fail(
            "sink",
            format!("directory {} does not exist or is read-only", dir.display()),
            "create it or change sink.path",
        );
    }
    if !path.exists() {
        return CheckOutcome::ok(
            "sink",
            format!("DuckDB file {} will be created", path.display()),
        );
    }
    match open_database(path, AccessMode::ReadOnly, config.memory_limit_mb) {
        Ok(_) => CheckOutcome::ok("sink", format!("DuckDB file {} opens", path.display())),
        Err(e) if is_locked(&e.message.to_ascii_lowercase()) => CheckOutcome::ok(
            "sink",
            format!(
                "DuckDB file {} is in use by a running agent (or another process)",
                path.display()
            ),
        ),
        Err(e) => CheckOutcome::fail(
            "sink",
            e.message,
            "sink.path must be a DuckDB database file (or a path where one can be created)",
        ),
    }
}

#[cfg(test)]
mod tests;
