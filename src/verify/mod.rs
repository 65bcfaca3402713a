//! `cdc-agent verify [TABLE...]`: proves that a warehouse target holds the same rows as its
//! source, or names every row that differs.
//!
//! ```text
//!  per table: describe (source) ─▶ open both sides (normalized SQL per column kind)
//!    ─▶ bisect key ranges by hash (bisect.rs) ─▶ candidate keys
//!    ─▶ re-check past the running agent's confirmed position (inflight.rs)
//!    ─▶ columns that differ ─▶ [--repair: delete extras, copy the table again, re-check]
//!  ─▶ report (report.rs) ─▶ results to the agent or the state store (record.rs)
//! ```
//!
//! Where it runs: in the `verify` command, except for a DuckDB target while the agent runs (the
//! agent holds the file): then the command asks the agent to run it (remote.rs), and the agent
//! reads the target through its sink's open database (service.rs). The agent also runs it on
//! its own every `agent.verify_interval` (service.rs).
//!
//! Exit codes: 0 every compared table equal, 1 rows differ (or a table could not be compared,
//! or a runtime failure), 2 bad usage or config.

mod bisect;
#[cfg(feature = "duckdb")]
mod duckdb;
mod filtered;
mod inflight;
mod kind;
mod mysql;
mod postgres;
pub mod record;
mod remote;
mod repair;
pub mod report;
pub mod service;
mod side;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use rand::Rng;
use serde_json::Value;

use crate::config::{Config, SinkType, SourceType};
use bisect::{bisect, top_ranges, Limits};
use inflight::{settle, AgentLink, Category};
use kind::{Family, Kind, Pair};
use report::{ColumnValues, DifferentRow, KeyJson, TableReport, TableStatus, VerifyReport};
use side::{Key, Side, TableSpec};

/// The arguments of `verify`; also the body of `POST /verify/run` (JSON).
#[derive(Clone, Debug, Default, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct VerifyArgs {
    /// Tables as schema.table (default: every table of the pipeline).
    pub tables: Vec<String>,
    /// Machine-readable output (shape in docs/verify.md).
    #[arg(long)]
    pub json: bool,
    /// Copy divergent rows again (through the watermark snapshot) and delete extra rows, then
    /// verify those rows again.
    #[arg(long)]
    pub repair: bool,
    /// Compare a random key range of about N rows per table instead of the whole table.
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u64>,
    /// Show the values of columns that differ (they may be personal data).
    #[arg(long)]
    pub show_values: bool,
}

/// What every table's comparison shares.
struct Context<'a> {
    config: &'a Config,
    args: &'a VerifyArgs,
    pair: Pair,
    /// The target schema (Postgres, DuckDB) or database (MySQL).
    target_schema: String,
    soft_delete: bool,
    agent: Option<AgentLink>,
    limits: Limits,
}

/// What a verify run came to.
enum Outcome {
    Report(VerifyReport),
    /// Bad usage (a table not in the pipeline, a sink without tables): exit 2.
    Usage(String),
    /// The target cannot be read now: exit 1.
    Unavailable(String),
}

/// Where the target is read, besides the sink's own settings.
#[derive(Clone, Default)]
pub struct TargetAccess {
    /// The running sink's DuckDB database (verify run inside the agent).
    #[cfg(feature = "duckdb")]
    pub duckdb: Option<cdc_sink_duckdb::SharedDatabase>,
}

