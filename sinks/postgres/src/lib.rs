//! Postgres warehouse sink: the target tables equal the source tables, continuously.
//!
//! ```text
//!  write(changes) ─▶ per-table net effect (cdc_core::batch) ─▶ [barrier: schema change, truncate,
//!                     or too many buffered changes] ─▶ apply into the open target transaction
//!  flush()        ─▶ apply the rest ─▶ UPDATE _cdc_state (same transaction) ─▶ COMMIT
//!  open()         ─▶ read _cdc_state: every change at or before it is skipped
//! ```
//!
//! Exactly once: the source position a target transaction reaches is written in that transaction,
//! so after any crash the target says itself where it stands. A source transaction is never split
//! across two target commits (the runtime flushes only at transaction boundaries); a large one is
//! applied in pieces into one open target transaction, so memory stays bounded.
//!
//! Poison changes: each table's changes go in under a savepoint. When the target refuses them
//! for one change's sake (a value it cannot store, a constraint), the savepoint is rolled back
//! and the change is found by bisection ([`cdc_core::dead_letter::bisect`]); the rest is
//! applied, and the refused change is set aside in the dead-letter store (`on_error = "dlq"`,
//! durably, before the commit) or stops the pipeline naming table, key and column. Changes to a
//! key the store holds are set aside behind it.

mod apply;
mod connect;
mod copy_text;
mod ddl;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cdc_core::batch::{NetChange, TableBatch};
use cdc_core::dead_letter::bisect::{apply_or_search, ApplyPart, Refusals};
use cdc_core::dead_letter::{self, DeadLetterHandle};
use cdc_core::{Op, PipelineError, Position, ResumePoint, Sink, SourceMessage, TableSchema};
use tokio_postgres::Client;

pub use connect::{parse_url, TargetUrl};
pub use ddl::{COMMIT_TS_COLUMN, DELETED_COLUMN, POSITION_COLUMN};

/// Changes buffered (after collapsing) before they are applied into the open transaction.
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 20_000;

/// Bytes of changes (as `ChangeEvent::approx_size` counts them) buffered before they are
/// applied, whatever `max_batch_changes` says: the batch, its key index and its COPY text are
/// each about that size at once. Measured with a 30,000-row transaction of ~300-byte rows
/// (about 600 of these bytes each): 20,000-change batches peaked at 69 MiB of agent RSS.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

pub use cdc_core::warehouse::{DeleteMode, TruncateMode};

#[derive(Clone, Debug)]
pub struct PostgresSinkConfig {
    pub url: String,
    /// Target schema, created if missing.
    pub schema: String,
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

/// A target table as the sink knows it.
struct TargetTable {
    /// Quoted `schema.table`.
    name: String,
    /// The source schema it was last reconciled with.
    schema: Arc<TableSchema>,
}

pub struct PostgresSink {
    config: PostgresSinkConfig,
    client: Option<Client>,
    tables: HashMap<String, TargetTable>,
    pending: Vec<(String, TableBatch)>,
    pending_changes: usize,
    /// The pending changes' size (see [`MAX_BATCH_BYTES`]).
    pending_bytes: usize,
    in_transaction: bool,
    /// The newest source transaction written (not yet committed).
    last_commit: Option<Position>,
    /// The position the target's state table holds.
    committed: Option<Position>,
    stage_counter: u64,
    /// The schema of the last change taken, known to match its target table.
    last_schema: Option<Arc<TableSchema>>,
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresSink {
    pub fn new(config: PostgresSinkConfig) -> Self {
        PostgresSink {
            config,
            client: None,
            tables: HashMap::new(),
            pending: Vec::new(),
            pending_changes: 0,
            pending_bytes: 0,
            in_transaction: false,
            last_commit: None,
            committed: None,
            stage_counter: 0,
            last_schema: None,
        }
    }

    fn client(&self) -> Result<&Client, PipelineError> {
        self.client
            .as_ref()
            .ok_or_else(|| PipelineError::transient("sink", "the target connection is not open"))
    }

    fn state_table(&self) -> String {
        format!("{}.\"_cdc_state\"", quote_ident(&self.config.schema))
    }

    async fn begin(&mut self) -> Result<(), PipelineError> {
        if !self.in_transaction {
            self.client()?
                .batch_execute("BEGIN")
                .await
                .map_err(|e| sink_error(e, "starting a target transaction"))?;
            self.in_transaction = true;
        }
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
        let target = format!(
            "{}.{}",
            quote_ident(&self.config.schema),
            quote_ident(&schema.table)
        );
        self.begin().await?;
        let client = self.client()?;
        let have = apply::target_columns(client, &self.config.schema, &schema.table).await?;
        if have.is_empty() {
            let sql = ddl::create_table_sql(
                &target,
                schema,
                self.config.delete_mode == DeleteMode::Soft,
                self.config.metadata_columns,
            )?;
            tracing::info!(table = %target, "creating target table");
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| sink_error(e, &format!("creating {target}")))?;
        } else {
            for statement in ddl::plan_changes(&target, &have, schema)? {
                tracing::info!(table = %target, statement = %statement, "applying a source schema change");
                client
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| sink_error(e, &format!("altering {target}")))?;
            }
        }
        self.tables.insert(
            source_name,
            TargetTable {
                name: target,
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
        self.pending_bytes = 0;
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
            let client = self.client.as_ref().ok_or_else(|| {
                PipelineError::transient("sink", "the target connection is not open")
            })?;
            let set_aside = self
                .config
                .dead_letters
                .as_ref()
                .is_some_and(|d| d.sets_aside_poison());
            let mut applier = PartApplier {
                client,
                target: apply::Target {
                    name: &table.name,
                    schema,
                    soft_delete: self.config.delete_mode == DeleteMode::Soft,
                    metadata: self.config.metadata_columns,
                    refuse_inline: set_aside,
                },
                counter: &mut self.stage_counter,
                failed_at: None,
            };
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
        let sql = match self.config.delete_mode {
            DeleteMode::Hard => format!("TRUNCATE {}", table.name),
            DeleteMode::Soft => format!(
                "UPDATE {} SET {} = true",
                table.name,
                quote_ident(DELETED_COLUMN)
            ),
        };
        self.client()?
            .batch_execute(&sql)
            .await
            .map_err(|e| sink_error(e, "truncating the target table"))?;
        match &self.config.dead_letters {
            Some(store) => store.discard_table(&source_name),
            None => Ok(()),
        }
    }

    /// The pending batch of the event's table, created when missing. The schema `Arc` is the
    /// same for every change until the source announces a new one, so a pointer comparison
    /// finds the batch of a run of changes to one table.
    fn batch_for(&mut self, schema: &Arc<TableSchema>) -> &mut TableBatch {
        let index = match self
            .pending
            .iter()
            .position(|(_, batch)| Arc::ptr_eq(&batch.schema, schema))
        {
            Some(i) => i,
            None => {
                let source_name = format!("{}.{}", schema.schema, schema.table);
                match self
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
                }
            }
        };
        &mut self.pending[index].1
    }

