//! Connecting, reading the server's binlog settings and position, and `cdc-agent check`.

use cdc_core::{CheckOutcome, PipelineError, Position};
use cdc_tls::mysql::{MysqlTls, MysqlUrl};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::errors::{classify, query_error};

#[derive(Clone, Debug)]
pub struct MysqlConfig {
    pub url: String,
    /// `database.table` patterns, `*` wildcards allowed; empty: the URL's database, else every
    /// non-system database.
    pub tables: Vec<String>,
    /// The replica id the agent registers with; unique among the server's replicas.
    pub server_id: u32,
    /// Copy existing rows before streaming on the first start.
    pub initial_snapshot: bool,
    /// Copy existing rows, then stop.
    pub snapshot_only: bool,
    /// Chunks between watermarks while streaming, or one consistent transaction.
    pub snapshot_method: cdc_core::chunked::SnapshotMethod,
    /// Tables copied at once (watermark method).
    pub snapshot_workers: usize,
    /// Rows per chunk (watermark method).
    pub snapshot_chunk_rows: usize,
    /// `database.table` of the watermark signal table (created if missing).
    pub signal_table: String,
    /// The `[[table]]` rules, for `check` (the agent applies them; the binlog carries every
    /// column).
    pub table_rules: Vec<cdc_core::columns::TableRule>,
}

impl MysqlConfig {
    /// The patterns in force: the configured ones, else `db.*` for the URL's database.
    pub fn patterns(&self) -> Vec<String> {
        if !self.tables.is_empty() {
            return self.tables.clone();
        }
        match cdc_tls::mysql::parse_url(&self.url)
            .ok()
            .and_then(|u| u.opts.db_name().map(str::to_string))
        {
            Some(db) => vec![format!("{db}.*")],
            None => Vec::new(),
        }
    }

    /// A table is replicated if a pattern names it, unless it is a system table or the
    /// snapshot's own signal table.
    pub fn includes(&self, patterns: &[String], db: &str, table: &str) -> bool {
        !SYSTEM_DATABASES.contains(&db)
            && self.signal_table != format!("{db}.{table}")
            && cdc_core::schema::table_included(patterns, db, table)
    }
}

pub const SYSTEM_DATABASES: [&str; 4] =
    ["mysql", "information_schema", "performance_schema", "sys"];

/// A server_id for a pipeline that did not set one: stable per pipeline name, in a range real
/// replicas rarely use.
pub fn default_server_id(pipeline: &str) -> u32 {
    let hash = pipeline.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    1_000_000_000 + hash % 1_000_000_000
}

/// `source.url`, parsed: an error names the parameter (the config check calls this at load
/// time, so a bad URL exits 2).
pub fn parse_url(url: &str) -> Result<MysqlUrl, PipelineError> {
    cdc_tls::mysql::parse_url(url).map_err(|e| {
        PipelineError::definite("config", format!("source.url: {e}"))
            .with_hint("use mysql://user:password@host:3306/database?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem")
    })
}

pub async fn connect(config: &MysqlConfig) -> Result<Conn, PipelineError> {
    Ok(connect_url(config).await?.0)
}

/// Connects, and says what the URL asked of TLS (for `check`).
pub async fn connect_url(config: &MysqlConfig) -> Result<(Conn, MysqlTls), PipelineError> {
    let url = parse_url(&config.url)?;
    let conn = cdc_tls::mysql::connect(OptsBuilder::from_opts(url.opts), &url.tls)
        .await
        .map_err(|e| connect_error(e, &url.tls))?;
    Ok((conn, url.tls))
}

/// A TLS setting that cannot work and a refused handshake are definite, named with the fix; an
/// "Access denied" to a plaintext login says the server may require TLS.
fn connect_error(e: cdc_tls::mysql::ConnectError, tls: &MysqlTls) -> PipelineError {
    const URL_KEY: &str = "source.url";
    match e {
        cdc_tls::mysql::ConnectError::Tls(e) => {
            PipelineError::definite("config", format!("{URL_KEY}: {e}"))
                .with_hint("fix ssl-ca, ssl-cert or ssl-key in source.url")
        }
        cdc_tls::mysql::ConnectError::Driver(e) => {
            let text = e.to_string();
            if let Some(refusal) = cdc_tls::refusal(&text, &cdc_tls::mysql::VOCABULARY, URL_KEY) {
                return PipelineError::definite(
                    "connection",
                    format!(
                        "{}: connecting to the source (ssl-mode={}): {text}",
                        refusal.what, tls.mode
                    ),
                )
                .with_hint(refusal.hint);
            }
            let mut error = classify(e, "connecting to the source");
            if error.kind == "auth" {
                if let Some(tls_hint) = tls.access_denied_hint(URL_KEY) {
                    error.hint = Some(match error.hint {
                        Some(hint) => format!("{hint}; {tls_hint}"),
                        None => tls_hint,
                    });
                }
            }
            error
        }
    }
}

