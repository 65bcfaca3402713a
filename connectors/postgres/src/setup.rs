//! Setting the source up and looking at it: tables, publication, slot, server settings.
//!
//! Used by `run` (before streaming), `check` (read-only preflight), `status` (server position and
//! retained WAL when the agent is stopped) and `reset` (dropping the slot).

use cdc_core::{CheckOutcome, Lsn, PipelineError};

use crate::column_lists;
use crate::errors::classify;
use crate::schema::{quote_ident, quote_literal, Catalog, SESSION_SETTINGS};
use crate::wire::{ConnectParams, Connection};

/// The Postgres part of the pipeline's configuration.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub url: String,
    /// `schema.table` patterns, `*` wildcards allowed; empty: every table.
    pub tables: Vec<String>,
    pub slot: String,
    pub publication: String,
    /// Copy existing rows before streaming when the slot is created.
    pub initial_snapshot: bool,
    /// Copy existing rows, then stop (no lasting slot, no streaming).
    pub snapshot_only: bool,
    /// Write a `pg_logical_emit_message` this often, so the slot advances even when the whole
    /// database is quiet (`None`: never).
    pub heartbeat_interval: Option<std::time::Duration>,
    /// How snapshots are taken (see [`crate::chunked`]).
    pub snapshot_method: cdc_core::chunked::SnapshotMethod,
    /// Tables copied at once by a chunked snapshot.
    pub snapshot_workers: usize,
    /// Rows per chunk.
    pub snapshot_chunk_rows: usize,
    /// The `[[table]]` rules: `columns = [...]` become publication column lists where safe
    /// (see [`crate::column_lists`]).
    pub table_rules: Vec<cdc_core::columns::TableRule>,
    /// Have the server send a big transaction while it runs (pgoutput protocol 2, `streaming
    /// 'on'`, Postgres 14+), spilled to `spill_dir` until its commit.
    pub streaming: bool,
    /// Where streamed transactions wait for their commit (the agent's alone).
    pub spill_dir: std::path::PathBuf,
}

/// A table the pipeline replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

pub fn connect_params(config: &PostgresConfig) -> Result<ConnectParams, PipelineError> {
    let mut params = ConnectParams::from_url(&config.url).map_err(|e| {
        PipelineError::definite("config", format!("source.url: {e}"))
            .with_hint("write it as postgres://user:password@host:port/dbname?sslmode=prefer")
    })?;
    if params.application_name.is_empty() {
        params.application_name = "cdc-agent".into();
    }
    Ok(params)
}

pub use cdc_core::schema::{glob_match, table_included};

/// The configured tables as they exist, with every problem found (missing table, no key).
pub async fn resolve_tables(
    catalog: &mut Catalog,
    config: &PostgresConfig,
) -> Result<(Vec<TableRef>, Vec<String>), PipelineError> {
    let r = catalog
        .query(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
             ORDER BY n.nspname, c.relname",
        )
        .await?;
    let mut tables = Vec::new();
    let mut problems = Vec::new();
    for row in 0..r.rows.len() {
        let schema = r.get(row, "nspname").unwrap_or_default();
        let name = r.get(row, "relname").unwrap_or_default();
        if !table_included(&config.tables, schema, name) {
            continue;
        }
        let table = TableRef {
            oid: r.get(row, "oid").and_then(|s| s.parse().ok()).unwrap_or(0),
            schema: schema.to_string(),
            name: name.to_string(),
        };
        let has_pk = r.get(row, "has_pk") == Some("t");
        match r.get(row, "relreplident") {
            Some("n") => problems.push(format!(
                "table {} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be replicated (fix: ALTER TABLE {} REPLICA IDENTITY DEFAULT, with a primary key, or FULL)",
                table.qualified(), table.sql_name()
            )),
            Some("d") if !has_pk => problems.push(format!(
                "table {} has no primary key and no replica identity (fix: add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL)",
                table.qualified(), table.sql_name()
            )),
            _ => {}
        }
        tables.push(table);
    }
    for pattern in &config.tables {
        if !pattern.contains('*') && !tables.iter().any(|t| &t.qualified() == pattern) {
            problems.push(format!(
                "table {pattern} does not exist (fix: create it, or remove it from source.tables)"
            ));
        }
    }
    Ok((tables, problems))
}

