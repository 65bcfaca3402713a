//! A DuckDB target: normalized text, hashes and key ranges in DuckDB SQL.
//!
//! DuckDB lets one process open a database file for writing, and the running agent holds it.
//! With the agent stopped, verify opens the file itself (read-only; read-write for `--repair`);
//! while it runs, verify runs inside the agent and reads through the connection the sink lends
//! ([`SharedDatabase`]). Queries run on a blocking thread of their own, so the source's query
//! runs meanwhile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use cdc_core::Position;
use cdc_sink_duckdb::duckdb::{AccessMode, Config, Connection};
use cdc_sink_duckdb::SharedDatabase;

use super::kind::Kind;
use super::side::{
    is_number, key_in_list, range_predicate, Described, FetchedRow, Key, Range, Side, Summary,
    TableSpec,
};

const DELETED_COLUMN: &str = "_cdc_deleted";

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

struct Prepared {
    from: String,
    names: (String, String),
    filter: String,
    key_values: Vec<String>,
    key_order: Vec<String>,
    key_kinds: Vec<Kind>,
    values: Vec<String>,
    row_md5: String,
}

/// How long a query waits for the sink to publish its database again (it reopens the file
/// after a transient error).
const REOPEN_WAIT: Duration = Duration::from_secs(30);

/// Where the queries go.
#[derive(Clone)]
enum Database {
    /// The file, opened by verify (the agent is stopped).
    File(Arc<Mutex<Connection>>),
    /// The running sink's open database, in the agent's process.
    Shared(SharedDatabase),
}

impl Database {
    /// Runs `work` on the connection; `None` while the sink has no database open.
    fn run<R>(&self, work: impl FnOnce(&Connection) -> Result<R>) -> Result<Option<R>> {
        match self {
            Database::File(conn) => {
                let conn = conn
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the DuckDB connection was poisoned"))?;
                work(&conn).map(Some)
            }
            Database::Shared(shared) => shared.with_reader(work).transpose(),
        }
    }
}

/// The rows of `sql`, every value as text.
fn read_rows(conn: &Connection, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let width = row.as_ref().column_count();
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(row.get::<_, Option<String>>(i)?);
        }
        out.push(values);
    }
    Ok(out)
}

pub struct DuckSide {
    db: Database,
    bytes: u64,
    prepared: Option<Prepared>,
}

impl DuckSide {
    /// Opens the target file: read-only unless rows are to be deleted (`--repair`).
    pub fn open(path: &str, write: bool) -> Result<DuckSide> {
        let config = Config::default()
            .access_mode(if write {
                AccessMode::ReadWrite
            } else {
                AccessMode::ReadOnly
            })
            .and_then(|c| c.enable_autoload_extension(false))
            .and_then(|c| c.with("autoinstall_known_extensions", "false"))
            .context("configuring DuckDB")?;
        let conn = Connection::open_with_flags(path, config)
            .with_context(|| format!("opening the DuckDB target {path}"))?;
        // Instants read as UTC (only with the ICU extension does a time zone apply at all).
        let _ = conn.execute_batch("SET TimeZone = 'UTC'");
        Ok(DuckSide {
            db: Database::File(Arc::new(Mutex::new(conn))),
            bytes: 0,
            prepared: None,
        })
    }

    /// Reads through the running sink's database (verify run inside the agent); the sink's
    /// reader connection reads instants in UTC, as `open` sets it for the file.
    pub fn shared(shared: SharedDatabase) -> DuckSide {
        DuckSide {
            db: Database::Shared(shared),
            bytes: 0,
            prepared: None,
        }
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let started = Instant::now();
        let rows = loop {
            let db = self.db.clone();
            let owned = sql.to_string();
            let rows = tokio::task::spawn_blocking(move || db.run(|conn| read_rows(conn, &owned)))
                .await
                .context("the DuckDB query thread")?
                .with_context(|| {
                    format!(
                        "query on the target: {}",
                        sql.chars().take(160).collect::<String>()
                    )
                })?;
            match rows {
                Some(rows) => break rows,
                None if started.elapsed() < REOPEN_WAIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => anyhow::bail!(
                    "the agent's DuckDB sink has not had its file open for {} s (it is starting or retrying: see `cdc-agent status`)",
                    REOPEN_WAIT.as_secs()
                ),
            }
        };
        self.bytes += rows
            .iter()
            .flatten()
            .flatten()
            .map(|v| v.len() as u64 + 4)
            .sum::<u64>();
        tracing::debug!(
            side = "target",
            ms = started.elapsed().as_millis() as u64,
            rows = rows.len(),
            "verify query"
        );
        Ok(rows)
    }