/// The server's binlog settings that decide whether row changes can be read at all.
#[derive(Clone, Debug)]
pub struct BinlogSettings {
    pub log_bin: bool,
    pub format: String,
    pub row_image: String,
    pub mariadb: bool,
    pub version: String,
    /// Retention in seconds, where the server says (0: forever).
    pub retention_seconds: Option<u64>,
}

pub async fn binlog_settings(conn: &mut Conn) -> Result<BinlogSettings, PipelineError> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', \
             'version', 'binlog_expire_logs_seconds', 'expire_logs_days')",
        )
        .await
        .map_err(|e| query_error(e, "reading the binlog settings"))?;
    let get = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let version = get("version");
    let seconds: Option<u64> = get("binlog_expire_logs_seconds").parse().ok();
    let days: Option<f64> = get("expire_logs_days").parse().ok();
    let retention_seconds = match (seconds, days) {
        (Some(s), _) if s > 0 => Some(s),
        (_, Some(d)) if d > 0.0 => Some((d * 86_400.0) as u64),
        (Some(0), _) | (_, Some(_)) => Some(0),
        _ => None,
    };
    Ok(BinlogSettings {
        log_bin: get("log_bin").eq_ignore_ascii_case("ON") || get("log_bin") == "1",
        format: get("binlog_format").to_uppercase(),
        row_image: get("binlog_row_image").to_uppercase(),
        mariadb: version.to_lowercase().contains("mariadb"),
        version,
        retention_seconds,
    })
}

/// The settings problems, each a definite error with the fix.
pub fn settings_errors(s: &BinlogSettings) -> Vec<PipelineError> {
    let mut out = Vec::new();
    if !s.log_bin {
        out.push(
            PipelineError::definite("config", "the source server's binary log is off (log_bin=OFF)")
                .with_hint("start the server with log_bin (e.g. log_bin=mysql-bin in [mysqld]) and a server_id, then restart it"),
        );
    }
    if s.log_bin && s.format != "ROW" {
        out.push(
            PipelineError::definite(
                "config",
                format!(
                    "binlog_format is {}: row changes are only in the binlog with ROW",
                    s.format
                ),
            )
            .with_hint(
                "SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in the server config)",
            ),
        );
    }
    if s.log_bin && !s.row_image.is_empty() && s.row_image != "FULL" {
        out.push(
            PipelineError::definite(
                "config",
                format!(
                    "binlog_row_image is {}: updates and deletes would lack the columns they did not touch",
                    s.row_image
                ),
            )
            .with_hint("SET GLOBAL binlog_row_image = 'FULL' (and in the server config)"),
        );
    }
    out
}

/// The binlog file and offset the server writes next.
pub async fn current_position(conn: &mut Conn) -> Result<Position, PipelineError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| query_error(e, "reading the current binlog position"))?;
    let row = row.ok_or_else(|| {
        PipelineError::definite(
            "config",
            "SHOW MASTER STATUS is empty: the binary log is off",
        )
        .with_hint("start the server with log_bin and a server_id")
    })?;
    let file: Option<String> = row.get(0);
    let pos: Option<u64> = row.get(1);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(Position::Mysql {
            file: file.into(),
            pos,
            gtid: None,
        }),
        _ => Err(PipelineError::definite(
            "source",
            "SHOW MASTER STATUS returned no file and position",
        )),
    }
}

/// The binlog files the server still has, with their sizes.
pub async fn binlog_files(conn: &mut Conn) -> Result<Vec<(String, u64)>, PipelineError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| query_error(e, "listing the binlog files"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect())
}

/// An error when the server no longer has `file` (purged): the stream could not resume there.
pub fn purged_error(file: &str, oldest: Option<&str>) -> PipelineError {
    PipelineError::definite(
        "source",
        format!(
            "the checkpointed binlog file {file} is no longer on the server (oldest kept: {}): changes since the checkpoint are lost to the agent",
            oldest.unwrap_or("none")
        ),
    )
    .with_hint("raise binlog retention (binlog_expire_logs_seconds), then `cdc-agent reset --yes` and run again to take a new snapshot")
}