/// The tables the configuration selects, as `schema.table` (for `cdc-agent snapshot` with no
/// table named).
pub async fn configured_tables(config: &PostgresConfig) -> Result<Vec<String>, PipelineError> {
    let mut catalog = Catalog::new(connect_params(config)?);
    let (tables, _problems) = resolve_tables(&mut catalog, config).await?;
    catalog.close().await;
    Ok(tables.iter().map(TableRef::qualified).collect())
}

pub async fn wal_level(catalog: &mut Catalog) -> Result<String, PipelineError> {
    let r = catalog.query("SHOW wal_level").await?;
    Ok(r.get(0, "wal_level").unwrap_or_default().to_string())
}

pub fn wal_level_error(level: &str) -> PipelineError {
    PipelineError::definite(
        "config",
        format!("the source server runs with wal_level = {level}; logical replication needs wal_level = logical"),
    )
    .with_hint("ALTER SYSTEM SET wal_level = logical; then restart Postgres")
}

/// Creates the publication if missing, adds configured tables it lacks, and sets the column
/// lists of tables with a column filter where that is safe ([`crate::column_lists`]). Returns
/// the choice made for each filtered table.
pub async fn ensure_publication(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    tables: &[TableRef],
) -> Result<Vec<(TableRef, column_lists::Choice)>, PipelineError> {
    let plan = column_lists::plan(catalog, config, tables).await?;
    for (table, choice) in &plan {
        match choice {
            column_lists::Choice::Server(columns) => {
                tracing::info!(table = %table.qualified(), columns = %columns.join(", "), "publication column list: the server sends only these columns")
            }
            column_lists::Choice::Agent(why) => {
                tracing::info!(table = %table.qualified(), "column filter: {why}")
            }
        }
    }
    add_to_publication(catalog, config, tables, &plan).await?;
    column_lists::sync(catalog, &config.publication, &plan).await?;
    Ok(plan)
}

async fn add_to_publication(
    catalog: &mut Catalog,
    config: &PostgresConfig,
    tables: &[TableRef],
    plan: &[(TableRef, column_lists::Choice)],
) -> Result<(), PipelineError> {
    let entry = |t: &TableRef| {
        column_lists::publication_entry(t, plan.iter().find(|(p, _)| p == t).map(|(_, c)| c))
    };
    let name = &config.publication;
    let r = catalog
        .query(&format!(
            "SELECT puballtables FROM pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))
        .await?;
    let table_list = || tables.iter().map(entry).collect::<Vec<_>>().join(", ");
    if r.rows.is_empty() {
        let sql = if config.tables.is_empty() {
            format!("CREATE PUBLICATION {} FOR ALL TABLES", quote_ident(name))
        } else if tables.is_empty() {
            return Err(PipelineError::definite(
                "config",
                "source.tables matches no table, so there is nothing to publish",
            )
            .with_hint("check the patterns in source.tables"));
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(name),
                table_list()
            )
        };
        tracing::info!(publication = %name, "creating publication");
        catalog.query(&sql).await?;
        return Ok(());
    }
    if r.get(0, "puballtables") == Some("t") {
        return Ok(());
    }
    let published = catalog
        .query(&format!(
            "SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = {}",
            quote_literal(name)
        ))
        .await?;
    let have: Vec<&str> = (0..published.rows.len())
        .filter_map(|i| published.get(i, "name"))
        .collect();
    let missing: Vec<&TableRef> = tables
        .iter()
        .filter(|t| !have.contains(&t.qualified().as_str()))
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|&t| entry(t)).collect();
        tracing::info!(publication = %name, tables = %list.join(", "), "adding tables to the publication");
        catalog
            .query(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(name),
                list.join(", ")
            ))
            .await?;
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_info(
    catalog: &mut Catalog,
    slot: &str,
) -> Result<Option<SlotInfo>, PipelineError> {
    let r = catalog
        .query(&format!(
            "SELECT plugin, database, active_pid, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    if r.rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(SlotInfo {
        plugin: r.get(0, "plugin").unwrap_or_default().to_string(),
        database: r.get(0, "database").unwrap_or_default().to_string(),
        active_pid: r.get(0, "active_pid").and_then(|s| s.parse().ok()),
        confirmed_flush: r.get(0, "confirmed_flush_lsn").and_then(|s| s.parse().ok()),
    }))
}

/// What a stopped agent's `status` needs from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub current: Lsn,
    pub slot_confirmed: Option<Lsn>,
    pub slot_retained_bytes: Option<u64>,
    pub slot_active: bool,
}