/// `cdc-agent verify`.
pub async fn run(config: &Config, args: VerifyArgs) -> Result<ExitCode> {
    let link = AgentLink {
        addr: config.agent.admin_addr.to_string(),
        name: config.agent.name.0.clone(),
    };
    let running = link.running().await;
    if running && config.sink.kind == SinkType::Duckdb {
        // The agent holds the file: it runs the comparison in its own process.
        return remote::run_in_agent(&link, &args).await;
    }
    let outcome = execute(
        config,
        &args,
        running.then_some(link),
        TargetAccess::default(),
    )
    .await?;
    let report = match outcome {
        Outcome::Report(report) => report,
        Outcome::Usage(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
        Outcome::Unavailable(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Err(e) = record::save(config, &report, running).await {
        tracing::warn!(error = %format!("{e:#}"), "the verify result could not be recorded for status and metrics");
    }
    print_report(&report, args.json)
}

/// Prints the report (human, or JSON with `--json`); exit 0 when equal, else 1.
fn print_report(report: &VerifyReport, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report::render_human(report));
    }
    Ok(if report.equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Compares the tables `args` names (all of the pipeline's by default). `agent`: the running
/// agent, whose confirmed position rows found different are re-checked against; `None` compares
/// at rest.
async fn execute(
    config: &Config,
    args: &VerifyArgs,
    agent: Option<AgentLink>,
    access: TargetAccess,
) -> Result<Outcome> {
    let started = Instant::now();
    let (target_family, target_schema) = match config.sink.kind {
        SinkType::Postgres => (
            Family::Postgres,
            crate::wiring::postgres_sink_config(config).schema,
        ),
        SinkType::Mysql => (
            Family::Mysql,
            crate::wiring::mysql_sink_config(config).database,
        ),
        #[cfg(feature = "duckdb")]
        SinkType::Duckdb => (
            Family::Duckdb,
            crate::wiring::duckdb_sink_config(config).schema,
        ),
        other => {
            return Ok(Outcome::Usage(format!(
                "verify compares warehouse targets (sink.type postgres, mysql or duckdb); this pipeline's sink is {}",
                crate::runtime::sink_type_name(other)
            )));
        }
    };
    let source_family = match config.source.kind {
        SourceType::Postgres => Family::Postgres,
        SourceType::Mysql => Family::Mysql,
    };
    let tables = match resolve_tables(config, &args.tables).await? {
        Ok(tables) => tables,
        Err(message) => return Ok(Outcome::Usage(message)),
    };
    let running = agent.is_some();
    let mut notes = Vec::new();
    if !running {
        notes.push("agent not running: compared at rest (changes committed since the agent stopped show as differences)".to_string());
    }
    let mut source = connect_source(config).await?;
    let mut target = match connect_target(config, running, args.repair, access).await? {
        Ok(target) => target,
        Err(message) => return Ok(Outcome::Unavailable(message)),
    };
    let ctx = Context {
        config,
        args,
        pair: Pair {
            source: source_family,
            target: target_family,
            record_hash: source.record_hash() && target.record_hash(),
        },
        target_schema,
        soft_delete: config.sink.delete_mode == cdc_core::warehouse::DeleteMode::Soft,
        agent,
        limits: Limits::default(),
    };
    let mut reports = Vec::new();
    for table in &tables {
        let report = match compare_table(&ctx, source.as_mut(), target.as_mut(), table).await {
            Ok(report) => report,
            Err(e) => TableReport::failed(table, &target_name(&ctx, table), format!("{e:#}")),
        };
        reports.push(report);
    }
    Ok(Outcome::Report(VerifyReport {
        pipeline: config.agent.name.0.clone(),
        source_type: crate::runtime::source_type_name(config.source.kind).to_string(),
        sink_type: crate::runtime::sink_type_name(config.sink.kind).to_string(),
        agent: if running { "running" } else { "stopped" }.to_string(),
        equal: reports.iter().all(|t| {
            t.status == TableStatus::Equal
                || t.repair
                    .as_ref()
                    .is_some_and(|r| r.verified && r.still_divergent == 0)
        }),
        divergent_rows: reports.iter().map(TableReport::divergent).sum(),
        seconds: started.elapsed().as_secs_f64(),
        bytes_read: reports.iter().map(|t| t.bytes_read).sum(),
        notes,
        tables: reports,
    }))
}

/// The tables to compare: the named ones (checked against the pipeline's), else all of them.
async fn resolve_tables(
    config: &Config,
    named: &[String],
) -> Result<std::result::Result<Vec<String>, String>> {
    if named.is_empty() {
        let tables = match config.source.kind {
            SourceType::Postgres => {
                cdc_postgres::setup::configured_tables(&crate::wiring::postgres_config(config))
                    .await
            }
            SourceType::Mysql => {
                cdc_mysql::setup::configured_tables(&crate::wiring::mysql_config(config)).await
            }
        }
        .map_err(|e| anyhow::anyhow!("listing the pipeline's tables: {e}"))?;
        if tables.is_empty() {
            return Ok(Err("the pipeline has no tables to verify".into()));
        }
        return Ok(Ok(tables));
    }
    let mysql = crate::wiring::mysql_config(config);
    let mysql_patterns = mysql.patterns();
    let patterns: Vec<String> = config.source.tables.iter().map(|t| t.0.clone()).collect();
    for table in named {
        let Some((schema, name)) = table.split_once('.') else {
            return Ok(Err(format!(
                "table `{table}` must be written {}",
                match config.source.kind {
                    SourceType::Postgres => "schema.table, e.g. public.orders",
                    SourceType::Mysql => "database.table, e.g. shop.orders",
                }
            )));
        };
        let included = match config.source.kind {
            SourceType::Postgres => cdc_core::schema::table_included(&patterns, schema, name),
            SourceType::Mysql => mysql.includes(&mysql_patterns, schema, name),
        };
        if !included {
            return Ok(Err(format!(
                "table `{table}` is not one of the pipeline's tables (see source.tables in the config)"
            )));
        }
    }
    Ok(Ok(named.to_vec()))
}

async fn connect_source(config: &Config) -> Result<Box<dyn Side>> {
    Ok(match config.source.kind {
        SourceType::Postgres => Box::new(
            postgres::PgSide::connect(&crate::wiring::postgres_config(config).url, true).await?,
        ),
        SourceType::Mysql => {
            Box::new(mysql::MySide::connect(&crate::wiring::mysql_config(config).url, true).await?)
        }
    })
}

/// The target side; `Err` text when it cannot be read now.
async fn connect_target(
    config: &Config,
    agent_running: bool,
    repair: bool,
    access: TargetAccess,
) -> Result<std::result::Result<Box<dyn Side>, String>> {
    Ok(Ok(match config.sink.kind {
        SinkType::Postgres => Box::new(
            postgres::PgSide::connect(&crate::wiring::postgres_sink_config(config).url, false)
                .await?,
        ),
        SinkType::Mysql => Box::new(
            mysql::MySide::connect(&crate::wiring::mysql_sink_config(config).url, false).await?,
        ),
        #[cfg(feature = "duckdb")]
        SinkType::Duckdb => match access.duckdb {
            Some(shared) => Box::new(duckdb::DuckSide::shared(shared)),
            // The command sends the request to a running agent; this is a race with its start.
            None if agent_running => {
                return Ok(Err(
                    "the running agent holds the DuckDB file (DuckDB lets one process open it): verify again, it then runs inside the agent".into(),
                ));
            }
            None => Box::new(duckdb::DuckSide::open(
                &crate::wiring::duckdb_sink_config(config).path,
                repair,
            )?),
        },
        _ => {
            let _ = (agent_running, repair, access);
            return Ok(Err("this sink has no tables to compare".into()));
        }
    }))
}

fn target_name(ctx: &Context<'_>, source_table: &str) -> String {
    let table = source_table
        .split_once('.')
        .map_or(source_table, |(_, t)| t);
    format!("{}.{table}", ctx.target_schema)
}

fn key_json(spec: &TableSpec, key: &Key) -> KeyJson {
    spec.key
        .iter()
        .zip(key)
        .map(|(&i, v)| (spec.columns[i].name.clone(), Value::String(v.clone())))
        .collect()
}

/// Compares one table.
async fn compare_table(
    ctx: &Context<'_>,
    source: &mut dyn Side,
    target: &mut dyn Side,
    table: &str,
) -> Result<TableReport> {
    let started = Instant::now();
    let bytes_before = source.bytes_read() + target.bytes_read();
    let target_table = target_name(ctx, table);
    let (schema, name) = table.split_once('.').unwrap_or(("", table));
    let Some(mut described) = source.describe(schema, name).await? else {
        return Ok(TableReport::failed(
            table,
            &target_table,
            "the table does not exist on the source".into(),
        ));
    };
    let mut notes = Vec::new();
    match filtered::compared_columns(ctx.config, schema, name, &mut described) {
        Ok(note) => notes.extend(note),
        Err(problem) => return Ok(TableReport::failed(table, &target_table, problem)),
    }
    let keyed = !described.key.is_empty()
        && described
            .key
            .iter()
            .all(|&i| described.columns[i].kind.orderable_key());
    if !keyed {
        notes.push(if described.key.is_empty() {
            "no primary key: compared by row count and an order-free hash of all rows; row-level detail needs a key".to_string()
        } else {
            "the primary key has a type whose order differs between databases: compared as a whole; row-level detail needs a key of integers, numerics, text, uuid, bytes or dates".to_string()
        });
    }
    let spec = TableSpec {
        source_name: table.to_string(),
        schema: schema.to_string(),
        table: name.to_string(),
        columns: described.columns.clone(),
        key: if keyed { described.key.clone() } else { vec![] },
        pair: ctx.pair,
        soft_delete: false,
    };
    let target_spec = TableSpec {
        schema: ctx.target_schema.clone(),
        soft_delete: ctx.soft_delete,
        ..spec.clone()
    };
    if let Err(problem) = source.open(&spec).await? {
        return Ok(TableReport::failed(table, &target_table, problem));
    }
    if let Err(problem) = target.open(&target_spec).await? {
        return Ok(TableReport::failed(table, &target_table, problem));
    }
    let mut report = TableReport::failed(table, &target_table, String::new());
    report.error = None;
    report.notes = notes;
    if !keyed {
        let whole = side::Range::default();
        let (s, t) = tokio::try_join!(source.summary(&whole), target.summary(&whole))?;
        report.rows_compared = s.rows;
        report.target_rows_compared = t.rows;
        report.status = if s == t {
            TableStatus::Equal
        } else {
            report.missing = s.rows.saturating_sub(t.rows);
            report.extra = t.rows.saturating_sub(s.rows);
            report.different = u64::from(s.rows == t.rows);
            report.notes.push(format!(
                "source {} rows, target {} rows, hashes differ",
                s.rows, t.rows
            ));
            TableStatus::Different
        };
        report.seconds = started.elapsed().as_secs_f64();
        report.bytes_read = source.bytes_read() + target.bytes_read() - bytes_before;
        return Ok(report);
    }
    let int_key = spec.key.len() == 1 && spec.columns[spec.key[0]].kind == Kind::Int;
    let estimate = source.estimate_rows().await?;
    let mut found = bisect::Findings::default();
    let ranges = match ctx.args.max_rows.filter(|&m| m < estimate) {
        Some(max) => {
            let cut = top_ranges(source, target, int_key, estimate, max.max(1)).await?;
            let pick = rand::thread_rng().gen_range(0..cut.len());
            report.sampled = true;
            vec![cut[pick].clone()]
        }
        None => {
            let first = if int_key {
                bisect::first_pass(source, target, estimate, ctx.limits, &mut found).await?
            } else {
                None
            };
            match first {
                Some(unequal) => unequal,
                None => {
                    top_ranges(source, target, int_key, estimate, ctx.limits.top_range_rows).await?
                }
            }
        }
    };
    let found = bisect(source, target, int_key, ranges, ctx.limits, found).await?;
    report.rows_compared = found.source_rows;
    report.target_rows_compared = found.target_rows;
    // Listed candidates, to re-check; the unlisted rest is only counted.
    let mut candidates: Vec<(Key, Category)> = Vec::new();
    candidates.extend(
        found
            .missing
            .keys
            .iter()
            .map(|k| (k.clone(), Category::Missing)),
    );
    candidates.extend(
        found
            .extra
            .keys
            .iter()
            .map(|k| (k.clone(), Category::Extra)),
    );
    candidates.extend(
        found
            .different
            .keys
            .iter()
            .map(|k| (k.clone(), Category::Different)),
    );
    let unlisted = found.divergent() - candidates.len() as u64;
    let mut still_changing = Vec::new();
    if let (Some(agent), false) = (&ctx.agent, candidates.is_empty()) {
        let keys = candidates.iter().map(|(k, _)| k.clone()).collect();
        let settled = settle(source, target, agent, keys).await?;
        candidates = settled.divergent;
        still_changing = settled.still_changing;
        report.notes.extend(settled.note);
    }
    if unlisted > 0 {
        report.notes.push(format!(
            "{unlisted} more divergent rows were counted but not listed (or re-checked)"
        ));
    }
    let keys_of = |c: Category| -> Vec<Key> {
        candidates
            .iter()
            .filter(|(_, cat)| *cat == c)
            .map(|(k, _)| k.clone())
            .collect()
    };
    let (missing, extra, different) = (
        keys_of(Category::Missing),
        keys_of(Category::Extra),
        keys_of(Category::Different),
    );
    report.missing = missing.len() as u64 + found.missing.count - found.missing.keys.len() as u64;
    report.extra = extra.len() as u64 + found.extra.count - found.extra.keys.len() as u64;
    report.different =
        different.len() as u64 + found.different.count - found.different.keys.len() as u64;
    report.missing_keys = missing.iter().map(|k| key_json(&spec, k)).collect();
    report.extra_keys = extra.iter().map(|k| key_json(&spec, k)).collect();
    report.still_changing_keys = still_changing.iter().map(|k| key_json(&spec, k)).collect();
    report.different_rows =
        differing_columns(source, target, &spec, &different, ctx.args.show_values).await?;
    report.status = if report.divergent() == 0 {
        TableStatus::Equal
    } else {
        TableStatus::Different
    };
    if ctx.args.repair && report.divergent() > 0 {
        let outcome = repair::repair(
            ctx.config,
            ctx.agent.as_ref(),
            source,
            target,
            &target_spec,
            &extra,
            missing.iter().chain(&different).cloned().collect(),
        )
        .await?;
        report.notes.extend(outcome.notes.iter().cloned());
        report.repair = Some(outcome.report);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes_read = source.bytes_read() + target.bytes_read() - bytes_before;
    Ok(report)
}

/// For each different key, the columns whose normalized values differ (and with `show` the
/// values).
async fn differing_columns(
    source: &mut dyn Side,
    target: &mut dyn Side,
    spec: &TableSpec,
    keys: &[Key],
    show: bool,
) -> Result<Vec<DifferentRow>> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let (src, tgt) = tokio::try_join!(source.rows(keys, true), target.rows(keys, true))?;
    let target_rows: HashMap<Key, Vec<Option<String>>> =
        tgt.into_iter().map(|r| (r.key, r.values)).collect();
    let mut out = Vec::new();
    for row in src {
        let Some(theirs) = target_rows.get(&row.key) else {
            continue;
        };
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for (i, column) in spec.columns.iter().enumerate() {
            let (a, b) = (
                row.values.get(i).cloned().flatten(),
                theirs.get(i).cloned().flatten(),
            );
            if a != b {
                columns.push(column.name.clone());
                values.push(ColumnValues {
                    column: column.name.clone(),
                    source: a,
                    target: b,
                });
            }
        }
        out.push(DifferentRow {
            key: key_json(spec, &row.key),
            columns,
            values: show.then_some(values),
        });
    }
    Ok(out)
}
