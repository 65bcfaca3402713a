//! `cdc-agent snapshot [TABLE...]`: asks for a new consistent copy of tables while the pipeline
//! keeps streaming, then follows it with a progress bar (a line every few seconds when the output
//! is not a terminal).
//!
//! A running agent takes the request through its admin endpoint (`POST /snapshot`); a stopped
//! one finds it in the state store when `run` starts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::admin;
use crate::config::{Config, SnapshotMethodConfig, SourceType};
use crate::store::SourceState;

const POLL: Duration = Duration::from_millis(500);
/// Without a terminal: a progress line this often.
const LINE_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

pub async fn snapshot(config: &Config, tables: Vec<String>, no_wait: bool) -> Result<ExitCode> {
    if config.source.snapshot_method == SnapshotMethodConfig::Transaction {
        eprintln!("error: source.snapshot_method = \"transaction\" copies only when the pipeline first starts; a copy while streaming needs watermarks: set it to \"auto\" or \"watermark\"");
        return Ok(ExitCode::from(2));
    }
    let tables = if tables.is_empty() {
        match config.source.kind {
            SourceType::Postgres => {
                cdc_postgres::setup::configured_tables(&crate::wiring::postgres_config(config))
                    .await
            }
            SourceType::Mysql => {
                cdc_mysql::setup::configured_tables(&crate::wiring::mysql_config(config)).await
            }
        }
        .context("listing the pipeline's tables")?
    } else {
        let mysql = crate::wiring::mysql_config(config);
        let mysql_patterns = mysql.patterns();
        let patterns: Vec<String> = config.source.tables.iter().map(|t| t.0.clone()).collect();
        for table in &tables {
            let Some((schema, name)) = table.split_once('.') else {
                eprintln!(
                    "error: table `{table}` must be written {}, e.g. {}",
                    match config.source.kind {
                        SourceType::Postgres => "schema.table",
                        SourceType::Mysql => "database.table",
                    },
                    match config.source.kind {
                        SourceType::Postgres => "public.orders",
                        SourceType::Mysql => "shop.orders",
                    }
                );
                return Ok(ExitCode::from(2));
            };
            let included = match config.source.kind {
                SourceType::Postgres => cdc_core::schema::table_included(&patterns, schema, name),
                SourceType::Mysql => mysql.includes(&mysql_patterns, schema, name),
            };
            if !included {
                eprintln!("error: table `{table}` is not one of the pipeline's tables (see source.tables in the config)");
                return Ok(ExitCode::from(2));
            }
        }
        tables
    };
    if tables.is_empty() {
        eprintln!("error: the pipeline has no tables to copy");
        return Ok(ExitCode::from(2));
    }

    let addr = &config.agent.admin_addr;
    if admin::fetch_status(addr, &config.agent.name)
        .await
        .is_none()
    {
        return request_offline(config, &tables);
    }
    let generations = match admin::call(addr, "POST", "/snapshot", &tables.join("\n")).await {
        Some((200, body)) => parse_generations(&body)?,
        Some((code, body)) => {
            anyhow::bail!("the agent refused the snapshot ({code}): {}", body.trim())
        }
        None => anyhow::bail!("the agent at {} stopped answering", &**addr),
    };
    println!(
        "snapshot of {} requested: {}; the pipeline keeps streaming meanwhile",
        if tables.len() == 1 {
            "1 table".to_string()
        } else {
            format!("{} tables", tables.len())
        },
        tables.join(", ")
    );
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(config, &generations).await
}

/// No agent runs: the request waits in the state store for the next `run`.
fn request_offline(config: &Config, tables: &[String]) -> Result<ExitCode> {
    let store = crate::commands::open_store_of_stopped_agent(config)?;
    let state = SourceState::new(Arc::new(store), &config.agent.name);
    cdc_core::chunked::request(&state, tables)?;
    println!(
        "snapshot of {} requested; no agent is running: the copy starts with the next `cdc-agent run`",
        tables.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_generations(body: &str) -> Result<BTreeMap<String, u64>> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(body).context("the agent's answer to the snapshot request")?;
    Ok(list
        .iter()
        .filter_map(|v| Some((v["table"].as_str()?.to_string(), v["generation"].as_u64()?)))
        .collect())
}

/// One table's copy as last seen.
struct Progress {
    rows: u64,
    done: bool,
    estimate: Option<u64>,
}

/// Polls the agent until every requested copy is sent, drawing the progress.
async fn follow(config: &Config, generations: &BTreeMap<String, u64>) -> Result<ExitCode> {
    let addr = &config.agent.admin_addr;
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now();
    let mut drawn = 0usize;
    loop {
        let Some((200, body)) = admin::call(addr, "GET", "/snapshot", "").await else {
            eprintln!(
                "error: the agent stopped; the copy resumes at its next chunk when it runs again"
            );
            return Ok(ExitCode::from(1));
        };
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        let estimates: BTreeMap<String, u64> = admin::fetch_status(addr, &config.agent.name)
            .await
            .map(|r| {
                r.tables
                    .into_iter()
                    .filter_map(|t| Some((t.table, t.rows_estimated?)))
                    .collect()
            })
            .unwrap_or_default();
        let progress: Vec<(String, Progress)> = generations
            .iter()
            .map(|(table, &generation)| {
                let seen = list.iter().find(|v| {
                    v["table"].as_str() == Some(table.as_str())
                        && v["generation"].as_u64().is_some_and(|g| g >= generation)
                });
                let progress = Progress {
                    rows: seen.and_then(|v| v["rows"].as_u64()).unwrap_or(0),
                    done: seen.and_then(|v| v["done"].as_bool()).unwrap_or(false),
                    estimate: estimates.get(table).copied(),
                };
                (table.clone(), progress)
            })
            .collect();
        let finished = progress.iter().all(|(_, p)| p.done);
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        if terminal {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for (table, p) in &progress {
                let _ = writeln!(out, "\x1b[2K{}", bar_line(table, p, elapsed));
            }
            let _ = out.flush();
            drawn = progress.len();
        } else if finished || last_line.elapsed() >= LINE_EVERY {
            for (table, p) in &progress {
                println!("{}", bar_line(table, p, elapsed));
            }
            last_line = Instant::now();
        }
        if finished {
            let rows: u64 = progress.iter().map(|(_, p)| p.rows).sum();
            println!("snapshot done: {rows} rows in {elapsed:.1} s");
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn bar_line(table: &str, p: &Progress, elapsed: f64) -> String {
    let fraction = if p.done {
        1.0
    } else {
        p.estimate
            .filter(|&e| e > 0)
            .map_or(0.0, |e| (p.rows as f64 / e as f64).min(0.99))
    };
    let filled = (fraction * BAR_WIDTH as f64).round() as usize;
    format!(
        "{table:<32} [{}{}] {:>3.0}%  {} / {} rows  {:.0} rows/s{}",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        fraction * 100.0,
        p.rows,
        p.estimate.map_or("?".to_string(), |e| e.to_string()),
        p.rows as f64 / elapsed,
        if p.done { "  done" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_never_shows_full_before_the_copy_is_done() {
        let p = Progress {
            rows: 150,
            done: false,
            estimate: Some(100),
        };
        assert!(bar_line("public.t", &p, 1.0).contains(" 99%"));
        let p = Progress {
            rows: 150,
            done: true,
            estimate: Some(100),
        };
        let line = bar_line("public.t", &p, 1.0);
        assert!(line.contains("100%") && line.ends_with("done"), "{line}");
        let p = Progress {
            rows: 5,
            done: false,
            estimate: None,
        };
        assert!(bar_line("public.t", &p, 1.0).contains("  0%"));
    }
}