/// Bytes between `from` and the end of the binlog, across files.
pub fn bytes_behind(files: &[(String, u64)], from: &Position) -> Option<u64> {
    let Position::Mysql { file, pos, .. } = from else {
        return None;
    };
    let start = files
        .iter()
        .position(|(name, _)| name.as_str() == &**file)?;
    let mut total = files[start].1.saturating_sub(*pos);
    for (_, size) in &files[start + 1..] {
        total += size;
    }
    Some(total)
}

/// What `status` shows of the server when the agent is stopped.
pub struct ServerState {
    pub current: Position,
    pub files: Vec<(String, u64)>,
}

pub async fn server_state(config: &MysqlConfig) -> Result<ServerState, PipelineError> {
    let mut conn = connect(config).await?;
    let current = current_position(&mut conn).await?;
    let files = binlog_files(&mut conn).await.unwrap_or_default();
    let _ = conn.disconnect().await;
    Ok(ServerState { current, files })
}

/// `cdc-agent check` for a MySQL/MariaDB source.
pub async fn preflight(config: &MysqlConfig, checkpoint: Option<&Position>) -> Vec<CheckOutcome> {
    let mut out = Vec::new();
    let (mut conn, tls) = match connect_url(config).await {
        Ok(c) => c,
        Err(e) => {
            out.push(fail("source connection", e));
            return out;
        }
    };
    out.push(CheckOutcome::ok("source connection", "connected"));
    out.push(match cdc_tls::mysql::session_cipher(&mut conn).await {
        Ok(cipher) => CheckOutcome::ok("source tls", tls.describe(&cipher)),
        Err(e) => fail(
            "source tls",
            query_error(e, "reading the session's Ssl_cipher"),
        ),
    });
    match binlog_settings(&mut conn).await {
        Ok(s) => {
            let errors = settings_errors(&s);
            if errors.is_empty() {
                out.push(CheckOutcome::ok(
                    "binlog",
                    format!(
                        "log_bin=ON, binlog_format=ROW, binlog_row_image=FULL ({})",
                        s.version
                    ),
                ));
            }
            for e in errors {
                out.push(fail("binlog", e));
            }
            out.push(match s.retention_seconds {
                Some(0) => {
                    CheckOutcome::ok("binlog retention", "binlogs are kept until purged by hand")
                }
                Some(secs) => CheckOutcome::ok(
                    "binlog retention",
                    format!(
                        "binlogs are kept {:.1} days: an agent stopped longer must snapshot again",
                        secs as f64 / 86_400.0
                    ),
                ),
                None => CheckOutcome::ok("binlog retention", "the server does not say"),
            });
        }
        Err(e) => out.push(fail("binlog", e)),
    }
    out.push(match grants_problem(&mut conn).await {
        Ok(None) => CheckOutcome::ok("grants", "REPLICATION SLAVE, REPLICATION CLIENT and SELECT"),
        Ok(Some(missing)) => CheckOutcome::fail(
            "grants",
            format!("the source user lacks {missing}"),
            format!("GRANT {missing} ON *.* TO the source.url user"),
        ),
        Err(e) => fail("grants", e),
    });
    out.push(server_id_check(&mut conn, config.server_id).await);
    if let Some(Position::Mysql { file, .. }) = checkpoint {
        match binlog_files(&mut conn).await {
            Ok(files) if files.iter().any(|(f, _)| f.as_str() == &**file) => {
                out.push(CheckOutcome::ok(
                    "checkpoint",
                    format!("binlog file {file} is still on the server"),
                ))
            }
            Ok(files) => out.push(fail(
                "checkpoint",
                purged_error(file, files.first().map(|(f, _)| f.as_str())),
            )),
            Err(e) => out.push(fail("checkpoint", e)),
        }
    }
    out.extend(table_checks(config, &mut conn).await);
    let _ = conn.disconnect().await;
    out
}

fn fail(name: &str, e: PipelineError) -> CheckOutcome {
    let hint = e.hint.clone().unwrap_or_else(|| "see the message".into());
    CheckOutcome::fail(name, e.message, hint)
}