    /// Takes one message into the pending batches.
    async fn take(&mut self, message: SourceMessage) -> Result<(), PipelineError> {
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
                    return self.truncate(&schema).await;
                }
                let known = self
                    .last_schema
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &schema))
                    || {
                        let source_name = format!("{}.{}", schema.schema, schema.table);
                        self.tables.get(&source_name).is_some_and(|t| {
                            Arc::ptr_eq(&t.schema, &schema) || t.schema.columns == schema.columns
                        })
                    };
                if !known {
                    // A schema change is a barrier: rows decoded with the old schema go first.
                    self.apply_pending().await?;
                    self.reconcile(&schema).await?;
                }
                self.last_schema = Some(Arc::clone(&schema));
                self.pending_bytes += event.approx_size();
                self.batch_for(&schema).add_owned(event);
                self.pending_changes += 1;
                if self.pending_changes >= self.config.max_batch_changes
                    || self.pending_bytes >= MAX_BATCH_BYTES
                {
                    self.apply_pending().await?;
                }
            }
            SourceMessage::Commit { position, .. } => self.last_commit = Some(position),
            SourceMessage::Progress { .. } => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn open(&mut self) -> Result<Option<ResumePoint>, PipelineError> {
        let (client, _) = connect::connect(&self.config.url).await?;
        self.client = Some(client);
        self.tables.clear();
        self.last_schema = None;
        self.pending.clear();
        self.pending_changes = 0;
        self.pending_bytes = 0;
        self.in_transaction = false;
        let client = self.client()?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {state} (pipeline text PRIMARY KEY, position jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
                schema = quote_ident(&self.config.schema),
                state = self.state_table(),
            ))
            .await
            .map_err(|e| sink_error(e, "preparing the target schema and state table"))?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT position::text FROM {} WHERE pipeline = $1",
                    self.state_table()
                ),
                &[&self.config.pipeline],
            )
            .await
            .map_err(|e| sink_error(e, "reading the target's position"))?;
        self.committed = match row {
            None => None,
            Some(row) => {
                let text: String = row.get(0);
                Some(serde_json::from_str(&text).map_err(|e| {
                    PipelineError::definite(
                        "sink",
                        format!("the target's state table holds an unreadable position ({e})"),
                    )
                    .with_hint("delete this pipeline's row from _cdc_state to start over")
                })?)
            }
        };
        self.last_commit = self.committed.clone();
        if let Some(p) = &self.committed {
            tracing::info!(position = %p, "target is at this position; earlier changes are skipped");
        }
        Ok(self.committed.clone().map(|position| ResumePoint {
            position,
            seq: None,
        }))
    }

    async fn write(&mut self, messages: &[SourceMessage]) -> Result<(), PipelineError> {
        for message in messages {
            self.take(message.clone()).await?;
        }
        Ok(())
    }

    async fn write_owned(
        &mut self,
        messages: &mut Vec<SourceMessage>,
    ) -> Result<(), PipelineError> {
        for message in messages.drain(..) {
            self.take(message).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        if self.last_commit == self.committed && !self.in_transaction && self.pending_changes == 0 {
            return Ok(());
        }
        self.apply_pending().await?;
        self.begin().await?;
        let position = self.last_commit.clone();
        if let (true, Some(position)) = (self.config.record_position, &position) {
            let json = serde_json::to_string(position).map_err(|e| {
                PipelineError::definite("sink", format!("encoding the position: {e}"))
            })?;
            self.client()?
                .execute(
                    &format!(
                        "INSERT INTO {} (pipeline, position, updated_at) VALUES ($1, $2::text::jsonb, now())
                         ON CONFLICT (pipeline) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                        self.state_table()
                    ),
                    &[&self.config.pipeline, &json],
                )
                .await
                .map_err(|e| sink_error(e, "recording the position in the target"))?;
        }
        self.client()?
            .batch_execute("COMMIT")
            .await
            .map_err(|e| sink_error(e, "committing the target transaction"))?;
        self.in_transaction = false;
        self.committed = position;
        Ok(())
    }
}