    fn prepared(&self) -> Result<&Prepared> {
        self.prepared
            .as_ref()
            .context("internal error: no table opened")
    }

    async fn column_names(&mut self, schema: &str, table: &str) -> Result<Vec<String>> {
        Ok(self
            .query(&format!(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
                quote_literal(schema),
                quote_literal(table)
            ))
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }
}

/// `x` without trailing fractional zeros.
fn trim_fraction(x: &str) -> String {
    format!("CASE WHEN contains({x}, '.') THEN rtrim(rtrim({x}, '0'), '.') ELSE {x} END")
}

/// The normalized text of column `c` of kind `kind` in DuckDB (the other side is the source:
/// Postgres or MySQL, see their modules for the forms met).
fn value_sql(c: &str, kind: &Kind) -> String {
    let text = format!("CAST({c} AS VARCHAR)");
    match kind {
        Kind::Bool => format!("CASE WHEN {c} IS NULL THEN NULL WHEN {c} THEN 't' ELSE 'f' END"),
        Kind::Int | Kind::Uuid | Kind::Text | Kind::Json | Kind::Other => text,
        Kind::Float => format!(
            "CASE WHEN isnan({c}) THEN 'NaN' WHEN isinf({c}) AND {c} > 0 THEN 'Infinity' \
             WHEN isinf({c}) THEN '-Infinity' ELSE format('{{:.16e}}', CAST({c} AS DOUBLE)) END"
        ),
        Kind::Decimal | Kind::Time => trim_fraction(&text),
        Kind::Bytes => format!("lower(hex({c}))"),
        Kind::Date => format!("replace({text}, ' (BC)', ' BC')"),
        Kind::Timestamp => format!("replace({}, ' (BC)', ' BC')", trim_fraction(&text)),
        Kind::TimestampTz => trim_fraction(&format!("CAST(CAST({c} AS TIMESTAMP) AS VARCHAR)")),
        Kind::Interval => format!(
            "CAST(datepart('year', {c}) * 12 + datepart('month', {c}) AS VARCHAR) || ',' || \
             CAST(datepart('day', {c}) AS VARCHAR) || ',' || \
             CAST(datepart('hour', {c}) * 3600000000 + datepart('minute', {c}) * 60000000 + datepart('microseconds', {c}) AS VARCHAR)"
        ),
        Kind::Array(_) | Kind::Set => format!("CAST(to_json({c}) AS VARCHAR)"),
    }
}

fn key_literal(kinds: &[Kind], i: usize, value: &str) -> String {
    match kinds.get(i) {
        Some(Kind::Int | Kind::Decimal) if is_number(value) => value.to_string(),
        Some(Kind::Bytes) if value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("from_hex('{value}')")
        }
        _ => quote_literal(value),
    }
}

fn row_part(value: &str, kind: &Kind) -> String {
    if kind.free_text() {
        format!("coalesce(CAST(strlen({value}) AS VARCHAR) || ':' || {value}, '~')")
    } else {
        format!("coalesce({value}, '~')")
    }
}