/// The privileges the agent needs that `SHOW GRANTS` does not show, if any.
pub async fn grants_problem(conn: &mut Conn) -> Result<Option<String>, PipelineError> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| query_error(e, "reading the source user's grants"))?;
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_uppercase())
        .collect();
    let has = |privilege: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(privilege))
    };
    let mut missing = Vec::new();
    // MariaDB 10.5+ calls REPLICATION SLAVE "REPLICATION REPLICA" and REPLICATION CLIENT
    // "BINLOG MONITOR".
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        missing.push("REPLICATION SLAVE");
    }
    if !has("REPLICATION CLIENT") && !has("BINLOG MONITOR") {
        missing.push("REPLICATION CLIENT");
    }
    let any_select = grants.iter().any(|g| {
        let g = g.to_uppercase();
        g.contains("ALL PRIVILEGES") || g.contains("SELECT")
    });
    if !any_select {
        missing.push("SELECT");
    }
    Ok((!missing.is_empty()).then(|| missing.join(", ")))
}

/// The server's own id and its connected replicas must not share our server_id.
async fn server_id_check(conn: &mut Conn, server_id: u32) -> CheckOutcome {
    let own: Option<u64> = conn.query_first("SELECT @@server_id").await.ok().flatten();
    if own == Some(u64::from(server_id)) {
        return CheckOutcome::fail(
            "server_id",
            format!("server_id {server_id} is the source server's own id"),
            "set another `server_id` in [source]",
        );
    }
    // MariaDB lists replicas only to users with REPLICATION MASTER ADMIN.
    let replicas: Vec<mysql_async::Row> = match conn.query("SHOW SLAVE HOSTS").await {
        Ok(rows) => rows,
        Err(_) => {
            return CheckOutcome::ok(
                "server_id",
                format!("{server_id} (the replicas connected now cannot be listed with this user's grants; a clash stops one agent with a clear error)"),
            )
        }
    };
    let taken = replicas
        .iter()
        .any(|r| r.get::<u64, _>(0) == Some(u64::from(server_id)));
    if taken {
        CheckOutcome::fail(
            "server_id",
            format!("a replica with server_id {server_id} is connected to the source now"),
            "give each replica and cdc-agent its own `server_id` in [source] (or stop the other agent)",
        )
    } else {
        CheckOutcome::ok("server_id", format!("{server_id} is not in use"))
    }
}

/// The configured tables: present, and with a primary key.
async fn table_checks(config: &MysqlConfig, conn: &mut Conn) -> Vec<CheckOutcome> {
    match resolve_tables(config, conn).await {
        Ok((tables, problems)) => {
            let mut out: Vec<CheckOutcome> = problems
                .into_iter()
                .map(|p| CheckOutcome::fail("tables", p, "create the table or fix source.tables"))
                .collect();
            if out.is_empty() {
                out.push(CheckOutcome::tables_found(
                    &tables
                        .iter()
                        .map(|(d, t)| format!("{d}.{t}"))
                        .collect::<Vec<_>>(),
                ));
                out.extend(column_filter_checks(config, conn, &tables).await);
            }
            out
        }
        Err(e) => vec![fail("tables", e)],
    }
}

/// `check`'s line per table a `[[table]]` section applies to: what it leaves out and masks
/// (in the agent: the binlog carries every column), or why it does not fit the table, which
/// would stop the pipeline at the table's first change.
async fn column_filter_checks(
    config: &MysqlConfig,
    conn: &mut Conn,
    tables: &[(String, String)],
) -> Vec<CheckOutcome> {
    if config.table_rules.is_empty() {
        return Vec::new();
    }
    let mut masker = cdc_core::columns::Masker::new(config.table_rules.clone(), None);
    let mut out = Vec::new();
    for (db, table) in tables {
        let info = match crate::schema::read_table(conn, db, table).await {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(e) => {
                out.push(fail("column filter", e));
                continue;
            }
        };
        let decoded = crate::schema::DecodedTable::new(info);
        out.push(match masker.describe(&decoded.schema) {
            Ok(None) => continue,
            Ok(Some(what)) => CheckOutcome::ok(
                "column filter",
                format!("{db}.{table}: in the agent (the binlog carries every column): {what}"),
            ),
            Err(e) => fail("column filter", e),
        });
    }
    out
}

/// The tables the patterns name, and a problem per pattern that names no table or table
/// without a primary key.
/// The pipeline's tables now (`database.table`), for `cdc-agent snapshot` without names.
pub async fn configured_tables(config: &MysqlConfig) -> Result<Vec<String>, PipelineError> {
    let mut conn = connect(config).await?;
    let resolved = resolve_tables(config, &mut conn).await;
    let _ = conn.disconnect().await;
    Ok(resolved?
        .0
        .into_iter()
        .map(|(db, table)| format!("{db}.{table}"))
        .collect())
}