/// Classifies a target error by its SQLSTATE class: connection trouble and contention are
/// transient; a value or row the target refuses (22 data exception, 23 integrity constraint,
/// 54000 a row over an index's limit) is poison for that one change; the rest (28 auth, 3D000 no
/// such database, 42 privileges and objects, ...) needs the operator.
pub(crate) fn sink_error(e: tokio_postgres::Error, doing: &str) -> PipelineError {
    let message = format!("{doing}: {}", error_text(&e));
    if e.is_closed() {
        return PipelineError::transient("sink", message);
    }
    let Some(code) = e.code().map(|c| c.code()) else {
        return PipelineError::transient("sink", message);
    };
    match code {
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
            PipelineError::transient("sink", message)
        }
        c if c.starts_with("40") => PipelineError::transient("sink", message),
        "55P03" | "55006" => PipelineError::transient("sink", message),
        c if c.starts_with("22") => PipelineError::poison("data", message),
        c if c.starts_with("23") => PipelineError::poison("constraint", message),
        "54000" => PipelineError::poison("too_large", message),
        c if c.starts_with("28") => PipelineError::definite("auth", message)
            .with_hint("check the user and password in sink.url"),
        "3D000" => PipelineError::definite("sink", message)
            .with_hint("create the target database, or fix the database in sink.url"),
        "42501" => PipelineError::definite("sink", message).with_hint(
            "GRANT the sink.url user CREATE on the target schema and INSERT, UPDATE, DELETE on its tables",
        ),
        c if c.starts_with("42") => PipelineError::definite("sink", message)
            .with_hint("the target's tables or privileges do not match what the sink expects"),
        _ => PipelineError::definite("sink", message),
    }
}

/// Applies parts of one table's changes, each under a savepoint, for the dead-letter search.
struct PartApplier<'a> {
    client: &'a Client,
    target: apply::Target<'a>,
    counter: &'a mut u64,
    failed_at: Option<usize>,
}

#[async_trait]
impl ApplyPart<NetChange> for PartApplier<'_> {
    async fn apply_part(&mut self, part: &[NetChange]) -> Result<Refusals, PipelineError> {
        self.failed_at = None;
        let context = |e| sink_error(e, "setting a savepoint in the target transaction");
        self.client
            .batch_execute("SAVEPOINT cdc_part")
            .await
            .map_err(context)?;
        match apply::changes(self.client, &self.target, part, self.counter).await {
            Ok(refused) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT cdc_part")
                    .await
                    .map_err(context)?;
                Ok(refused)
            }
            Err(refused) if refused.error.is_poison() => {
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT cdc_part; RELEASE SAVEPOINT cdc_part")
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

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// `cdc-agent check` for the postgres sink: can it connect, and create the schema and tables.
pub async fn check(config: &PostgresSinkConfig) -> cdc_core::CheckOutcome {
    use cdc_core::CheckOutcome;
    let (client, target) = match connect::connect(&config.url).await {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::fail(
                "sink",
                e.message,
                e.hint.unwrap_or_else(|| "check sink.url".into()),
            );
        }
    };
    let tls = match (target.over_tcp(), connect::session_tls(&client).await) {
        (false, _) => "Unix socket, no TLS".to_string(),
        (true, Some(on)) => target.tls.describe(on),
        (true, None) => format!("TLS state unknown (sslmode={})", target.tls.sslmode),
    };
    let probe = client
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE') \
             OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1 AND has_schema_privilege(oid, 'CREATE'))",
            &[&config.schema],
        )
        .await;
    match probe {
        Ok(row) if row.get::<_, bool>(0) => CheckOutcome::ok(
            "sink",
            format!(
                "postgres target reachable; schema {} can be written; {tls}",
                config.schema
            ),
        ),
        Ok(_) => CheckOutcome::fail(
            "sink",
            format!(
                "the target user cannot create tables in schema {}",
                config.schema
            ),
            format!(
                "GRANT CREATE ON SCHEMA {} (or the database) to the sink.url user",
                config.schema
            ),
        ),
        Err(e) => {
            let e = sink_error(e, "checking privileges on the target");
            CheckOutcome::fail(
                "sink",
                e.message,
                e.hint.unwrap_or_else(|| "check sink.url".into()),
            )
        }
    }
}