fn first_u64(rows: &[Vec<Option<String>>]) -> u64 {
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fetched(row: Vec<Option<String>>, key_width: usize, values: bool) -> FetchedRow {
    let mut fields = row.into_iter();
    let key = fields
        .by_ref()
        .take(key_width)
        .map(Option::unwrap_or_default)
        .collect();
    let hash = fields.next().flatten().unwrap_or_default();
    FetchedRow {
        key,
        hash,
        values: if values { fields.collect() } else { vec![] },
    }
}

#[async_trait]
impl Side for DuckSide {
    async fn describe(&mut self, _schema: &str, _table: &str) -> Result<Option<Described>> {
        anyhow::bail!("a DuckDB database is never a source")
    }

    async fn open(&mut self, spec: &TableSpec) -> Result<std::result::Result<(), String>> {
        self.prepared = None;
        let own = self.column_names(&spec.schema, &spec.table).await?;
        if own.is_empty() {
            return Ok(Err(format!(
                "table {}.{} does not exist on the target",
                spec.schema, spec.table
            )));
        }
        let mut values = Vec::new();
        let mut parts = Vec::new();
        for column in &spec.columns {
            if !own.contains(&column.name) {
                return Ok(Err(format!(
                    "column {} is missing on the target ({}.{})",
                    column.name, spec.schema, spec.table
                )));
            }
            let value = value_sql(&quote_ident(&column.name), &column.kind);
            parts.push(row_part(&value, &column.kind));
            values.push(value);
        }
        let soft = spec.soft_delete && own.iter().any(|c| c == DELETED_COLUMN);
        self.prepared = Some(Prepared {
            from: format!("{}.{}", quote_ident(&spec.schema), quote_ident(&spec.table)),
            names: (spec.schema.clone(), spec.table.clone()),
            filter: if soft {
                format!("NOT coalesce({}, false)", quote_ident(DELETED_COLUMN))
            } else {
                "TRUE".into()
            },
            key_values: spec.key.iter().map(|&i| values[i].clone()).collect(),
            key_order: spec
                .key
                .iter()
                .map(|&i| quote_ident(&spec.columns[i].name))
                .collect(),
            key_kinds: spec
                .key
                .iter()
                .map(|&i| spec.columns[i].kind.clone())
                .collect(),
            row_md5: format!("md5({})", parts.join(" || '|' || ")),
            values,
        });
        Ok(Ok(()))
    }

    async fn summary(&mut self, range: &Range) -> Result<Summary> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT CAST(count(*) AS VARCHAR), CAST(coalesce(sum(CAST(('0x' || left({md5}, 15)) AS UBIGINT)), 0) AS VARCHAR) \
             FROM {from} WHERE {filter} AND {predicate}",
            md5 = p.row_md5,
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        Ok(Summary {
            rows: first_u64(&rows),
            sum: rows
                .first()
                .and_then(|r| r.get(1).cloned().flatten())
                .unwrap_or_default(),
        })
    }

    async fn boundaries(&mut self, range: &Range, every: u64) -> Result<Vec<Key>> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let names: Vec<String> = (0..p.key_values.len()).map(|i| format!("k{i}")).collect();
        let selected: Vec<String> = p
            .key_values
            .iter()
            .zip(&names)
            .map(|(v, n)| format!("{v} AS {n}"))
            .collect();
        let sql = format!(
            "SELECT {names} FROM (SELECT {selected}, row_number() OVER (ORDER BY {order}) AS rn \
             FROM {from} WHERE {filter} AND {predicate}) s WHERE rn % {every} = 0 ORDER BY rn",
            names = names.join(", "),
            selected = selected.join(", "),
            order = p.key_order.join(", "),
            from = p.from,
            filter = p.filter,
            every = every.max(1),
        );
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    async fn int_span(&mut self, range: &Range) -> Result<Option<(i128, i128)>> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT CAST(min({k}) AS VARCHAR), CAST(max({k}) AS VARCHAR) FROM {from} WHERE {filter} AND {predicate}",
            k = p.key_order[0],
            from = p.from,
            filter = p.filter,
        );
        let rows = self.query(&sql).await?;
        let parse = |i: usize| -> Option<i128> { rows.first()?.get(i)?.as_ref()?.parse().ok() };
        Ok(parse(0).zip(parse(1)))
    }

    async fn row_hashes(&mut self, range: &Range) -> Result<Vec<FetchedRow>> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        let predicate = range_predicate(&p.key_order, range, &|i, v| key_literal(&kinds, i, v));
        let sql = format!(
            "SELECT {keys}, {md5} FROM {from} WHERE {filter} AND {predicate}",
            keys = p.key_values.join(", "),
            md5 = p.row_md5,
            from = p.from,
            filter = p.filter,
        );
        let width = p.key_values.len();
        Ok(self
            .query(&sql)
            .await?
            .into_iter()
            .map(|r| fetched(r, width, false))
            .collect())
    }

    async fn rows(&mut self, keys: &[Key], values: bool) -> Result<Vec<FetchedRow>> {
        let mut out = Vec::new();
        for batch in keys.chunks(super::side::KEYS_PER_QUERY) {
            let p = self.prepared()?;
            let kinds = p.key_kinds.clone();
            let list = key_in_list(&p.key_order, batch, &|i, v| key_literal(&kinds, i, v));
            let mut selected = p.key_values.clone();
            selected.push(p.row_md5.clone());
            if values {
                selected.extend(p.values.iter().cloned());
            }
            let sql = format!(
                "SELECT {} FROM {} WHERE {} AND {list}",
                selected.join(", "),
                p.from,
                p.filter
            );
            let width = p.key_values.len();
            out.extend(
                self.query(&sql)
                    .await?
                    .into_iter()
                    .map(|r| fetched(r, width, values)),
            );
        }
        Ok(out)
    }

    async fn position(&mut self) -> Result<Option<Position>> {
        Ok(None)
    }

    async fn estimate_rows(&mut self) -> Result<u64> {
        let (schema, table) = self.prepared()?.names.clone();
        let rows = self
            .query(&format!(
                "SELECT CAST(estimated_size AS VARCHAR) FROM duckdb_tables() WHERE schema_name = {} AND table_name = {}",
                quote_literal(&schema),
                quote_literal(&table)
            ))
            .await?;
        Ok(first_u64(&rows))
    }

    /// With the agent stopped nothing else writes the target, and the rows the source lacks are
    /// deleted right away. Inside the agent the sink's commits are held back from the source's
    /// check to the delete's commit: a source insert of such a key, made after the check, is
    /// committed by the sink after the delete (an uncommitted change of the sink to such a row
    /// makes the delete fail, and it is tried again).
    async fn delete_extra(
        &mut self,
        spec: &TableSpec,
        _pipeline: &str,
        keys: &[Key],
        source: &mut dyn Side,
    ) -> Result<u64> {
        let shared = match &self.db {
            Database::File(_) => None,
            Database::Shared(shared) => Some(shared.clone()),
        };
        let Some(shared) = shared else {
            let absent = absent_from(source, keys).await?;
            let mut deleted = 0;
            for sql in self.delete_statements(spec, &absent)? {
                deleted += self.query(&sql).await?.len() as u64;
            }
            return Ok(deleted);
        };
        // The gate is a blocking lock: held on this thread, with the runtime's other tasks (the
        // sink among them) moved to another meanwhile.
        tokio::task::block_in_place(|| {
            let _gate = shared.hold_commits();
            let handle = tokio::runtime::Handle::current();
            let absent = handle.block_on(absent_from(source, keys))?;
            let statements = self.delete_statements(spec, &absent)?;
            shared
                .with_reader(|conn| -> Result<u64> {
                    let mut deleted = 0;
                    for sql in &statements {
                        deleted += read_rows(conn, sql)
                            .context("deleting extra rows in the target")?
                            .len() as u64;
                    }
                    Ok(deleted)
                })
                .context("the agent's DuckDB sink is reopening its file")?
        })
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl DuckSide {
    /// The statements that delete (or mark deleted) the rows of `absent`.
    fn delete_statements(&self, spec: &TableSpec, absent: &[Key]) -> Result<Vec<String>> {
        let p = self.prepared()?;
        let kinds = p.key_kinds.clone();
        Ok(absent
            .chunks(super::side::KEYS_PER_QUERY)
            .map(|batch| {
                let list = key_in_list(&p.key_order, batch, &|i, v| key_literal(&kinds, i, v));
                if spec.soft_delete {
                    format!(
                        "UPDATE {} SET {} = true WHERE {} AND {list} RETURNING '1'",
                        p.from,
                        quote_ident(DELETED_COLUMN),
                        p.filter
                    )
                } else {
                    format!("DELETE FROM {} WHERE {list} RETURNING '1'", p.from)
                }
            })
            .collect())
    }
}

/// The keys of `keys` the source does not have.
async fn absent_from(source: &mut dyn Side, keys: &[Key]) -> Result<Vec<Key>> {
    let present: std::collections::HashSet<Key> = source
        .rows(keys, false)
        .await?
        .into_iter()
        .map(|r| r.key)
        .collect();
    Ok(keys
        .iter()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect())
}