/// Could a table of database `db` match one of the patterns (`db.table` globs, `*` matching
/// anything, dots included)? An over-approximation on the text before each pattern's first `*`,
/// which is enough to keep the catalog query to the databases that matter: MariaDB otherwise
/// opens every table of every database on the server, most of a second at each start on a
/// server with many.
fn database_may_match(patterns: &[String], db: &str) -> bool {
    let dotted = format!("{db}.");
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.split_once('*') {
                Some((fixed, _)) => dotted.starts_with(fixed) || fixed.starts_with(&dotted),
                None => pattern.starts_with(&dotted),
            })
}

pub async fn resolve_tables(
    config: &MysqlConfig,
    conn: &mut Conn,
) -> Result<(Vec<(String, String)>, Vec<String>), PipelineError> {
    let patterns = config.patterns();
    let databases: Vec<String> = conn
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        .await
        .map_err(|e| query_error(e, "listing the source databases"))?;
    let databases: Vec<String> = databases
        .into_iter()
        .filter(|db| !SYSTEM_DATABASES.contains(&db.as_str()) && database_may_match(&patterns, db))
        .map(|db| format!("'{}'", db.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    let rows: Vec<(String, String, i64)> = if databases.is_empty() {
        Vec::new()
    } else {
        conn.query(format!(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, \
             (SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS c WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA \
              AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') \
             FROM information_schema.TABLES t WHERE t.TABLE_TYPE = 'BASE TABLE' \
             AND t.TABLE_SCHEMA IN ({}) ORDER BY 1, 2",
            databases.join(", ")
        ))
        .await
        .map_err(|e| query_error(e, "listing the source tables"))?
    };
    let mut tables = Vec::new();
    let mut problems = Vec::new();
    for (db, table, keys) in rows {
        if config.includes(&patterns, &db, &table) {
            if keys == 0 {
                problems.push(format!(
                    "{db}.{table} has no primary key: updates and deletes cannot be matched in a target"
                ));
            }
            tables.push((db, table));
        }
    }
    for pattern in &patterns {
        if !pattern.contains('*') && !tables.iter().any(|(d, t)| &format!("{d}.{t}") == pattern) {
            problems.push(format!("table {pattern} does not exist on the source"));
        }
    }
    Ok((tables, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_reads_only_the_databases_the_patterns_can_match() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let patterns = p(&["shop.orders", "crm.c*"]);
        assert!(database_may_match(&patterns, "shop"));
        assert!(database_may_match(&patterns, "crm"));
        assert!(!database_may_match(&patterns, "shop2"));
        assert!(!database_may_match(&patterns, "cr"));
        // Dots in database names: `*` matches them too.
        assert!(database_may_match(&p(&["shop.*"]), "shop.eu"));
        assert!(database_may_match(&p(&["a.b.c"]), "a.b"));
        assert!(!database_may_match(&p(&["a.b.c"]), "a.c"));
        assert!(database_may_match(&p(&["*.audit"]), "anything"));
        assert!(database_may_match(&p(&["sh*p.orders"]), "shop"));
        assert!(!database_may_match(&p(&["sh*p.orders"]), "crm"));
        assert!(database_may_match(&[], "anything"));
    }

    #[test]
    fn lag_adds_up_across_binlog_files() {
        let files = vec![
            ("bin.000001".to_string(), 1000),
            ("bin.000002".to_string(), 500),
        ];
        let at = |file: &str, pos| Position::Mysql {
            file: file.into(),
            pos,
            gtid: None,
        };
        assert_eq!(bytes_behind(&files, &at("bin.000001", 400)), Some(1100));
        assert_eq!(bytes_behind(&files, &at("bin.000002", 500)), Some(0));
        assert_eq!(bytes_behind(&files, &at("bin.000000", 4)), None);
    }

    /// The binary log cannot be turned off at run time, so the end-to-end errors test cannot
    /// show this one against the test server: here is what `check` and `run` say.
    #[test]
    fn a_server_without_binlog_is_told_how_to_turn_it_on() {
        let settings = BinlogSettings {
            log_bin: false,
            format: "ROW".into(),
            row_image: "FULL".into(),
            mariadb: true,
            version: "10.11".into(),
            retention_seconds: None,
        };
        let errors = settings_errors(&settings);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("log_bin=OFF"));
        assert!(errors[0].hint.as_deref().unwrap().contains("log_bin"));
        assert!(!errors[0].is_transient());
    }

    #[test]
    fn default_server_ids_are_stable_and_out_of_the_way() {
        assert_eq!(default_server_id("orders"), default_server_id("orders"));
        assert_ne!(default_server_id("orders"), default_server_id("billing"));
        assert!(default_server_id("x") >= 1_000_000_000);
    }
}