pub async fn server_state(config: &PostgresConfig) -> Result<ServerState, PipelineError> {
    let mut catalog = Catalog::new(connect_params(config)?);
    let r = catalog
        .query(&format!(
            "SELECT pg_current_wal_lsn() AS current, \
             (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {slot}) AS confirmed, \
             (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = {slot}) AS retained, \
             (SELECT active FROM pg_replication_slots WHERE slot_name = {slot}) AS active",
            slot = quote_literal(&config.slot)
        ))
        .await?;
    catalog.close().await;
    Ok(ServerState {
        current: r
            .get(0, "current")
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        slot_confirmed: r.get(0, "confirmed").and_then(|s| s.parse().ok()),
        slot_retained_bytes: r.get(0, "retained").and_then(|s| s.parse().ok()),
        slot_active: r.get(0, "active") == Some("t"),
    })
}

/// Drops the pipeline's slot. `Ok(false)` when there was none.
pub async fn drop_slot(config: &PostgresConfig) -> Result<bool, PipelineError> {
    let mut catalog = Catalog::new(connect_params(config)?);
    let exists = slot_info(&mut catalog, &config.slot).await?.is_some();
    if exists {
        catalog
            .query(&format!(
                "SELECT pg_drop_replication_slot({})",
                quote_literal(&config.slot)
            ))
            .await?;
    }
    catalog.close().await;
    Ok(exists)
}

/// `check`'s line on how big transactions arrive: streamed while they run (protocol 2) or at
/// their commit, and why.
async fn big_transactions(catalog: &mut Catalog, config: &PostgresConfig) -> CheckOutcome {
    let detail = match column_lists::server_version(catalog).await {
        Ok(v) if config.streaming && v >= crate::source::STREAMING_SINCE => format!(
            "streamed while they run (pgoutput protocol 2) and held in {} until their commit",
            config.spill_dir.display()
        ),
        Ok(v) if config.streaming => format!(
            "sent at their commit: Postgres {} has no protocol 2 (14 and later do)",
            v / 10_000
        ),
        Ok(_) => {
            "sent at their commit (source.streaming = false, or unset with a warehouse target)"
                .to_string()
        }
        Err(e) => return fail_from("big transactions", e),
    };
    CheckOutcome::ok("big transactions", detail)
}

/// `cdc-agent check` for a Postgres source: read-only, one outcome per question.
pub async fn preflight(config: &PostgresConfig) -> Vec<CheckOutcome> {
    let mut out = Vec::new();
    let params = match connect_params(config) {
        Ok(p) => p,
        Err(e) => {
            out.push(CheckOutcome::fail(
                "source connection",
                e.message,
                e.hint.unwrap_or_default(),
            ));
            return out;
        }
    };
    let target = format!(
        "{}:{}/{} as {}",
        params.host, params.port, params.dbname, params.user
    );
    let mut catalog = Catalog::new(params.clone());
    let version = match catalog.query("SHOW server_version").await {
        Ok(r) => r.get(0, "server_version").unwrap_or_default().to_string(),
        Err(e) => {
            out.push(fail_from("source connection", e));
            return out;
        }
    };
    out.push(CheckOutcome::ok(
        "source connection",
        format!("connected to {target} (Postgres {version})"),
    ));
    // Unix sockets never use TLS (as in libpq): nothing to say about it there.
    if !params.host.starts_with('/') {
        out.push(CheckOutcome::ok(
            "source tls",
            params.tls().describe(catalog.is_tls()),
        ));
    }
    match wal_level(&mut catalog).await {
        Ok(level) if level == "logical" => out.push(CheckOutcome::ok("wal_level", "logical")),
        Ok(level) => out.push(fail_from("wal_level", wal_level_error(&level))),
        Err(e) => out.push(fail_from("wal_level", e)),
    }
    match catalog
        .query(
            "SELECT rolreplication OR rolsuper AS can FROM pg_roles WHERE rolname = current_user",
        )
        .await
    {
        Ok(r) if r.get(0, "can") == Some("t") => out.push(CheckOutcome::ok(
            "replication privilege",
            format!("role {} has REPLICATION", params.user),
        )),
        Ok(_) => out.push(CheckOutcome::fail(
            "replication privilege",
            format!("role {} lacks the REPLICATION attribute", params.user),
            format!("ALTER ROLE {} WITH REPLICATION;", params.user),
        )),
        Err(e) => out.push(fail_from("replication privilege", e)),
    }
    match Connection::connect(&params, true, SESSION_SETTINGS).await {
        Ok(mut conn) => {
            match conn.simple_query("IDENTIFY_SYSTEM").await {
                Ok(_) => out.push(CheckOutcome::ok(
                    "replication connection",
                    "accepted (IDENTIFY_SYSTEM answered)",
                )),
                Err(e) => out.push(fail_from(
                    "replication connection",
                    classify(e, "IDENTIFY_SYSTEM", &params.user),
                )),
            }
            let _ = conn.close().await;
        }
        Err(e) => out.push(fail_from(
            "replication connection",
            classify(e, "opening a replication connection", &params.user),
        )),
    }
    match slot_info(&mut catalog, &config.slot).await {
        Ok(Some(slot)) if slot.plugin != "pgoutput" => out.push(CheckOutcome::fail(
            "replication slot",
            format!("slot {} exists but uses plugin {}", config.slot, slot.plugin),
            "drop it, or set source.slot to another name",
        )),
        Ok(Some(slot)) if slot.database != params.dbname => out.push(CheckOutcome::fail(
            "replication slot",
            format!("slot {} belongs to database {}", config.slot, slot.database),
            "set source.slot to another name",
        )),
        Ok(Some(slot)) => out.push(CheckOutcome::ok(
            "replication slot",
            format!(
                "{} exists (confirmed up to {}{})",
                config.slot,
                slot.confirmed_flush.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                slot.active_pid.map(|p| format!(", in use by PID {p}")).unwrap_or_default()
            ),
        )),
        Ok(None) => match catalog
            .query("SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots) AS free")
            .await
        {
            Ok(r) if r.get(0, "free").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) > 0 => out.push(
                CheckOutcome::ok("replication slot", format!("{} will be created", config.slot)),
            ),
            Ok(_) => out.push(CheckOutcome::fail(
                "replication slot",
                "no free replication slot on the server",
                "raise max_replication_slots (restart needed) or drop an unused slot",
            )),
            Err(e) => out.push(fail_from("replication slot", e)),
        },
        Err(e) => out.push(fail_from("replication slot", e)),
    }
    out.push(big_transactions(&mut catalog, config).await);
    match resolve_tables(&mut catalog, config).await {
        Ok((tables, problems)) if problems.is_empty() => {
            out.push(CheckOutcome::tables_found(
                &tables.iter().map(TableRef::qualified).collect::<Vec<_>>(),
            ));
            out.extend(column_lists::describe(&mut catalog, config, &tables).await);
        }
        Ok((_, problems)) => {
            for p in problems {
                let (detail, hint) = split_fix(&p);
                out.push(CheckOutcome::fail("tables", detail, hint));
            }
        }
        Err(e) => out.push(fail_from("tables", e)),
    }
    match catalog
        .query(&format!(
            "SELECT count(*) AS n FROM pg_publication WHERE pubname = {}",
            quote_literal(&config.publication)
        ))
        .await
    {
        Ok(r) if r.get(0, "n") == Some("1") => out.push(CheckOutcome::ok(
            "publication",
            format!("{} exists", config.publication),
        )),
        Ok(_) => out.push(CheckOutcome::ok(
            "publication",
            format!("{} will be created", config.publication),
        )),
        Err(e) => out.push(fail_from("publication", e)),
    }
    catalog.close().await;
    out
}

fn fail_from(name: &str, e: PipelineError) -> CheckOutcome {
    CheckOutcome::fail(
        name,
        e.message,
        e.hint.unwrap_or_else(|| "see the message".into()),
    )
}

fn split_fix(problem: &str) -> (String, String) {
    match problem.split_once(" (fix: ") {
        Some((detail, fix)) => (detail.to_string(), fix.trim_end_matches(')').to_string()),
        None => (problem.to_string(), "see the message".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_match("public.*", "public.orders"));
        assert!(glob_match("*.orders", "sales.orders"));
        assert!(glob_match("public.ord*s", "public.orders"));
        assert!(!glob_match("public.ord*s", "public.order"));
        assert!(glob_match("public.orders", "public.orders"));
        assert!(!glob_match("public.orders", "public.orders2"));
        assert!(table_included(&[], "a", "b"));
    }
}
